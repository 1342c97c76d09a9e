from notify.bootstrap import main

main()
