from weightspace.cli import main

main()
