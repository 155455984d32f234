"""`python -m mailfleet_cli` is the `mailfleet` command."""

from mailfleet_cli.entry import main

raise SystemExit(main())
