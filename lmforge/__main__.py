from lmforge.core.cli import main

raise SystemExit(main())
