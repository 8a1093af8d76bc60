from colospec.cli import main

raise SystemExit(main())
