"""Following long work live: jobs (a progress bar of hosts) and cutovers or migrations
(accounts by status and the step each one is on).

Progress goes to stderr: a live display on a terminal, one plain line per change
otherwise (logs, CI). Ctrl-C stops watching, never the work, and says how to resume.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from mailfleet_cli.errors import CliError, Exit
from mailfleet_cli.output import err, note, styled

if TYPE_CHECKING:
    from mailfleet_cli.client import Client

JOB_FINAL = {"SUCCEEDED", "PARTIAL", "FAILED", "CANCELLED"}
ACCOUNTS_FINAL = {"SUCCEEDED", "PARTIAL", "FAILED", "CANCELLED", "ROLLED_BACK"}
DONE_RESULTS = ("SUCCEEDED", "FAILED", "TIMED_OUT", "SKIPPED")
# A watch never outlives this, even if the work seems to (a job's hosts all have timeouts).
MAX_WATCH_SECONDS = 24 * 3600
# How long a rollback may take to show itself (phase "rollback") before its view is trusted.
ROLLBACK_GRACE_SECONDS = 10.0


class Interrupted(CliError):
    def __init__(self, what: str, resume: str) -> None:
        super().__init__(f"stopped watching; the {what} goes on. Resume with: {resume}",
                         Exit.INTERRUPTED)


@contextmanager
def ctrl_c_stops_watching() -> Iterator[None]:
    """Ctrl-C (SIGINT) raises KeyboardInterrupt while watching, however we were started.
    A shell without job control (a script, `cmd &`, CI) starts commands with SIGINT
    ignored, and Python then never installs its handler: the watch went on until the
    work ended. Stopping a watch is always safe, so the handler is asked for here."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (a watch run inside a test thread)
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous is not None:  # None: set outside Python, and not ours to restore
            signal.signal(signal.SIGINT, previous)


def _poll_interval(total: int, elapsed: float) -> float:
    """Quick at first (short jobs end in a second), slower for big or long work."""
    base = 0.25 if elapsed < 3 else 1.0
    return base * (3 if total > 1000 else 1)


def _deadline(limit: float | None) -> float:
    return time.monotonic() + min(limit or MAX_WATCH_SECONDS, MAX_WATCH_SECONDS)


# ---------------------------------------------------------------------- jobs
def _concurrency(view: dict[str, Any]) -> int:
    raw = view.get("max_concurrency") or 50
    total = int(view.get("total") or 0)
    if isinstance(raw, str) and raw.endswith("%"):
        return max(1, math.ceil(total * int(raw[:-1]) / 100))
    return int(raw)


def job_progress(view: dict[str, Any]) -> dict[str, int]:
    """Hosts done, succeeded, failed, skipped, and those running now. Results are recorded
    as hosts finish, so `running` is the engine's window over what is left."""
    counts = Counter(view.get("counts") or {})
    if view.get("results") is not None:
        counts = Counter(r.get("status") for r in view["results"])
    total = int(view.get("total") or len(view.get("results") or []))
    failed = counts["FAILED"] + counts["TIMED_OUT"]
    done = sum(counts[s] for s in DONE_RESULTS)
    running = counts["RUNNING"]
    if view.get("status") == "RUNNING" and not running:
        running = min(_concurrency(view), max(total - done, 0))
    return {"total": total, "done": done, "succeeded": counts["SUCCEEDED"], "failed": failed,
            "skipped": counts["SKIPPED"], "running": running}


def _job_line(job_id: str, view: dict[str, Any], p: dict[str, int]) -> str:
    return (f"job {job_id} {view.get('status')}: {p['done']}/{p['total']} hosts done "
            f"({p['succeeded']} succeeded, {p['failed']} failed, {p['skipped']} skipped, "
            f"{p['running']} running)")


def watch_job(client: Client, job_id: str, *, quiet: bool = False,
              limit: float | None = None) -> dict[str, Any]:
    """Poll GET /jobs/{id} until the job is final; its last answer, every result in it."""
    with ctrl_c_stops_watching():
        try:
            return _watch_job(client, job_id, quiet=quiet, limit=limit)
        except KeyboardInterrupt:
            raise Interrupted("job", f"mailfleet jobs watch {job_id}") from None


def _watch_job(client: Client, job_id: str, *, quiet: bool, limit: float | None
               ) -> dict[str, Any]:
    started = time.monotonic()
    deadline = _deadline(limit)
    view = client.get(f"/jobs/{job_id}")
    live = err.is_terminal and not quiet
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[breakdown]}"),
        TextColumn("[dim]elapsed[/]"),
        TimeElapsedColumn(),
        TextColumn("[dim]ETA[/]"),
        TimeRemainingColumn(),
        console=err,
        disable=not live,
        transient=False,
    )
    task = progress.add_task(f"{view.get('action', 'job')} {job_id}",
                             total=view.get("total") or None, breakdown="")
    last_line = ""
    with progress:
        while True:
            p = job_progress(view)
            status = view.get("status", "")
            breakdown = (f"[green]{p['succeeded']} ok[/] [red]{p['failed']} failed[/] "
                         f"[dim]{p['skipped']} skipped[/] [cyan]{p['running']} running[/]")
            if status == "AWAITING_APPROVAL":
                breakdown = "[magenta]awaiting approval by another admin[/]"
            progress.update(task, completed=p["done"], total=p["total"] or None,
                            breakdown=breakdown)
            line = _job_line(job_id, view, p)
            if not live and not quiet and line != last_line:
                note(line)
            last_line = line
            if status in JOB_FINAL:
                return view
            if time.monotonic() > deadline:
                raise CliError(f"job {job_id} still {status} after the watch limit; "
                               f"resume with: mailfleet jobs watch {job_id}",
                               Exit.STILL_RUNNING)
            time.sleep(_poll_interval(p["total"], time.monotonic() - started))
            view = client.get(f"/jobs/{job_id}")


# ---------------------------------------------------------------------- cutovers, migrations
def current_step(account: dict[str, Any]) -> str:
    steps = account.get("steps") or []
    if not steps:
        return ""
    last = steps[-1]
    outcome = last.get("outcome")
    return f"{last.get('step')} ({outcome})" if outcome and outcome != "ok" else str(
        last.get("step"))


def accounts_display(kind: str, ident: str, view: dict[str, Any], shown: int = 12) -> Group:
    accounts = view.get("accounts") or []
    counts = Counter(a.get("status") for a in accounts) or Counter(view.get("counts") or {})
    head = Text.assemble(
        (f"{kind} {ident} ", "bold"), styled(view.get("status")),
        f"  phase {view.get('phase', kind)}" if view.get("phase") else "",
        f"  → {view.get('destination')}" if isinstance(view.get("destination"), str) else "",
    )
    final = sum(n for status, n in counts.items() if status not in ("PENDING", "IN_PROGRESS"))
    total = int(view.get("total") or len(accounts) or 1)
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=total, completed=final, width=40),
                Text(f"{final}/{total} accounts final"))
    by_status = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    order = ["PENDING", "IN_PROGRESS", "DONE", "ROLLED_BACK", "FAILED", "SKIPPED"]
    for status in order:
        by_status.add_column(status)
    by_status.add_row(*[str(counts.get(s, 0)) for s in order])
    steps = Counter(current_step(a).split(" ")[0] for a in accounts
                    if a.get("status") == "IN_PROGRESS" and current_step(a))
    rows = Table(header_style="bold", box=None, pad_edge=False)
    for column in ("account", "status", "step"):
        rows.add_column(column)
    active = [a for a in accounts if a.get("status") == "IN_PROGRESS"][:shown]
    for account in active:
        rows.add_row(str(account.get("account")), styled(account.get("status")),
                     current_step(account))
    parts: list[Any] = [head, bar, by_status]
    if steps:
        parts.append(Text("in progress by step: " + ", ".join(
            f"{step} {n}" for step, n in sorted(steps.items()))))
    if active:
        parts.append(rows)
    return Group(*parts)


def watch_accounts(client: Client, kind: str, ident: str, *, quiet: bool = False,
                   limit: float | None = None, rollback: bool = False) -> dict[str, Any]:
    """Poll GET /{kind}s/{id} until final, showing accounts by status and their steps.
    `rollback`: just asked for, so the final status it had before does not count."""
    with ctrl_c_stops_watching():
        try:
            return _watch_accounts(client, kind, ident, quiet=quiet, limit=limit,
                                   rollback=rollback)
        except KeyboardInterrupt:
            raise Interrupted(kind, f"mailfleet {kind}s watch {ident}") from None


def _watch_accounts(client: Client, kind: str, ident: str, *, quiet: bool,
                    limit: float | None, rollback: bool) -> dict[str, Any]:
    path = f"/{kind}s/{ident}"
    started = time.monotonic()
    deadline = _deadline(limit)
    live = err.is_terminal and not quiet
    seen: dict[str, tuple[str, str]] = {}
    view = client.get(path, params={"accounts_limit": 10000})
    with Live(accounts_display(kind, ident, view), console=err, transient=False,
              auto_refresh=False, redirect_stdout=False) if live else _NoLive() as screen:
        while True:
            if live:
                screen.update(accounts_display(kind, ident, view), refresh=True)
            elif not quiet:
                _account_lines(kind, ident, view, seen)
            if view.get("status") in ACCOUNTS_FINAL and not (
                rollback and _rollback_not_begun(view, time.monotonic() - started)
            ):
                return view
            if time.monotonic() > deadline:
                raise CliError(f"{kind} {ident} still {view.get('status')} after the watch "
                               f"limit; resume with: mailfleet {kind}s watch {ident}",
                               Exit.STILL_RUNNING)
            time.sleep(_poll_interval(int(view.get("total") or 0),
                                      time.monotonic() - started))
            view = client.get(path, params={"accounts_limit": 10000})


def _rollback_not_begun(view: dict[str, Any], elapsed: float) -> bool:
    """Right after POST .../rollback the view may still show the old final status."""
    if view.get("status") == "ROLLED_BACK" or view.get("phase") == "rollback":
        return False
    return elapsed < ROLLBACK_GRACE_SECONDS


def _account_lines(kind: str, ident: str, view: dict[str, Any],
                   seen: dict[str, tuple[str, str]]) -> None:
    key = "__status__"
    status = (str(view.get("status")), str(view.get("phase", "")))
    if seen.get(key) != status:
        counts = Counter(a.get("status") for a in view.get("accounts") or [])
        summary = ", ".join(f"{s} {n}" for s, n in sorted(counts.items()))
        note(f"{kind} {ident} {status[0]} (phase {status[1] or kind}): {summary}")
        seen[key] = status
    for account in view.get("accounts") or []:
        now = (str(account.get("status")), current_step(account))
        name = str(account.get("account"))
        if seen.get(name) != now:
            note(f"  {name}: {now[0]}" + (f", step {now[1]}" if now[1] else ""))
            seen[name] = now


class _NoLive:
    def __enter__(self) -> _NoLive:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None
