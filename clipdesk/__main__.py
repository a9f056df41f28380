from clipdesk.cli.main import main

raise SystemExit(main())
