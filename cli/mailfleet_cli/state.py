"""What the root options decided, shared by every command of one run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

import typer

from mailfleet_cli.config import Connection, resolve
from mailfleet_cli.output import Fmt, default_format

if TYPE_CHECKING:
    from mailfleet_cli.client import Client


@dataclass
class State:
    url: str | None = None
    token: str | None = None
    profile: str | None = None
    ca_bundle: str | None = None
    output: Fmt | None = None
    quiet: bool = False
    timeout: float = 35.0
    _client: Client | None = field(default=None, repr=False)
    _connection: Connection | None = field(default=None, repr=False)

    def connection(self) -> Connection:
        if self._connection is None:
            self._connection = resolve(self.url, self.token, self.profile, self.ca_bundle)
        return self._connection

    def client(self) -> Client:
        if self._client is None:
            # requests is imported on the first call, not for --help or completion.
            from mailfleet_cli.client import Client

            self._client = Client(self.connection(), read_timeout=self.timeout)
        return self._client

    def fmt(self, local: Fmt | None) -> Fmt:
        return local or self.output or default_format()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


STATE = State()

# `-o` works on every command (and before it, on `mailfleet` itself).
Output = Annotated[
    Fmt | None,
    typer.Option("--output", "-o", help="table, json (the API's answer exactly) or yaml.",
                 case_sensitive=False, show_default=False),
]
Limit = Annotated[int | None, typer.Option("--limit", help="Page size.", min=1, max=1000)]
NextToken = Annotated[str | None, typer.Option("--next-token",
                                               help="Page on from a previous answer.")]
Wait = Annotated[bool, typer.Option("--wait", "-w",
                                    help="Follow it live to the end; exit code by outcome.")]
WatchFor = Annotated[float | None, typer.Option(
    "--for", help="Stop watching after this many seconds (default: until it ends).",
    min=1, show_default=False)]


def more(answer: dict[str, object]) -> None:
    """Say on stderr how to read the next page (stdout keeps only the data)."""
    from mailfleet_cli.output import note

    token = answer.get("next_token")
    if token:
        note(f"[dim]more: add --next-token {token}[/]")
