"""`mailfleet hosts`: the inventory (GET/POST/PATCH/DELETE /hosts, POST /inventory/import)."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from mailfleet_cli.errors import CliError, Exit
from mailfleet_cli.output import cell_text, details, emit, note, out, styled, table
from mailfleet_cli.parsing import CSV_HELP, parse_tags, read_inventory
from mailfleet_cli.state import STATE, Limit, NextToken, Output, more

app = typer.Typer(help="The inventory of mail hosts.", no_args_is_help=True)

IMPORT_BATCH = 1000  # POST /inventory/import takes 1-1000 hosts


class Kind(StrEnum):
    dovecot = "dovecot"
    pymap = "pymap"
    proxy = "proxy"
    appliance = "appliance"


class OnConflict(StrEnum):
    fail = "fail"
    skip = "skip"
    replace = "replace"


KindOpt = Annotated[Kind | None, typer.Option("--kind", "-k", help="Host kind.",
                                              show_default=False)]
Tags = Annotated[list[str] | None, typer.Option(
    "--tag", "-t", help="key=value; repeat for more (all must match).", show_default=False)]
HostId = Annotated[str, typer.Argument(help="Host id.")]


def _health(host: dict[str, Any]) -> str:
    health = host.get("health") or {}
    return str(health.get("status") or health.get("state") or "")


def _render_list(data: dict[str, Any]) -> None:
    hosts = data.get("hosts") or []
    out.print(table(
        ["id", "kind", "endpoint", "tags", "maint", "health"],
        [[h.get("id"), h.get("kind"), h.get("endpoint"), h.get("tags") or {},
          "yes" if h.get("maintenance") else "", styled(_health(h))] for h in hosts]))
    note(f"{len(hosts)} host(s)")
    more(data)


MAX_PAGES = 1000  # --all: 100,000 hosts at most


@app.command("list", epilog="Example: mailfleet hosts list --kind dovecot --tag site=demo")
def list_(kind: KindOpt = None, tag: Tags = None, limit: Limit = None,
          next_token: NextToken = None,
          every: Annotated[bool, typer.Option(
              "--all", help="Follow every page: one answer with all hosts.")] = False,
          output: Output = None) -> None:
    """Hosts by kind and tags (a page; --all for every host)."""
    tags = parse_tags(tag)
    params: dict[str, Any] = {"tag": [f"{k}:{v}" for k, v in tags.items()]}
    if kind:
        params["kind"] = kind.value
    if limit:
        params["limit"] = limit
    if next_token:
        params["next_token"] = next_token
    client = STATE.client()
    answer = client.get("/hosts", params=params)
    for _ in range(MAX_PAGES):
        if not (every and answer.get("next_token")):
            break
        page = client.get("/hosts", params={**params, "next_token": answer["next_token"]})
        answer = {**page, "hosts": [*answer["hosts"], *(page.get("hosts") or [])]}
    emit(answer, STATE.fmt(output), _render_list)


@app.command("show", epilog="Example: mailfleet hosts show proxy-1 -o yaml")
def show(host_id: HostId, output: Output = None) -> None:
    """One host with its last health sweep."""
    answer = STATE.client().get(f"/hosts/{host_id}")

    def render(host: dict[str, Any]) -> None:
        shown = {k: v for k, v in host.items() if k != "health"}
        out.print(details(shown))
        if host.get("health"):
            out.print("[bold]health[/]")
            out.print(details(host["health"]))

    emit(answer, STATE.fmt(output), render)


def _credentials(items: list[str] | None) -> dict[str, str] | None:
    """`--credential api_key` asks (hidden); `api_key=@file` reads a file; `api_key=-` stdin."""
    if not items:
        return None
    creds: dict[str, str] = {}
    for item in items:
        field, sep, value = item.partition("=")
        field = field.strip()
        if field not in ("api_key", "password", "token"):
            raise CliError(f"--credential: {field!r} is api_key, password or token")
        if not sep:
            if not sys.stdin.isatty():
                raise CliError(f"--credential {field}: give {field}=@FILE or {field}=- when "
                               "stdin is not a terminal")
            value = typer.prompt(f"{field} (hidden)", hide_input=True)
        elif value == "-":
            value = sys.stdin.readline().rstrip("\n")
        elif value.startswith("@"):
            try:
                value = Path(value[1:]).expanduser().read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise CliError(f"--credential {field}: cannot read {value[1:]} "
                               f"({exc.strerror})") from None
        creds[field] = value
    return creds


def _tls(pin: str | None, verify: bool | None, ca_file: Path | None) -> dict[str, Any] | None:
    tls: dict[str, Any] = {}
    if pin:
        tls["pin_sha256"] = pin
    if verify is not None:
        tls["verify"] = verify
    if ca_file:
        try:
            tls["ca_pem"] = ca_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"--tls-ca-file: cannot read {ca_file} ({exc.strerror})") from None
    return tls or None


Credential = Annotated[list[str] | None, typer.Option(
    "--credential", help="api_key, password or token: asked for hidden; FIELD=@FILE reads a "
                         "file, FIELD=- reads stdin. Never echoed.", show_default=False)]
Secret = Annotated[str | None, typer.Option(
    "--credentials-secret", help="Name or ARN of an existing Secrets Manager secret.",
    show_default=False)]
Pin = Annotated[str | None, typer.Option("--tls-pin", help="Certificate SHA-256 (hex).",
                                         show_default=False)]
Verify = Annotated[bool | None, typer.Option(
    "--tls-verify/--no-tls-verify", help="Verify TLS (default yes; no is audited).",
    show_default=False)]
CaFile = Annotated[Path | None, typer.Option("--tls-ca-file", help="PEM CA file for this host.",
                                             show_default=False)]
HostConcurrency = Annotated[int | None, typer.Option(
    "--max-concurrency", help="Parallel requests to this host (1-256).", show_default=False)]
Maintenance = Annotated[bool | None, typer.Option(
    "--maintenance/--no-maintenance", help="Keep out of tag-targeted jobs and cutovers.",
    show_default=False)]


@app.command("add", epilog="Example: mailfleet hosts add dc-3 --kind dovecot --endpoint "
                           "http://10.0.0.3:8080 --credential api_key --tag site=fra1")
def add(
    host_id: HostId,
    kind: Annotated[Kind, typer.Option("--kind", "-k", help="Host kind.")],
    endpoint: Annotated[str, typer.Option("--endpoint", "-e", help="Base URL of its admin API.")],
    credential: Credential = None,
    credentials_secret: Secret = None,
    tag: Tags = None,
    tls_pin: Pin = None,
    tls_verify: Verify = None,
    tls_ca_file: CaFile = None,
    max_concurrency: HostConcurrency = None,
    maintenance: Maintenance = None,
    output: Output = None,
) -> None:
    """Register a host (credentials go to Secrets Manager, never shown again)."""
    body: dict[str, Any] = {"id": host_id, "kind": kind.value, "endpoint": endpoint}
    creds = _credentials(credential)
    if creds:
        body["credentials"] = creds
    if credentials_secret:
        body["credentials_secret"] = credentials_secret
    if tag:
        body["tags"] = parse_tags(tag)
    tls = _tls(tls_pin, tls_verify, tls_ca_file)
    if tls:
        body["tls"] = tls
    if max_concurrency is not None:
        body["max_concurrency"] = max_concurrency
    if maintenance is not None:
        body["maintenance"] = maintenance
    answer = STATE.client().post("/hosts", body)
    emit(answer, STATE.fmt(output), lambda h: out.print(details(h)))


@app.command("edit", epilog="Example: mailfleet hosts edit dc-1 --maintenance "
                            "--set-tag rack=r12 --unset-tag old")
def edit(
    host_id: HostId,
    endpoint: Annotated[str | None, typer.Option("--endpoint", "-e", help="New base URL.",
                                                 show_default=False)] = None,
    credential: Credential = None,
    credentials_secret: Secret = None,
    tag: Annotated[list[str] | None, typer.Option(
        "--tag", "-t", help="Replace all tags with these key=value.", show_default=False)] = None,
    set_tag: Annotated[list[str] | None, typer.Option(
        "--set-tag", help="Add or change one tag, key=value.", show_default=False)] = None,
    unset_tag: Annotated[list[str] | None, typer.Option(
        "--unset-tag", help="Remove one tag by key.", show_default=False)] = None,
    tls_pin: Pin = None,
    tls_verify: Verify = None,
    tls_ca_file: CaFile = None,
    max_concurrency: HostConcurrency = None,
    maintenance: Maintenance = None,
    output: Output = None,
) -> None:
    """Change a host (PATCH /hosts/{id}); only what is given changes."""
    client = STATE.client()
    body: dict[str, Any] = {}
    if endpoint:
        body["endpoint"] = endpoint
    creds = _credentials(credential)
    if creds:
        body["credentials"] = creds
    if credentials_secret:
        body["credentials_secret"] = credentials_secret
    if tag is not None and (set_tag or unset_tag):
        raise CliError("--tag replaces every tag: use it alone, or --set-tag/--unset-tag")
    if tag is not None:
        body["tags"] = parse_tags(tag)
    elif set_tag or unset_tag:
        tags = dict(client.get(f"/hosts/{host_id}").get("tags") or {})
        tags.update(parse_tags(set_tag, "--set-tag"))
        for key in unset_tag or []:
            tags.pop(key, None)
        body["tags"] = tags
    tls = _tls(tls_pin, tls_verify, tls_ca_file)
    if tls:
        body["tls"] = tls
    if max_concurrency is not None:
        body["max_concurrency"] = max_concurrency
    if maintenance is not None:
        body["maintenance"] = maintenance
    if not body:
        raise CliError("nothing to change: give at least one option (see --help)")
    answer = client.patch(f"/hosts/{host_id}", body)
    emit(answer, STATE.fmt(output), lambda h: out.print(details(h)))


@app.command("remove", epilog="Example: mailfleet hosts remove dc-3 --yes")
def remove(
    host_id: HostId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    output: Output = None,
) -> None:
    """Remove a host (and the secret mailfleet made for it). The API answers 204: nothing
    on stdout in any format, the exit code says it was done."""
    if not yes:
        if not sys.stdin.isatty():
            raise CliError("removing a host needs --yes when stdin is not a terminal")
        typer.confirm(f"Remove host {host_id}?", abort=True)
    STATE.client().delete(f"/hosts/{host_id}")
    note(f"host {host_id} removed")


@app.command("actions", epilog="Example: mailfleet hosts actions dc-1")
def actions(host_id: HostId, output: Output = None) -> None:
    """What a host accepts: each action's class, least role and parameters."""
    answer = STATE.client().get(f"/hosts/{host_id}/actions")

    def render(data: dict[str, Any]) -> None:
        if data.get("error"):
            note(f"[yellow]the host did not answer ({cell_text(data['error'])})[/]")
        listed = data.get("actions") or []
        # class and least role where the API gives them; older answers say only `mutating`.
        with_class = any("class" in a for a in listed)
        with_role = any("role" in a or "least_role" in a for a in listed)
        columns = ["action", "class" if with_class else "changes", *(["role"] if with_role
                                                                     else []),
                   "params (* required)", "description"]
        rows = []
        for action in listed:
            params = action.get("parameters") or action.get("params") or {}
            names = list((params.get("properties") or {}).keys()) if isinstance(params, dict) \
                else [str(p) for p in params]
            required = set(params.get("required") or []) if isinstance(params, dict) else set()
            kind = action.get("class") if with_class else ("yes" if action.get("mutating")
                                                           else "")
            row = [action.get("name") or action.get("action"), kind]
            if with_role:
                row.append(action.get("role") or action.get("least_role") or "")
            row += [" ".join(f"{n}*" if n in required else n for n in names),
                    cell_text(action.get("description"), 60)]
            rows.append(row)
        out.print(table(columns, rows))
        note(f"{len(rows)} action(s) on {data.get('host')} ({data.get('kind')}, "
             f"from {data.get('source')})")

    emit(answer, STATE.fmt(output), render)


@app.command("import", epilog="Example: mailfleet hosts import fleet.csv --on-conflict skip",
             help="Register many hosts from a CSV or YAML file (POST /inventory/import); "
                  "each host is taken or refused on its own.\n\n" + CSV_HELP)
def import_(
    path: Annotated[Path, typer.Argument(help="CSV, YAML or JSON file.", exists=True,
                                         dir_okay=False, readable=True)],
    on_conflict: Annotated[OnConflict | None, typer.Option(
        "--on-conflict", help="An id that exists: fail (listed), skip, or replace. "
                              "Default: the file's, else fail.", show_default=False)] = None,
    file_format: Annotated[str | None, typer.Option(
        "--format", help="csv or yaml (default: by the file's extension).",
        show_default=False)] = None,
    output: Output = None,
) -> None:
    if file_format not in (None, "csv", "yaml", "json"):
        raise CliError(f"--format: {file_format!r} is csv or yaml")
    hosts, from_file = read_inventory(path, "yaml" if file_format == "json" else file_format)
    policy = on_conflict.value if on_conflict else (from_file or "fail")
    client = STATE.client()
    total: dict[str, Any] = {"created": 0, "replaced": 0, "skipped": 0, "failed": []}
    answers = []
    for start in range(0, len(hosts), IMPORT_BATCH):
        batch = hosts[start:start + IMPORT_BATCH]
        answer = client.post("/inventory/import", {"hosts": batch, "on_conflict": policy})
        answers.append(answer)
        for key in ("created", "replaced", "skipped"):
            value = answer.get(key, 0)
            total[key] += len(value) if isinstance(value, list) else int(value or 0)
        total["failed"].extend(answer.get("failed") or [])
    # One batch: the API's answer as it is; several: their sums, failures together.
    result = answers[0] if len(answers) == 1 else total

    def render(data: dict[str, Any]) -> None:
        failed = data.get("failed") or []
        counts = {k: (len(v) if isinstance(v, list) else v) for k, v in data.items()
                  if k in ("created", "replaced", "skipped")}
        out.print(f"{len(hosts)} host(s) in {path.name}: " +
                  ", ".join(f"{v} {k}" for k, v in counts.items()) + f", {len(failed)} failed")
        if failed:
            out.print(table(["id", "field", "reason"],
                            [[f.get("id"), f.get("field"), f.get("reason")] for f in failed]))

    emit(result, STATE.fmt(output), render)
    failed = len(total["failed"])
    if failed:
        raise typer.Exit(int(Exit.FAILED if failed == len(hosts) else Exit.PARTIAL))


