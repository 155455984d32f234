"""`mailfleet fleet`: health from the last sweep, and a sweep now."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mailfleet_cli.commands import jobs
from mailfleet_cli.output import emit, note, out, table
from mailfleet_cli.parsing import parse_tags
from mailfleet_cli.state import STATE, Output, Wait, WatchFor

app = typer.Typer(help="Fleet health sweeps.", no_args_is_help=True)


@app.command("health", epilog="Example: mailfleet fleet health -o json | jq .down")
def health(output: Output = None) -> None:
    """Up, down and unknown hosts per kind, from the last sweep."""

    def render(data: dict[str, Any]) -> None:
        counts = data.get("counts") or {}
        out.print(table(["kind", "up", "down", "unknown"],
                        [[k, c.get("up", 0), c.get("down", 0), c.get("unknown", 0)]
                         for k, c in sorted(counts.items())]))
        down = data.get("down") or []
        if down:
            out.print(f"[red]down[/]: {', '.join(down)}")
        for item in data.get("destinations_down") or []:
            out.print(f"[red]destination down[/]: {item.get('destination')} on "
                      f"{item.get('host')}")
        note(f"swept at {data.get('swept_at') or 'never'}")

    emit(STATE.client().get("/fleet/health"), STATE.fmt(output), render)


@app.command("sweep", epilog="Example: mailfleet fleet sweep --kind proxy --wait")
def sweep(
    kind: Annotated[str | None, typer.Option("--kind", "-k", help="Only this kind.",
                                             show_default=False)] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="key=value.",
                                                  show_default=False)] = None,
    wait: Wait = False,
    watch_for: WatchFor = None,
    output: Output = None,
) -> None:
    """Probe every host now (a job, action health.sweep); --wait follows it."""
    body: dict[str, Any] = {}
    if kind:
        body["kind"] = kind
    if tag:
        body["tags"] = parse_tags(tag)
    client = STATE.client()
    answer = client.post("/fleet/sweep", body or None)
    fmt = STATE.fmt(output)
    if not wait:
        emit(answer, fmt, lambda a: out.print(
            f"sweep job {a.get('job_id')} started. Follow it: mailfleet jobs watch "
            f"{a.get('job_id')}"))
        return
    jobs.finish(jobs.follow(client, answer["job_id"], watch_for), fmt)
