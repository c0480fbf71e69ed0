from flexaudit.cli import main

main()
