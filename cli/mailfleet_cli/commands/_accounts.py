"""What cutovers and migrations share: both move accounts, one child run each, and both
read back as {status, counts, accounts: [{account, status, previous, error, steps}]}."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mailfleet_cli.errors import CliError, Exit, exit_for_status
from mailfleet_cli.output import RESULT_ORDER, cell_text, details, emit, out, styled, table, when
from mailfleet_cli.parsing import count_or_percent, list_params
from mailfleet_cli.state import STATE, Limit, NextToken, Output, Wait, WatchFor, more
from mailfleet_cli.watch import ACCOUNTS_FINAL, current_step, watch_accounts

if TYPE_CHECKING:
    from mailfleet_cli.client import Client

STATUSES = ["PENDING", "RUNNING", "SUCCEEDED", "PARTIAL", "FAILED", "CANCELLED", "ROLLED_BACK"]


def read_accounts(given: list[str] | None, from_file: Path | None) -> list[str]:
    accounts = list(given or [])
    if from_file:
        try:
            text = from_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"--accounts-file: cannot read {from_file} ({exc.strerror})") from None
        accounts += [line.strip() for line in text.splitlines()
                     if line.strip() and not line.lstrip().startswith("#")]
    if not accounts:
        raise CliError("accounts: give ACCOUNT ... or --accounts-file FILE (one a line)")
    return accounts


def render_steps(account: dict[str, Any]) -> None:
    """Each step of one account: outcome, when, how long, and what it saw (counts)."""
    rows = []
    for step in account.get("steps") or []:
        seen = step.get("mailboxes") or step.get("hosts")
        rows.append([step.get("step"), styled(step.get("outcome")), when(step.get("at")),
                     "" if step.get("duration_ms") is None else str(step["duration_ms"]),
                     cell_text(seen, 100)])
    out.print(table(["step", "outcome", "at", "ms", "details"], rows,
                    title=f"{account.get('account')}: {account.get('status')}"))


def render_view(kind: str, view: dict[str, Any], steps: bool = False) -> None:
    ident = view.get(f"{kind}_id")
    head = {k: view.get(k) for k in ("status", "phase", "destination", "source", "strategy",
                                     "created_by")}
    head = {f"{kind}": ident, **head, "counts": view.get("counts"),
            "created": when(view.get("created_at")), "finished": when(view.get("finished_at")),
            "halted": view.get("halted"), "error": view.get("error")}
    out.print(details({k: v for k, v in head.items() if v not in (None, "", {})}))
    accounts = sorted(view.get("accounts") or [],
                      key=lambda a: (RESULT_ORDER.get(a.get("status"), 9), str(a.get("account"))))
    rows = []
    for account in accounts:
        error = account.get("error") or {}
        message = error.get("message") or error.get("error") or (cell_text(error) if error
                                                                 else "")
        rows.append([account.get("account"), styled(account.get("status")),
                     current_step(account), previous(account.get("previous")), message])
    if rows:
        out.print(table(["account", "status", "last step", "previous", "error"], rows))
    if steps:
        for account in accounts:
            render_steps(account)


def previous(seen: Any) -> str:
    """What Remember saw, by host: one destination if every host agreed."""
    if not isinstance(seen, dict) or not seen:
        return cell_text(seen, 60)
    routes = {}
    for host, value in seen.items():
        if isinstance(value, dict):
            route = str(value.get("destination") or value.get("backend") or value.get("host")
                        or cell_text(value, 40))
            if value.get("mapped") is False:
                route += " (default)"
        else:
            route = cell_text(value, 40)
        routes[host] = route
    if len(set(routes.values())) == 1:
        return next(iter(routes.values()))
    return ", ".join(f"{host}={route}" for host, route in routes.items())


def finish(kind: str, view: dict[str, Any], fmt: Any, steps: bool = False) -> None:
    emit(view, fmt, lambda v: render_view(kind, v, steps))
    status = view.get("status", "")
    if status in ACCOUNTS_FINAL and exit_for_status(status) != Exit.OK:
        raise typer.Exit(int(exit_for_status(status)))


def start(client: Client, kind: str, body: dict[str, Any], key: str | None, wait: bool,
          watch_for: float | None, fmt: Any) -> None:
    headers = {"Idempotency-Key": key} if key else None
    answer = client.post(f"/{kind}s", body, headers=headers)
    if body.get("dry_run"):
        emit(answer, fmt, lambda a: out.print(details(a) if isinstance(a, dict) else a))
        return
    ident = answer[f"{kind}_id"]
    if not wait:
        emit(answer, fmt, lambda a: out.print(
            f"{kind} {ident} {a.get('status')}: {a.get('total')} account(s). "
            f"Follow it: mailfleet {kind}s watch {ident}"))
        return
    finish(kind, watch_accounts(client, kind, ident, quiet=STATE.quiet, limit=watch_for), fmt)


# The start options both kinds take with the same words.
MaxConcurrency = Annotated[str | None, typer.Option(
    "--max-concurrency", "-c", help="Accounts at once: N or N%.", show_default=False)]
IdempotencyKey = Annotated[str | None, typer.Option("--idempotency-key", show_default=False)]


def run_options(body: dict[str, Any], delay: int | None, max_concurrency: str | None,
                tolerated_failure_percentage: float | None, dry_run: bool) -> dict[str, Any]:
    """`body` with the options every account run takes (both kinds alike)."""
    if delay is not None:
        body["delay_seconds"] = delay
    concurrency = count_or_percent("--max-concurrency", max_concurrency, minimum=1)
    if concurrency is not None:
        body["max_concurrency"] = concurrency
    if tolerated_failure_percentage is not None:
        body["tolerated_failure_percentage"] = tolerated_failure_percentage
    if dry_run:
        body["dry_run"] = True
    return body


def show(kind: str, ident: str, fmt: Any, steps: bool = False) -> None:
    view = STATE.client().get(f"/{kind}s/{ident}", params={"accounts_limit": 10000})
    finish(kind, view, fmt, steps)


def watch(kind: str, ident: str, watch_for: float | None, fmt: Any) -> None:
    view = watch_accounts(STATE.client(), kind, ident, quiet=STATE.quiet, limit=watch_for)
    finish(kind, view, fmt)


def rollback(kind: str, ident: str, wait: bool, watch_for: float | None, fmt: Any) -> None:
    client = STATE.client()
    answer = client.post(f"/{kind}s/{ident}/rollback", {})
    if not wait:
        emit(answer, fmt, lambda a: out.print(
            f"{kind} {ident}: rollback started ({a.get('status') if isinstance(a, dict) else a})"
            f". Follow it: mailfleet {kind}s watch {ident}"))
        return
    finish(kind, watch_accounts(client, kind, ident, quiet=STATE.quiet, limit=watch_for,
                                rollback=True), fmt)


def list_(kind: str, status: str | None, limit: int | None, next_token: str | None,
          fmt: Any) -> None:
    params = list_params(status, STATUSES, limit, next_token)

    def render(data: dict[str, Any]) -> None:
        rows = [[c.get(f"{kind}_id"), styled(c.get("status")), c.get("total"),
                 cell_text(c.get("counts")), c.get("destination"), c.get("created_by"),
                 when(c.get("created_at"))] for c in data.get(f"{kind}s") or []]
        out.print(table([kind, "status", "accounts", "counts", "destination", "by", "created"],
                        rows))
        more(data)

    emit(STATE.client().get(f"/{kind}s", params=params), fmt, render)


# ---------------------------------------------------------------------- the shared commands
# show, watch, rollback and list read the same for both kinds: written once, registered on
# each kind's app by add_commands with that kind's id argument, help and examples.
Steps = Annotated[bool, typer.Option("--steps", help="Every step of every account.")]
Status = Annotated[str | None, typer.Option("--status", "-s", show_default=False,
                                            help=", ".join(STATUSES))]


def _show(kind: str, ident: str, steps: Steps = False, output: Output = None) -> None:
    show(kind, ident, STATE.fmt(output), steps)


def _watch(kind: str, ident: str, watch_for: WatchFor = None, output: Output = None) -> None:
    watch(kind, ident, watch_for, STATE.fmt(output))


def _rollback(kind: str, ident: str, wait: Wait = False, watch_for: WatchFor = None,
              output: Output = None) -> None:
    rollback(kind, ident, wait, watch_for, STATE.fmt(output))


def _list(kind: str, status: Status = None, limit: Limit = None, next_token: NextToken = None,
          output: Output = None) -> None:
    list_(kind, status, limit, next_token, STATE.fmt(output))


def _for_kind(command: Callable[..., None], kind: str, help_text: str) -> Callable[..., None]:
    """`command` for one kind: its `ident` argument named <kind>_id, as Typer shows it."""
    name = f"{kind}_id"
    signature = inspect.signature(command, eval_str=True)
    params = [p.replace(name=name, annotation=Annotated[
                  str, typer.Argument(help=f"{kind.capitalize()} id.")])
              if p.name == "ident" else p for p in list(signature.parameters.values())[1:]]

    def for_kind(**given: Any) -> None:
        if name in given:
            given["ident"] = given.pop(name)
        command(kind, **given)

    for_kind.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    for_kind.__annotations__ = {p.name: p.annotation for p in params}
    for_kind.__doc__ = help_text
    return for_kind


def add_commands(app: typer.Typer, kind: str, helps: dict[str, str],
                 epilogs: dict[str, str]) -> None:
    """show, watch, rollback and list on `app`, with their help and examples by name."""
    for name, command in (("show", _show), ("watch", _watch), ("rollback", _rollback),
                          ("list", _list)):
        app.command(name, epilog=epilogs[name])(_for_kind(command, kind, helps[name]))
