from fedscore.cli import main

raise SystemExit(main())
