from matching.bootstrap import main

main()
