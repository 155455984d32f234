"""What goes to stdout (data: a table, or the API's answer as JSON or YAML) and to stderr
(progress, notes, errors), so scripts can read stdout as it is."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


class Fmt(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


# Piped tables are not cut at 80 columns (COLUMNS still wins if set).
out = Console(highlight=False, soft_wrap=False,
              width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200)
err = Console(stderr=True, highlight=False)

STATUS_STYLE = {
    "SUCCEEDED": "green", "DONE": "green", "ok": "green", "up": "green",
    "PARTIAL": "yellow", "RUNNING": "cyan", "IN_PROGRESS": "cyan", "PENDING": "dim",
    "AWAITING_APPROVAL": "magenta", "SKIPPED": "dim", "ROLLED_BACK": "yellow",
    "FAILED": "red", "TIMED_OUT": "red", "CANCELLED": "yellow", "down": "red",
}
# Failures first in every results table.
RESULT_ORDER = {"FAILED": 0, "TIMED_OUT": 1, "ROLLED_BACK": 2, "SKIPPED": 3, "CANCELLED": 3,
                "RUNNING": 4, "IN_PROGRESS": 4, "PENDING": 5, "SUCCEEDED": 6, "DONE": 6}


def default_format() -> Fmt:
    raw = (os.environ.get("MAILFLEET_OUTPUT") or "table").lower()
    return Fmt(raw) if raw in Fmt._value2member_map_ else Fmt.TABLE


def emit(data: Any, fmt: Fmt, render: Callable[[Any], None] | None = None) -> None:
    """JSON and YAML are the API's answer exactly; a table is drawn by `render`."""
    if fmt is Fmt.JSON:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    elif fmt is Fmt.YAML:
        import yaml  # only here: every TAB of shell completion starts this program

        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True,
                                        default_flow_style=False))
    elif render is not None:
        render(data)
    else:
        out.print(details(data if isinstance(data, dict) else {"answer": data}))
    sys.stdout.flush()


def note(message: str) -> None:
    """A human note on stderr (never mixed into the data on stdout)."""
    err.print(message, highlight=False, soft_wrap=True)


def styled(status: Any) -> Text:
    text = "" if status is None else str(status)
    return Text(text, style=STATUS_STYLE.get(text, ""))


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None
          ) -> Table:
    grid = Table(title=title, title_justify="left", header_style="bold", show_edge=False,
                 pad_edge=False, box=None)
    for n, column in enumerate(columns):
        # The first column is the id an operator copies: never broken across lines.
        grid.add_column(column, overflow="fold", no_wrap=n == 0)
    for row in rows:
        grid.add_row(*[cell if isinstance(cell, Text) else Text(cell_text(cell))
                       for cell in row])
    return grid


def details(data: dict[str, Any], keys: Sequence[str] | None = None) -> Table:
    """Two columns, field and value, for one object."""
    grid = Table(show_header=False, box=None, pad_edge=False)
    grid.add_column("field", style="bold")
    grid.add_column("value", overflow="fold")
    for key in keys or list(data):
        if key in data:
            value = data[key]
            grid.add_row(key, styled(value) if key == "status" else Text(cell_text(value)))
    return grid


def cell_text(value: Any, limit: int = 200) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict) and all(isinstance(v, str | int | float) for v in value.values()):
        text = ", ".join(f"{k}={v}" for k, v in value.items())
    elif isinstance(value, list | dict):
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def when(iso: str | None) -> str:
    """2026-11-27T14:31:05.123456Z -> 2026-11-27 14:31:05"""
    if not iso:
        return ""
    return iso.replace("T", " ")[:19]
