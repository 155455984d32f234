"""`mailfleet migrations`: move accounts with their mail between Dovecot backends."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mailfleet_cli.commands import _accounts
from mailfleet_cli.commands.cutovers import selection
from mailfleet_cli.errors import CliError
from mailfleet_cli.state import STATE, Output, Wait, WatchFor

app = typer.Typer(help="Move accounts and their mail between Dovecot backends (dsync).",
                  no_args_is_help=True)
MigrationId = Annotated[str, typer.Argument(help="Migration id.")]


@app.command("start", epilog="Example: mailfleet migrations start alice bob --source dc-1 "
                             "--destination dc-2 --director-tag role=director "
                             "--backend-address 10.0.0.2 --wait")
def start(
    source: Annotated[str, typer.Option("--source", help="Source Dovecot host id.")],
    destination: Annotated[str, typer.Option("--destination", "-d",
                                             help="Destination Dovecot host id.")],
    accounts: Annotated[list[str] | None, typer.Argument(help="Accounts (doveadm user names).",
                                                         show_default=False)] = None,
    accounts_file: Annotated[Path | None, typer.Option(
        "--accounts-file", help="One account a line.", show_default=False)] = None,
    dsync_endpoint: Annotated[str | None, typer.Option(
        "--dsync-endpoint", help="tcp:host:port the source reaches the destination on.",
        show_default=False)] = None,
    director: Annotated[list[str] | None, typer.Option(
        "--director", help="Routing by directors: host id; repeat.", show_default=False)] = None,
    director_tag: Annotated[list[str] | None, typer.Option(
        "--director-tag", help="Directors by tag key=value.", show_default=False)] = None,
    backend_address: Annotated[str | None, typer.Option(
        "--backend-address", help="The destination as the directors know it.",
        show_default=False)] = None,
    proxy: Annotated[list[str] | None, typer.Option(
        "--proxy", help="Routing by proxies: host id; repeat.", show_default=False)] = None,
    proxy_tag: Annotated[list[str] | None, typer.Option(
        "--proxy-tag", help="Proxies by tag key=value.", show_default=False)] = None,
    proxy_destination: Annotated[str | None, typer.Option(
        "--proxy-destination", help="Proxy destination name of the new backend.",
        show_default=False)] = None,
    delay: Annotated[int | None, typer.Option("--delay", min=0, show_default=False,
                                              help="Seconds logins are held back.")] = None,
    max_concurrency: _accounts.MaxConcurrency = None,
    tolerated_failure_percentage: Annotated[float | None, typer.Option(
        "--tolerated-failure-percentage", min=0, max=100, show_default=False)] = None,
    copy_timeout: Annotated[int | None, typer.Option(
        "--copy-timeout", min=1, help="Seconds one dsync copy may take (API default 6 h).",
        show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan.")] = False,
    wait: Wait = False,
    watch_for: WatchFor = None,
    idempotency_key: _accounts.IdempotencyKey = None,
    output: Output = None,
) -> None:
    """Start a migration; with --wait, follow each account's steps live to the end."""
    body: dict[str, Any] = {"accounts": _accounts.read_accounts(accounts, accounts_file),
                            "source": source, "destination": destination}
    directors = selection(director, director_tag, "director")
    proxies = selection(proxy, proxy_tag, "proxy")
    if directors and proxies:
        raise CliError("routing: give directors or proxies, not both")
    if directors:
        if not backend_address:
            raise CliError("--backend-address: required with --director/--director-tag")
        body["routing"] = {"strategy": "director", "directors": directors,
                           "backend_address": backend_address}
    elif proxies:
        if not proxy_destination:
            raise CliError("--proxy-destination: required with --proxy/--proxy-tag")
        body["routing"] = {"strategy": "proxy", "proxies": proxies,
                           "destination": proxy_destination}
    if dsync_endpoint:
        body["dsync_endpoint"] = dsync_endpoint
    if copy_timeout is not None:
        body["copy_timeout_seconds"] = copy_timeout
    _accounts.run_options(body, delay, max_concurrency, tolerated_failure_percentage, dry_run)
    _accounts.start(STATE.client(), "migration", body, idempotency_key, wait, watch_for,
                    STATE.fmt(output))


_accounts.add_commands(app, "migration", helps={
    "show": "A migration: each account's status and steps (copies and counts).",
    "watch": "Follow a migration live: accounts by status and the step each one is on.",
    "rollback": "Copy back what arrived since the flip and put each DONE account's route back.",
    "list": "Recent migrations, newest first.",
}, epilogs={
    "show": "Example: mailfleet migrations show 01JD5...",
    "watch": "Example: mailfleet migrations watch 01JD5...",
    "rollback": "Example: mailfleet migrations rollback 01JD5... --wait",
    "list": "Example: mailfleet migrations list --limit 5",
})
