from hashtool.cli import main

main()
