"""`python -m eas`: the command line (eas.cli)."""

from .cli import main

raise SystemExit(main())
