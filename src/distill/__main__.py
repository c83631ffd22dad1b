"""``python -m distill``: the same as the ``distill`` command."""

from distill.cli import main

raise SystemExit(main())
