from tarbox.cli.main import main

main()
