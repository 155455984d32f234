"""Turning operators' words into API bodies: --param, --tag, N or N%, inventory files.

Everything here raises CliError (exit 2) naming the option, the value and why.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from mailfleet_cli.errors import CliError

_COUNT_OR_PERCENT = re.compile(r"^\s*(\d+)\s*(%?)\s*$")
_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}


# ---------------------------------------------------------------------- params
def parse_params(items: list[str] | None, params_json: str | None = None) -> dict[str, Any]:
    """`--params-json` (an object, or @file) first, then each `--param`:
    `key=value` is a string, `key:=value` is JSON (numbers, true, lists, objects),
    and a key given twice makes a list (`--param mask=alice --param mask=bob`)."""
    params: dict[str, Any] = _json_object("--params-json", params_json) if params_json else {}
    given: dict[str, list[Any]] = {}
    for item in items or []:
        key, value = _param(item)
        given.setdefault(key, []).append(value)
    for key, values in given.items():
        if len(values) == 1:
            params[key] = values[0]
            continue
        merged: list[Any] = []
        for value in values:
            merged.extend(value if isinstance(value, list) else [value])
        params[key] = merged
    return params


def _param(item: str) -> tuple[str, Any]:
    equals = item.find("=")
    if equals <= 0:
        raise CliError(f"--param: {item!r} is not key=value (or key:=<json>)")
    value: Any
    if item[equals - 1] == ":":
        key, raw = item[: equals - 1], item[equals + 1:]
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise CliError(f"--param {key}: {raw!r} is not JSON ({exc.msg})") from None
    else:
        key, value = item[:equals], item[equals + 1:]
    key = key.strip()
    if not key:
        raise CliError(f"--param: {item!r} has no key")
    return key, value


def _json_object(option: str, raw: str) -> dict[str, Any]:
    text = raw
    if raw.startswith("@"):
        try:
            text = Path(raw[1:]).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"{option}: cannot read {raw[1:]} ({exc.strerror})") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CliError(f"{option}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
                       ) from None
    if not isinstance(value, dict):
        raise CliError(f"{option}: must be a JSON object, not {type(value).__name__}")
    return value


def coerce_params(params: dict[str, Any], schema: dict[str, Any] | None) -> dict[str, Any]:
    """Strings from `key=value` made into what the action's parameter schema asks for
    (an array, an integer, a boolean). Values given as JSON are left as they are."""
    properties = (schema or {}).get("properties") or {}
    out = dict(params)
    for key, value in params.items():
        spec = properties.get(key)
        if not isinstance(spec, dict):
            continue
        kind = spec.get("type")
        if kind == "array" and isinstance(value, str):
            out[key] = [value]
        elif kind == "integer" and isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            out[key] = int(value)
        elif kind == "number" and isinstance(value, str):
            try:
                out[key] = float(value)
            except ValueError:
                pass
        elif kind == "boolean" and isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            out[key] = value.lower() in _TRUE
    return out


# ---------------------------------------------------------------------- tags, limits
def parse_tags(items: list[str] | None, option: str = "--tag") -> dict[str, str]:
    """`key=value` (or `key:value`, as GET /hosts?tag= takes it), repeatable: all must match."""
    tags: dict[str, str] = {}
    for item in items or []:
        match = re.match(r"^([^=:]+)[=:](.*)$", item)
        if not match or not match.group(1).strip():
            raise CliError(f"{option}: {item!r} is not key=value")
        key, value = match.group(1).strip(), match.group(2).strip()
        if key in tags and tags[key] != value:
            raise CliError(f"{option}: {key} given twice ({tags[key]!r} and {value!r})")
        tags[key] = value
    return tags


def count_or_percent(option: str, raw: str | None, minimum: int = 0) -> int | str | None:
    """`10` is 10 hosts, `10%` is a tenth of the targets (sent as the string "10%")."""
    if raw is None:
        return None
    match = _COUNT_OR_PERCENT.match(raw)
    if not match:
        raise CliError(f"{option}: {raw!r} is not a number of hosts or a percentage like 10%")
    number = int(match.group(1))
    if match.group(2):
        if not 1 <= number <= 100:
            raise CliError(f"{option}: {raw!r}: a percentage is between 1% and 100%")
        return f"{number}%"
    if number < minimum:
        raise CliError(f"{option}: {raw!r}: at least {minimum}")
    return number


def list_params(status: str | None, statuses: list[str], limit: int | None,
                next_token: str | None) -> dict[str, Any]:
    """The query of a list command: a known status, the page size, the page to go on from."""
    params: dict[str, Any] = {}
    if status:
        if status.upper() not in statuses:
            raise CliError(f"--status: {status!r} is one of {', '.join(statuses)}")
        params["status"] = status.upper()
    if limit:
        params["limit"] = limit
    if next_token:
        params["next_token"] = next_token
    return params


def parse_bool(field: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise CliError(f"{field}: {raw!r} is not true or false")


# ---------------------------------------------------------------------- inventory files
CSV_HELP = """\
CSV: a header row, then one host a row. Columns: id, kind, endpoint (required);
tags ("site=fra1;role=backend") or one tag.<key> column per tag; credentials_secret, or the
secret's own field (api_key, password or token); tls_pin_sha256, tls_verify, tls_ca_pem;
max_concurrency; maintenance. Empty cells are left out.
YAML (or JSON): a list of POST /hosts bodies, or {"hosts": [...], "on_conflict": ...}."""

_CREDENTIAL_FIELDS = ("api_key", "password", "token")
_ALIASES = {
    "pin_sha256": "tls_pin_sha256",
    "tls.pin_sha256": "tls_pin_sha256",
    "tls.verify": "tls_verify",
    "tls.ca_pem": "tls_ca_pem",
    **{f"credentials.{f}": f for f in _CREDENTIAL_FIELDS},
}
_COLUMNS = {"id", "kind", "endpoint", "tags", "credentials_secret", "tls_pin_sha256",
            "tls_verify", "tls_ca_pem", "max_concurrency", "maintenance", *_CREDENTIAL_FIELDS}


def read_inventory(path: Path, fmt: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """The host bodies in a CSV or YAML file, and its on_conflict if the file says one."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise CliError(f"{path}: cannot read ({exc.strerror})") from None
    fmt = fmt or ("csv" if path.suffix.lower() in (".csv", ".tsv") else "yaml")
    if fmt == "csv":
        return hosts_from_csv(text, str(path)), None
    return hosts_from_yaml(text, str(path))


def hosts_from_csv(text: str, name: str = "<csv>") -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text), skipinitialspace=True)
    header = [(_ALIASES.get(c.strip().lower(), c.strip().lower())) for c in reader.fieldnames or []]
    if not header:
        raise CliError(f"{name}: empty file (a header row is needed: id,kind,endpoint,...)")
    unknown = [c for c in header if c not in _COLUMNS and not c.startswith(("tag.", "tag:"))]
    if unknown:
        raise CliError(f"{name} line 1: unknown column {unknown[0]!r} "
                       f"(known: {', '.join(sorted(_COLUMNS))}, tag.<key>)")
    missing = [c for c in ("id", "kind", "endpoint") if c not in header]
    if missing:
        raise CliError(f"{name} line 1: column {missing[0]!r} is required")
    reader.fieldnames = header
    hosts = []
    for row in reader:
        line = reader.line_num
        if None in row:
            raise CliError(f"{name} line {line}: more cells than columns")
        cells = {k: (v or "").strip() for k, v in row.items()}
        if not any(cells.values()):
            continue
        hosts.append(_host_from_row(cells, f"{name} line {line}"))
    if not hosts:
        raise CliError(f"{name}: no hosts (only a header row)")
    return hosts


def _host_from_row(cells: dict[str, str], where: str) -> dict[str, Any]:
    host: dict[str, Any] = {}
    tags: dict[str, str] = {}
    credentials: dict[str, str] = {}
    tls: dict[str, Any] = {}
    for column, value in cells.items():
        if not value:
            continue
        try:
            if column in ("id", "kind", "endpoint", "credentials_secret"):
                host[column] = value
            elif column == "tags":
                tags.update(parse_tags(re.split(r"[;|]", value), "tags"))
            elif column.startswith(("tag.", "tag:")):
                tags[column[4:]] = value
            elif column in _CREDENTIAL_FIELDS:
                credentials[column] = value
            elif column == "tls_pin_sha256":
                tls["pin_sha256"] = value
            elif column == "tls_verify":
                tls["verify"] = parse_bool("tls_verify", value)
            elif column == "tls_ca_pem":
                tls["ca_pem"] = value.replace("\\n", "\n")
            elif column == "max_concurrency":
                if not value.isdigit():
                    raise CliError(f"max_concurrency: {value!r} is not a whole number")
                host["max_concurrency"] = int(value)
            elif column == "maintenance":
                host["maintenance"] = parse_bool("maintenance", value)
        except CliError as exc:
            raise CliError(f"{where}: {exc.message}") from None
    for required in ("id", "kind", "endpoint"):
        if required not in host:
            raise CliError(f"{where}: {required} is empty")
    if tags:
        host["tags"] = tags
    if credentials:
        host["credentials"] = credentials
    if tls:
        host["tls"] = tls
    return host


def hosts_from_yaml(text: str, name: str = "<yaml>") -> tuple[list[dict[str, Any]], str | None]:
    import yaml  # only here: every TAB of shell completion starts this program

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not YAML"
        raise CliError(f"{name}{where}: {problem}") from None
    on_conflict = None
    if isinstance(data, dict):
        on_conflict = data.get("on_conflict")
        data = data.get("hosts")
    if not isinstance(data, list) or not data:
        raise CliError(f"{name}: expected a list of hosts (or a mapping with a hosts list)")
    for n, host in enumerate(data):
        if not isinstance(host, dict):
            raise CliError(f"{name}: hosts[{n}] is not a mapping")
        for required in ("id", "kind", "endpoint"):
            if not host.get(required):
                raise CliError(f"{name}: hosts[{n}]: {required} is required")
        if "tags" in host and isinstance(host["tags"], dict):
            host["tags"] = {str(k): str(v) for k, v in host["tags"].items()}
    return data, on_conflict
