"""`mailfleet jobs`: one action on many hosts, followed live (POST/GET /jobs ...)."""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mailfleet_cli.errors import ApiError, CliError, Exit, exit_for_status
from mailfleet_cli.output import (
    RESULT_ORDER,
    cell_text,
    details,
    emit,
    note,
    out,
    styled,
    table,
    when,
)
from mailfleet_cli.parsing import (
    coerce_params,
    count_or_percent,
    list_params,
    parse_params,
    parse_tags,
)
from mailfleet_cli.state import STATE, Limit, NextToken, Output, Wait, WatchFor, more
from mailfleet_cli.watch import JOB_FINAL, job_progress, watch_job

if TYPE_CHECKING:
    from mailfleet_cli.client import Client

app = typer.Typer(help="Run one action on many hosts and follow it.", no_args_is_help=True)

SHOW_SUCCEEDED = 20  # successes listed after every failure; -o json has them all
JobId = Annotated[str, typer.Argument(help="Job id.")]
STATUSES = ["PENDING", "AWAITING_APPROVAL", "RUNNING", "SUCCEEDED", "PARTIAL", "FAILED",
            "CANCELLED"]


# ---------------------------------------------------------------------- rendering
def render_job(job: dict[str, Any], show_all: bool = False) -> None:
    p = job_progress(job)
    head = {k: job.get(k) for k in ("job_id", "action", "kind", "status", "created_by")}
    head["params"] = job.get("params") or None
    head["hosts"] = (f"{p['total']} ({p['succeeded']} succeeded, {p['failed']} failed, "
                     f"{p['skipped']} skipped)")
    head["created"] = when(job.get("created_at"))
    head["finished"] = when(job.get("finished_at"))
    if job.get("schedule"):
        head["schedule"] = job["schedule"]
    out.print(details({k: v for k, v in head.items() if v not in (None, "")}))
    render_results(job.get("results") or [], show_all=show_all)


def render_results(results: list[dict[str, Any]], show_all: bool = False) -> None:
    ordered = sorted(results, key=lambda r: (RESULT_ORDER.get(r.get("status"), 9),
                                             str(r.get("host"))))
    shown = ordered
    hidden = 0
    if not show_all:
        failures = [r for r in ordered if r.get("status") != "SUCCEEDED"]
        successes = [r for r in ordered if r.get("status") == "SUCCEEDED"]
        shown = failures + successes[:SHOW_SUCCEEDED]
        hidden = len(successes) - min(len(successes), SHOW_SUCCEEDED)
    rows = []
    for r in shown:
        error = r.get("error") or {}
        kind = error.get("type") or ""
        if error.get("code") is not None:
            kind = f"{kind} {error['code']}"
        what = cell_text(error.get("message"), 160) if error else cell_text(r.get("output"), 100)
        ms = r.get("duration_ms")
        rows.append([r.get("host"), styled(r.get("status")), r.get("attempts", ""),
                     "" if ms is None else f"{ms}", kind, what])
    if rows:
        out.print(table(["host", "status", "tries", "ms", "error", "message / output"], rows))
    if hidden:
        out.print(f"… and {hidden} more succeeded (--all, or -o json for every result)")


def finish(job: dict[str, Any], fmt: Any, show_all: bool = False) -> None:
    emit(job, fmt, lambda j: render_job(j, show_all))
    status = job.get("status", "")
    if status in JOB_FINAL and exit_for_status(status) != Exit.OK:
        raise typer.Exit(int(exit_for_status(status)))


# ---------------------------------------------------------------------- body
def job_body(client: Client | None, action: str, kind: str | None, tag: list[str] | None,
             host: list[str] | None, param: list[str] | None, params_json: str | None,
             max_concurrency: str | None, max_errors: str | None, timeout: float | None,
             dry_run: bool, confirm: str | None) -> dict[str, Any]:
    """The POST /jobs body from the command line (shared by `schedules add`)."""
    if host and (kind or tag):
        raise CliError("targets: give --host ..., or --kind (with --tag ...), not both")
    if not host and not kind:
        raise CliError("targets: give --host ID (repeatable) or --kind K with --tag k=v")
    targets: dict[str, Any] = {"hosts": list(host)} if host else {"kind": kind}
    if tag:
        targets["tags"] = parse_tags(tag)
    params = parse_params(param, params_json)
    if params and client is not None:
        params = coerce_params(params, _action_schema(client, action, targets))
    body: dict[str, Any] = {"action": action, "params": params, "targets": targets}
    concurrency = count_or_percent("--max-concurrency", max_concurrency, minimum=1)
    if concurrency is not None:
        body["max_concurrency"] = concurrency
    errors = count_or_percent("--max-errors", max_errors)
    if errors is not None:
        body["max_errors"] = errors
    if timeout is not None:
        body["timeout_seconds"] = timeout
    if dry_run:
        body["dry_run"] = True
    if confirm:
        body["confirm"] = confirm
    return body


def _action_schema(client: Client, action: str, targets: dict[str, Any]
                   ) -> dict[str, Any] | None:
    """The action's parameter schema from one target host, to send `mask=alice` as the
    list doveadm wants. Best effort: without it the params go as given."""
    try:
        if "hosts" in targets:
            host_id = targets["hosts"][0]
        else:
            query: dict[str, Any] = {"kind": targets["kind"], "limit": 1}
            query["tag"] = [f"{k}:{v}" for k, v in (targets.get("tags") or {}).items()]
            hosts = client.get("/hosts", params=query).get("hosts") or []
            if not hosts:
                return None
            host_id = hosts[0]["id"]
        listed = client.get(f"/hosts/{host_id}/actions").get("actions") or []
    except (ApiError, KeyError, AttributeError, TypeError):
        return None
    for spec in listed:
        if isinstance(spec, dict) and (spec.get("name") or spec.get("action")) == action:
            params = spec.get("params") or spec.get("parameters")
            return params if isinstance(params, dict) else None
    return None


_CONFIRM = re.compile(r"[\w.:-]+@\d+")


def submit(client: Client, body: dict[str, Any], key: str | None, wait_seconds: float = 0
           ) -> tuple[int, dict[str, Any]]:
    """POST /jobs; a destructive action refused for want of `confirm` is asked for at a
    terminal (the API names the expected value), never guessed."""
    headers = {"Idempotency-Key": key} if key else None
    params = {"wait": wait_seconds} if wait_seconds else None
    try:
        answer = client.send("POST", "/jobs", json=body, params=params, headers=headers)
        return answer.status_code, client.parse("POST", "/jobs", answer)
    except ApiError as exc:
        reasons = dict(exc.field_reasons())
        if "confirm" not in reasons or body.get("confirm") or not sys.stdin.isatty():
            raise
        named = exc.body.get("expected_confirm") if isinstance(exc.body, dict) else None
        found = _CONFIRM.search(reasons["confirm"])
        expected = str(named) if named else (found.group(0) if found else None)
        if not expected:
            raise
        note(f"[bold red]{reasons['confirm']}[/]")
        typed = typer.prompt(f"Type {expected} to go on")
        if typed != expected:
            raise CliError("not confirmed: nothing was started", Exit.USAGE) from None
        body = {**body, "confirm": typed}
        # Another body: a key given for the unconfirmed one would be a 409.
        headers = None
        answer = client.send("POST", "/jobs", json=body, params=params, headers=headers)
        return answer.status_code, client.parse("POST", "/jobs", answer)


def follow(client: Client, job_id: str, limit: float | None = None) -> dict[str, Any]:
    """Watch to the end, then read every result (pages of them for big jobs)."""
    view = watch_job(client, job_id, quiet=STATE.quiet, limit=limit)
    return all_results(client, job_id, view)


def all_results(client: Client, job_id: str, view: dict[str, Any]) -> dict[str, Any]:
    token = view.get("next_token")
    results = list(view.get("results") or [])
    for _ in range(10_000):
        if not token:
            break
        page = client.get(f"/jobs/{job_id}", params={"next_token": token,
                                                     "results_limit": 10_000})
        results.extend(page.get("results") or [])
        token = page.get("next_token")
    return {**view, "results": results, "next_token": None} if view.get("next_token") else view


# ---------------------------------------------------------------------- commands
Kind = Annotated[str | None, typer.Option("--kind", "-k", help="Target every host of this "
                                          "kind (with --tag to narrow).", show_default=False)]
Tags = Annotated[list[str] | None, typer.Option("--tag", "-t", help="key=value; repeat: all "
                                                "must match.", show_default=False)]
Hosts = Annotated[list[str] | None, typer.Option("--host", "-H", help="Target this host id; "
                                                 "repeat for more.", show_default=False)]
Params = Annotated[list[str] | None, typer.Option(
    "--param", "-P", help="key=value (a string; fitted to the action's schema), key:=JSON; "
                          "a key given twice is a list.", show_default=False)]
ParamsJson = Annotated[str | None, typer.Option(
    "--params-json", help="All params as a JSON object, or @file.json.", show_default=False)]
Concurrency = Annotated[str | None, typer.Option(
    "--max-concurrency", "-c", help="Hosts at once: N or N% (API default 50).",
    show_default=False)]
MaxErrors = Annotated[str | None, typer.Option(
    "--max-errors", "-e", help="After N (or N%) failures no further host starts.",
    show_default=False)]
Timeout = Annotated[float | None, typer.Option("--timeout", help="Seconds per host (API "
                                               "default 30).", min=0.1, show_default=False)]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Resolve targets and validate params; "
                                      "contact nobody.")]
Confirm = Annotated[str | None, typer.Option(
    "--confirm", help="For destructive actions: ACTION@NUMBER_OF_TARGETS, e.g. reboot@12 "
                      "(asked for at a terminal when left out).", show_default=False)]


@app.command("run", epilog="Examples:\n"
                           "  mailfleet jobs run who --kind dovecot --tag site=demo --wait\n"
                           "  mailfleet jobs run kick -H dc-1 --param mask=alice -w\n"
                           "  mailfleet jobs run who --kind dovecot -c 10% -e 5 -w -o json\n"
                           "  mailfleet jobs run reboot -H appliance-1 --confirm reboot@1")
def run(
    action: Annotated[str, typer.Argument(help="Action name (doveadm command, proxy/appliance/"
                                          "pymap action): see mailfleet hosts actions ID.")],
    kind: Kind = None,
    tag: Tags = None,
    host: Hosts = None,
    param: Params = None,
    params_json: ParamsJson = None,
    max_concurrency: Concurrency = None,
    max_errors: MaxErrors = None,
    timeout: Timeout = None,
    dry_run: DryRun = False,
    confirm: Confirm = None,
    wait: Wait = False,
    watch_for: WatchFor = None,
    show_all: Annotated[bool, typer.Option("--all", help="List every result, not only "
                                           "failures and the first successes.")] = False,
    idempotency_key: Annotated[str | None, typer.Option(
        "--idempotency-key", help="Same key and body within 24 h: the first answer, nothing "
                                  "new started (a script's safe retry).", show_default=False,
    )] = None,
    output: Output = None,
) -> None:
    """Run ACTION on hosts by id, or by kind and tags. With --wait: a live progress bar
    (stderr), then the results, failures first; the exit code says how it ended."""
    client = STATE.client()
    fmt = STATE.fmt(output)
    body = job_body(client, action, kind, tag, host, param, params_json, max_concurrency,
                    max_errors, timeout, dry_run, confirm)
    status, answer = submit(client, body, idempotency_key)
    if dry_run or (status == 200 and answer.get("dry_run")):
        def render(data: dict[str, Any]) -> None:
            hosts = [t.get("id") or t.get("host") for t in data.get("targets") or []]
            out.print(f"dry run {data.get('job_id')}: {data.get('total')} host(s) would run "
                      f"{action}, nobody contacted" + (f": {', '.join(map(str, hosts))}"
                                                        if hosts else ""))
        emit(answer, fmt, render)
        return
    job_id = answer["job_id"]
    if answer.get("status") == "AWAITING_APPROVAL":
        note(f"job {job_id} awaits approval by another admin: mailfleet jobs approve {job_id}")
    if not wait:
        emit(answer, fmt, lambda a: out.print(
            f"job {a['job_id']} {a['status']}: {a['total']} host(s). "
            f"Follow it: mailfleet jobs watch {a['job_id']}"))
        return
    finish(follow(client, job_id, watch_for), fmt, show_all)


@app.command("watch", epilog="Example: mailfleet jobs watch 01JD5...  (Ctrl-C stops watching, "
                             "not the job)")
def watch(job_id: JobId, watch_for: WatchFor = None,
          show_all: Annotated[bool, typer.Option("--all", help="List every result.")] = False,
          output: Output = None) -> None:
    """Follow a job live to its end, then its results; the exit code says how it ended."""
    finish(follow(STATE.client(), job_id, watch_for), STATE.fmt(output), show_all)


@app.command("show", epilog="Example: mailfleet jobs show 01JD5... -o json | jq .counts")
def show(job_id: JobId,
         show_all: Annotated[bool, typer.Option("--all", help="List every result.")] = False,
         output: Output = None) -> None:
    """A job and its per-host results (failures first). Exit code by its status."""
    client = STATE.client()
    view = all_results(client, job_id, client.get(f"/jobs/{job_id}"))
    finish(view, STATE.fmt(output), show_all)


@app.command("list", epilog="Example: mailfleet jobs list --status FAILED --limit 10")
def list_(
    status: Annotated[str | None, typer.Option(
        "--status", "-s", help="One of " + ", ".join(STATUSES) + ".", show_default=False,
    )] = None,
    limit: Limit = None,
    next_token: NextToken = None,
    output: Output = None,
) -> None:
    """Recent jobs, newest first."""
    params = list_params(status, STATUSES, limit, next_token)

    def render(data: dict[str, Any]) -> None:
        rows = [[j.get("job_id"), j.get("action"), j.get("kind") or "", styled(j.get("status")),
                 j.get("total"), cell_text(j.get("counts")), j.get("created_by"),
                 when(j.get("created_at")), j.get("schedule") or ""]
                for j in data.get("jobs") or []]
        out.print(table(["job", "action", "kind", "status", "hosts", "counts", "by", "created",
                         "schedule"], rows))
        more(data)

    emit(STATE.client().get("/jobs", params=params), STATE.fmt(output), render)


def _post_and_say(path: str, done: str, output: Any) -> None:
    answer = STATE.client().post(path)
    emit(answer, STATE.fmt(output),
         lambda a: out.print(done + (f" ({a.get('status')})" if isinstance(a, dict)
                                     and a.get("status") else "")))


@app.command("cancel", epilog="Example: mailfleet jobs cancel 01JD5...")
def cancel(job_id: JobId, output: Output = None) -> None:
    """Stop starting hosts; those not started are SKIPPED."""
    _post_and_say(f"/jobs/{job_id}/cancel", f"job {job_id}: cancel asked", output)


@app.command("approve", epilog="Example: mailfleet jobs approve 01JD5...")
def approve(job_id: JobId, output: Output = None) -> None:
    """Approve a job AWAITING_APPROVAL (an admin who did not create it)."""
    _post_and_say(f"/jobs/{job_id}/approve", f"job {job_id}: approved", output)


@app.command("reject", epilog="Example: mailfleet jobs reject 01JD5...")
def reject(job_id: JobId, output: Output = None) -> None:
    """Reject a job AWAITING_APPROVAL (it becomes CANCELLED)."""
    _post_and_say(f"/jobs/{job_id}/reject", f"job {job_id}: rejected", output)


__all__ = ["app", "finish", "follow", "job_body", "submit"]
