"""``python -m fastconv``: the command line (fastconv.cli)."""

from .cli import main

raise SystemExit(main())
