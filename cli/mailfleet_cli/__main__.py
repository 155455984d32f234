"""`python -m mailfleet_cli` is the `mailfleet` command."""

from mailfleet_cli.main import main

raise SystemExit(main())
