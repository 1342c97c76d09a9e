from intake.bootstrap import main

main()
