from oorkiller.cli import main

raise SystemExit(main())
