"""`mailfleet schedules`: jobs on an EventBridge schedule (rate or cron)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mailfleet_cli.commands import jobs
from mailfleet_cli.output import cell_text, details, emit, note, out, styled, table, when
from mailfleet_cli.state import STATE, Limit, NextToken, Output, more

app = typer.Typer(help="Run jobs on a schedule.", no_args_is_help=True)
Name = Annotated[str, typer.Argument(help="Schedule name.")]


def _render_one(data: dict[str, Any]) -> None:
    out.print(details(data, ["name", "expression", "timezone", "state", "paused", "next_run",
                             "description", "job", "created_by", "created_at", "managed_by"]))


@app.command("list", epilog="Example: mailfleet schedules list")
def list_(limit: Limit = None, next_token: NextToken = None, output: Output = None) -> None:
    """Every schedule, by name."""
    params = {k: v for k, v in {"limit": limit, "next_token": next_token}.items() if v}

    def render(data: dict[str, Any]) -> None:
        rows = [[s.get("name"), s.get("expression"), styled(s.get("state")),
                 when(s.get("next_run")), (s.get("job") or {}).get("action"),
                 cell_text((s.get("job") or {}).get("targets"), 60), s.get("managed_by")]
                for s in data.get("schedules") or []]
        out.print(table(["name", "expression", "state", "next run", "action", "targets", "by"],
                        rows))
        more(data)

    emit(STATE.client().get("/schedules", params=params), STATE.fmt(output), render)


@app.command("show", epilog="Example: mailfleet schedules show who-hourly -o yaml")
def show(name: Name, output: Output = None) -> None:
    """One schedule with its job and next run."""
    emit(STATE.client().get(f"/schedules/{name}"), STATE.fmt(output), _render_one)


@app.command("add", epilog="Example: mailfleet schedules add who-hourly --expression "
                           "'rate(1 hour)' who --kind dovecot --tag site=demo")
def add(
    name: Name,
    action: Annotated[str, typer.Argument(help="The job's action.")],
    expression: Annotated[str, typer.Option("--expression", "-x",
                                            help="rate(5 minutes) or cron(0 3 * * ? *).")],
    timezone: Annotated[str | None, typer.Option("--timezone", help="IANA zone for cron.",
                                                 show_default=False)] = None,
    description: Annotated[str | None, typer.Option("--description",
                                                    show_default=False)] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    kind: jobs.Kind = None,
    tag: jobs.Tags = None,
    host: jobs.Hosts = None,
    param: jobs.Params = None,
    params_json: jobs.ParamsJson = None,
    max_concurrency: jobs.Concurrency = None,
    max_errors: jobs.MaxErrors = None,
    timeout: jobs.Timeout = None,
    confirm: jobs.Confirm = None,
    output: Output = None,
) -> None:
    """Create a schedule that runs ACTION as an ordinary job (targets as for jobs run)."""
    client = STATE.client()
    job = jobs.job_body(client, action, kind, tag, host, param, params_json, max_concurrency,
                        max_errors, timeout, False, confirm)
    body: dict[str, Any] = {"name": name, "expression": expression, "job": job}
    if timezone:
        body["timezone"] = timezone
    if description:
        body["description"] = description
    if paused:
        body["paused"] = True
    emit(client.post("/schedules", body), STATE.fmt(output), _render_one)


@app.command("remove", epilog="Example: mailfleet schedules remove who-hourly")
def remove(name: Name, output: Output = None) -> None:
    """Delete a schedule (204: nothing on stdout, the exit code says it)."""
    STATE.client().delete(f"/schedules/{name}")
    note(f"schedule {name} removed")


@app.command("pause", epilog="Example: mailfleet schedules pause who-hourly")
def pause(name: Name, output: Output = None) -> None:
    """Stop a schedule's runs until resumed."""
    emit(STATE.client().post(f"/schedules/{name}/pause"), STATE.fmt(output), _render_one)


@app.command("resume", epilog="Example: mailfleet schedules resume who-hourly")
def resume(name: Name, output: Output = None) -> None:
    """Start a paused schedule's runs again."""
    emit(STATE.client().post(f"/schedules/{name}/resume"), STATE.fmt(output), _render_one)
