from netskyd.cli import main

main()
