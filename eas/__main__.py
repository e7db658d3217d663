"""`python -m eas`: the command line (eas.study.cli)."""

from eas.study.cli import main

raise SystemExit(main())
