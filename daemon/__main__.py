"""`python -m daemon` is the same as the `hotfolder` command."""

from daemon.cli import main

raise SystemExit(main())
