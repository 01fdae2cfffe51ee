"""`python -m hotfolder` is the same as the `hotfolder` command."""

from hotfolder.cli import main

raise SystemExit(main())
