from netskyd.app.cli import main

main()
