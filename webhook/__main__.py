"""``python -m webhook`` is the same as the ``agent-guard`` console script."""

from webhook import cli

raise SystemExit(cli.main())
