from contactbase.cli import main

main()
