"""The `mailfleet` script's entry point: nothing heavy at import, so a Ctrl-C while the
command is still loading ends it with one line too, never a traceback."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from mailfleet_cli.main import main as run
    except KeyboardInterrupt:
        print("mailfleet: interrupted", file=sys.stderr)
        return 130
    return run()
