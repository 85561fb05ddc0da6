from benchcelery.cli import main

main()
