"""`mailfleet audit`: the append-only, hash-chained audit trail."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mailfleet_cli.errors import Exit
from mailfleet_cli.output import cell_text, details, emit, out, styled, table, when
from mailfleet_cli.state import STATE, Limit, NextToken, Output, more

app = typer.Typer(help="The audit trail: every change, job and cutover step.",
                  no_args_is_help=True)

Since = Annotated[str | None, typer.Option("--since", help="ISO 8601, e.g. 2026-11-27T10:00Z.",
                                           show_default=False)]
Until = Annotated[str | None, typer.Option("--until", help="ISO 8601.", show_default=False)]


def _opt(name: str, help_text: str) -> Any:
    return typer.Option(name, help=help_text, show_default=False)


@app.command("list", epilog="Example: mailfleet audit list --host dc-1 --limit 20")
def list_(
    since: Since = None,
    until: Until = None,
    actor: Annotated[str | None, _opt("--actor", "Who did it (e.g. token:ops).")] = None,
    host: Annotated[str | None, _opt("--host", "Events about this host.")] = None,
    action: Annotated[str | None, _opt("--action", "e.g. host.create, job.start.")] = None,
    job: Annotated[str | None, _opt("--job", "Events of this job id.")] = None,
    cutover: Annotated[str | None, _opt("--cutover", "Events of this cutover id.")] = None,
    oldest_first: Annotated[bool, typer.Option("--oldest-first",
                                               help="Ascending order.")] = False,
    limit: Limit = None,
    next_token: NextToken = None,
    output: Output = None,
) -> None:
    """Audit events, newest first."""
    params: dict[str, Any] = {k: v for k, v in {
        "since": since, "until": until, "actor": actor, "host": host, "action": action,
        "job_id": job, "cutover_id": cutover, "limit": limit, "next_token": next_token,
    }.items() if v is not None}
    if oldest_first:
        params["order"] = "asc"

    # Filtered by one job or cutover: its id would repeat on every row.
    by_work = not (job or cutover)

    def render(data: dict[str, Any]) -> None:
        rows = []
        for e in data.get("events") or []:
            row = [when(e.get("at")), e.get("actor"), e.get("action"), e.get("target"),
                   styled(e.get("outcome"))]
            if by_work:
                row.append(e.get("job_id") or e.get("cutover_id") or "")
            rows.append([*row, cell_text(e.get("params"), 60)])
        columns = ["at", "actor", "action", "target", "outcome",
                   *(["job/cutover"] if by_work else []), "params"]
        out.print(table(columns, rows))
        more(data)

    emit(STATE.client().get("/audit", params=params), STATE.fmt(output), render)


@app.command("verify", epilog="Example: mailfleet audit verify && echo chain intact")
def verify(since: Since = None, until: Until = None, output: Output = None) -> None:
    """Check the hash chain; exit 1 if it is broken (first_bad names where)."""
    params = {k: v for k, v in {"since": since, "until": until}.items() if v}
    answer = STATE.client().get("/audit/verify", params=params)
    # Long histories come in pages; each carries the running ok/checked/first_bad.
    for _ in range(100_000):
        if not answer.get("next_token"):
            break
        answer = STATE.client().get("/audit/verify",
                                    params={**params, "next_token": answer["next_token"]})

    def render(data: dict[str, Any]) -> None:
        verdict = "[green]intact[/]" if data.get("ok") else "[red]BROKEN[/]"
        out.print(f"audit chain {verdict}: {data.get('checked')} event(s) checked")
        if data.get("unsealed"):
            out.print(f"{data['unsealed']} newest event(s) not sealed yet")
        if not data.get("ok"):
            out.print(details(data))

    emit(answer, STATE.fmt(output), render)
    if not answer.get("ok"):
        raise typer.Exit(int(Exit.FAILED))
