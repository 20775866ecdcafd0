from client.netskyctl import main

raise SystemExit(main())
