from clipdesk.cli import main

raise SystemExit(main())
