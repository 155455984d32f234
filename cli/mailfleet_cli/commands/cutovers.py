"""`mailfleet cutovers`: move accounts to a new destination on every proxy (or director)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from mailfleet_cli.commands import _accounts
from mailfleet_cli.errors import CliError
from mailfleet_cli.parsing import parse_tags
from mailfleet_cli.state import STATE, Output, Wait, WatchFor

app = typer.Typer(help="Move accounts between destinations without downtime.",
                  no_args_is_help=True)
CutoverId = Annotated[str, typer.Argument(help="Cutover id.")]


class Strategy(StrEnum):
    proxy = "proxy"
    director = "director"


def selection(ids: list[str] | None, tags: list[str] | None, what: str
              ) -> dict[str, Any] | None:
    if ids and tags:
        raise CliError(f"{what}: give ids or tags, not both")
    if ids:
        return {"hosts": list(ids)}
    if tags:
        return {"tags": parse_tags(tags, f"--{what}-tag")}
    return None


@app.command("start", epilog="Example: mailfleet cutovers start alice@example.org "
                             "bob@example.org --destination stalwart --proxy-tag site=demo "
                             "--proxy-tag role=edge --wait")
def start(
    destination: Annotated[str, typer.Option(
        "--destination", "-d", help="Proxy destination (or backend IP with --strategy "
                                    "director).")],
    accounts: Annotated[list[str] | None, typer.Argument(help="Accounts to move.",
                                                         show_default=False)] = None,
    accounts_file: Annotated[Path | None, typer.Option(
        "--accounts-file", help="One account a line (# comments).", show_default=False)] = None,
    proxy: Annotated[list[str] | None, typer.Option(
        "--proxy", help="Proxy (or director) host id; repeat.", show_default=False)] = None,
    proxy_tag: Annotated[list[str] | None, typer.Option(
        "--proxy-tag", help="Proxies by tag key=value; repeat.", show_default=False)] = None,
    backend: Annotated[list[str] | None, typer.Option(
        "--backend", help="Dovecot backend to kick remaining sessions on; repeat.",
        show_default=False)] = None,
    backend_tag: Annotated[list[str] | None, typer.Option(
        "--backend-tag", help="Backends by tag key=value.", show_default=False)] = None,
    delay: Annotated[int | None, typer.Option(
        "--delay", help="Seconds new logins are held back (API default 10).", min=0,
        show_default=False)] = None,
    strategy: Annotated[Strategy | None, typer.Option("--strategy", show_default=False,
                                                      help="proxy (default) or director.")
                        ] = None,
    drain: Annotated[str | None, typer.Option(
        "--drain", help="Director strategy: backend IP to flush.", show_default=False)] = None,
    max_concurrency: _accounts.MaxConcurrency = None,
    tolerated_failure_percentage: Annotated[float | None, typer.Option(
        "--tolerated-failure-percentage", min=0, max=100, show_default=False,
        help="Stop starting accounts once more than this share fails.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan, contact "
                                          "nobody.")] = False,
    wait: Wait = False,
    watch_for: WatchFor = None,
    idempotency_key: _accounts.IdempotencyKey = None,
    output: Output = None,
) -> None:
    """Start a cutover; with --wait, follow each account's steps live to the end."""
    body: dict[str, Any] = {"accounts": _accounts.read_accounts(accounts, accounts_file),
                            "destination": destination}
    proxies = selection(proxy, proxy_tag, "proxy")
    if proxies is None:
        raise CliError("proxies: give --proxy ID or --proxy-tag key=value")
    body["proxies"] = proxies
    backends = selection(backend, backend_tag, "backend")
    if backends:
        body["backends"] = backends
    if strategy:
        body["strategy"] = strategy.value
    if drain:
        body["drain"] = drain
    _accounts.run_options(body, delay, max_concurrency, tolerated_failure_percentage, dry_run)
    _accounts.start(STATE.client(), "cutover", body, idempotency_key, wait, watch_for,
                    STATE.fmt(output))


_accounts.add_commands(app, "cutover", helps={
    "show": "A cutover: each account's status, remembered mapping and last step.",
    "watch": "Follow a cutover live: accounts by status and the step each one is on.",
    "rollback": "Put every DONE account back as it was remembered.",
    "list": "Recent cutovers, newest first.",
}, epilogs={
    "show": "Example: mailfleet cutovers show 01JD5... -o json",
    "watch": "Example: mailfleet cutovers watch 01JD5...  (Ctrl-C stops watching, not the "
             "cutover)",
    "rollback": "Example: mailfleet cutovers rollback 01JD5... --wait",
    "list": "Example: mailfleet cutovers list --status RUNNING",
})
