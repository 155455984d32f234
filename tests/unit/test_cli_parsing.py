"""The command line's parsing of --param, --tag, N/N%, inventory files and profiles."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from mailfleet_cli.client import _message, _reason
from mailfleet_cli.config import Profile, ProfileStore, resolve
from mailfleet_cli.errors import CliError, Exit
from mailfleet_cli.parsing import (
    coerce_params,
    count_or_percent,
    hosts_from_csv,
    hosts_from_yaml,
    parse_params,
    parse_tags,
    read_inventory,
)
from mailfleet_cli.watch import job_progress


# ---------------------------------------------------------------------- --param
def test_params_strings_json_and_repeats() -> None:
    params = parse_params(["user=alice", "limit:=5", "flags:=[\"a\",\"b\"]", "mask=alice",
                           "mask=bob", "expr=a=b"])
    assert params == {"user": "alice", "limit": 5, "flags": ["a", "b"],
                      "mask": ["alice", "bob"], "expr": "a=b"}


def test_params_json_object_then_params_override(tmp_path: Path) -> None:
    assert parse_params(["b=2"], '{"a": 1, "b": 1}') == {"a": 1, "b": "2"}
    file = tmp_path / "p.json"
    file.write_text('{"identifier": "alice@example.org"}')
    assert parse_params(None, f"@{file}") == {"identifier": "alice@example.org"}


@pytest.mark.parametrize("bad, says", [
    (["novalue"], "is not key=value"),
    (["=x"], "is not key=value"),
    (["n:={oops"], "is not JSON"),
])
def test_params_refused_with_the_reason(bad: list[str], says: str) -> None:
    with pytest.raises(CliError, match=says) as caught:
        parse_params(bad)
    assert caught.value.code == Exit.USAGE


def test_params_json_must_be_an_object() -> None:
    with pytest.raises(CliError, match="must be a JSON object"):
        parse_params(None, "[1, 2]")
    with pytest.raises(CliError, match="not JSON"):
        parse_params(None, "{nope")


def test_coerce_params_to_the_action_schema() -> None:
    schema = {"properties": {"mask": {"type": "array"}, "n": {"type": "integer"},
                             "force": {"type": "boolean"}, "ratio": {"type": "number"}}}
    coerced = coerce_params({"mask": "alice", "n": "3", "force": "yes", "ratio": "0.5",
                             "other": "x", "already": [1]}, schema)
    assert coerced == {"mask": ["alice"], "n": 3, "force": True, "ratio": 0.5, "other": "x",
                       "already": [1]}
    # Values that do not fit stay as given: the API names the field and why.
    assert coerce_params({"n": "many"}, schema) == {"n": "many"}
    assert coerce_params({"mask": "a"}, None) == {"mask": "a"}


# ---------------------------------------------------------------------- --tag, N%
def test_tags() -> None:
    assert parse_tags(["site=demo", "role:edge", "empty="]) == {
        "site": "demo", "role": "edge", "empty": ""}
    with pytest.raises(CliError, match="is not key=value"):
        parse_tags(["site"])
    with pytest.raises(CliError, match="given twice"):
        parse_tags(["site=a", "site=b"])


@pytest.mark.parametrize("raw, minimum, expected", [
    ("10", 1, 10), ("10%", 1, "10%"), (" 100% ", 1, "100%"), ("0", 0, 0), (None, 1, None),
])
def test_count_or_percent(raw: str | None, minimum: int, expected: object) -> None:
    assert count_or_percent("--max-concurrency", raw, minimum) == expected


@pytest.mark.parametrize("raw, says", [
    ("0", "at least 1"), ("0%", "between 1% and 100%"), ("150%", "between 1% and 100%"),
    ("ten", "not a number"), ("-3", "not a number"), ("5.5", "not a number"),
])
def test_count_or_percent_refused(raw: str, says: str) -> None:
    with pytest.raises(CliError, match=says):
        count_or_percent("--max-concurrency", raw, minimum=1)


# ---------------------------------------------------------------------- inventory files
CSV = """id,kind,endpoint,tags,api_key,tls_pin_sha256,max_concurrency,maintenance,tag.rack
dc-9,dovecot,http://127.0.0.1:8080,site=fra1;role=backend,k3y,,8,no,r1
px-9,proxy,https://127.0.0.1:8443,site=fra1,,AB:CD,,yes,
"""


def test_csv_inventory() -> None:
    hosts = hosts_from_csv(CSV)
    assert hosts[0] == {"id": "dc-9", "kind": "dovecot", "endpoint": "http://127.0.0.1:8080",
                        "tags": {"site": "fra1", "role": "backend", "rack": "r1"},
                        "credentials": {"api_key": "k3y"}, "max_concurrency": 8,
                        "maintenance": False}
    assert hosts[1] == {"id": "px-9", "kind": "proxy", "endpoint": "https://127.0.0.1:8443",
                        "tags": {"site": "fra1"}, "tls": {"pin_sha256": "AB:CD"},
                        "maintenance": True}


@pytest.mark.parametrize("text, says", [
    ("id,kind,endpoint,colour\na,dovecot,http://x,red\n", "line 1: unknown column 'colour'"),
    ("id,kind\na,dovecot\n", "column 'endpoint' is required"),
    ("id,kind,endpoint,maintenance\na,dovecot,http://x,perhaps\n",
     "line 2: maintenance: 'perhaps' is not true or false"),
    ("id,kind,endpoint\na,dovecot,http://x,extra\n", "line 2: more cells than columns"),
    ("id,kind,endpoint\n,dovecot,http://x\n", "line 2: id is empty"),
    ("id,kind,endpoint\n", "no hosts"),
    ("", "empty file"),
])
def test_csv_inventory_refused_with_line_and_reason(text: str, says: str) -> None:
    with pytest.raises(CliError, match=says):
        hosts_from_csv(text, "f.csv")


def test_yaml_inventory_list_or_mapping(tmp_path: Path) -> None:
    listed, policy = hosts_from_yaml(
        "- id: a\n  kind: dovecot\n  endpoint: http://x\n  tags: {site: 1}\n")
    assert listed[0]["tags"] == {"site": "1"} and policy is None
    file = tmp_path / "fleet.yaml"
    file.write_text("on_conflict: skip\nhosts:\n  - {id: a, kind: proxy, endpoint: https://x,"
                    " credentials: {token: t}}\n")
    hosts, policy = read_inventory(file)
    assert policy == "skip" and hosts[0]["credentials"] == {"token": "t"}
    with pytest.raises(CliError, match=r"<yaml> line \d+: expected"):
        hosts_from_yaml("hosts:\n  - [unclosed\n")
    with pytest.raises(CliError, match=r"hosts\[0\]: endpoint is required"):
        hosts_from_yaml("- {id: a, kind: dovecot}\n")
    with pytest.raises(CliError, match="expected a list of hosts"):
        hosts_from_yaml("just: text\n")


# ---------------------------------------------------------------------- profiles
def test_profiles_file_is_0600_and_resolution_order(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cfg" / "profiles.ini"
    monkeypatch.setenv("MAILFLEET_CONFIG", str(path))
    for var in ("MAILFLEET_URL", "MAILFLEET_TOKEN", "MAILFLEET_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    store = ProfileStore()
    store.put(Profile("lab", "http://127.0.0.1:1", "tok-lab"))
    store.put(Profile("prod", "https://mf.example", "tok-prod"))
    store.use("lab")
    store.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    lab = resolve(None, None, None)
    assert (lab.url, lab.token, lab.url_from) == ("http://127.0.0.1:1", "tok-lab", "profile lab")
    prod = resolve(None, None, "prod")
    assert prod.token == "tok-prod"
    monkeypatch.setenv("MAILFLEET_TOKEN", "tok-env")
    assert resolve(None, None, "prod").token == "tok-env"
    flags = resolve("http://127.0.0.1:2/", "tok-flag", "prod")
    assert (flags.url, flags.token) == ("http://127.0.0.1:2", "tok-flag")
    with pytest.raises(CliError, match="no profile named 'nope'") as caught:
        resolve(None, None, "nope")
    assert caught.value.code == Exit.NOT_FOUND
    store = ProfileStore()
    store.remove("lab")
    store.save()
    assert ProfileStore().current is None and ProfileStore().names() == ["prod"]


def test_no_url_anywhere_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    monkeypatch.setenv("MAILFLEET_CONFIG", str(tmp_path / "none.ini"))
    for var in ("MAILFLEET_URL", "MAILFLEET_TOKEN", "MAILFLEET_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(CliError, match="no API URL") as caught:
        resolve(None, None, None)
    assert caught.value.code == Exit.USAGE
    with pytest.raises(CliError, match="must start with http"):
        resolve("127.0.0.1:3000", None, None)


# ---------------------------------------------------------------------- API answers
def test_error_message_names_every_field() -> None:
    body = {"message": "id: bad", "errors": [{"field": "id", "reason": "bad"},
                                             {"field": "kind", "reason": "unknown"}]}
    assert _message(body) == "id: bad; kind: unknown"
    assert _message({"message": "job 'x' not found"}) == "job 'x' not found"
    assert _message(None) == ""
    refused = ("HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded (Caused by "
               "NewConnectionError('<x>: Failed to establish a new connection: [Errno 111] "
               "Connection refused'))")
    assert _reason(Exception(refused)) == "connection refused"


def test_progress_counts_from_results() -> None:
    view = {"status": "RUNNING", "total": 10, "max_concurrency": "20%", "results": [
        {"status": "SUCCEEDED"}, {"status": "FAILED"}, {"status": "TIMED_OUT"},
        {"status": "SKIPPED"}] + [{"status": "PENDING"}] * 6}
    assert job_progress(view) == {"total": 10, "done": 4, "succeeded": 1, "failed": 2,
                                  "skipped": 1, "running": 2}
    json.dumps(view)


# ---------------------------------------------------------------------- every command
def _leaves(command: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    children = getattr(command, "commands", None)
    if not children:
        return [(path, command)]
    found = []
    for name, child in children.items():
        found += _leaves(child, (*path, name))
    return found


def test_every_command_has_an_example_and_takes_output() -> None:
    import typer.main

    from mailfleet_cli.main import app

    leaves = _leaves(typer.main.get_command(app))
    assert len(leaves) >= 40
    for path, command in leaves:
        assert "Example" in (getattr(command, "epilog", "") or ""), path
        options = {opt for param in command.params for opt in getattr(param, "opts", [])}
        assert {"-o", "--output"} <= options, path
