"""The `mailfleet` command line, run as operators and scripts run it: the installed script
in a subprocess, against the local stack (API Gateway front, moto, Step Functions) with
real Dovecot hosts and proxy doubles. What it prints is checked against the API itself."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailfleet_local import lambda_bridge
from mailfleet_local.peers.dovecot import DovecotInstance
from mailfleet_local.peers.proxy import ProxyDouble
from tests.fixtures.dovecot import host_body

pytestmark = pytest.mark.dovecot

MAILFLEET = Path(sys.executable).with_name("mailfleet")
ADMIN = object()


def uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def cli_env(local_api: Any, tmp_path: Path) -> Callable[..., dict[str, str]]:
    """cli_env(token=..., url=..., env=...) -> the environment a `mailfleet` run gets."""
    assert MAILFLEET.exists(), f"{MAILFLEET} missing: the package's [project.scripts] entry"
    local_api.ensure_deployed()

    def make(token: Any = ADMIN, url: str | None = None, env: dict[str, str] | None = None
             ) -> dict[str, str]:
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "MAILFLEET_CONFIG": str(tmp_path / "config" / "profiles.ini"),
            "MAILFLEET_URL": url or local_api.url,
            "NO_PROXY": "127.0.0.1,localhost",
            "COLUMNS": "200",
            **(env or {}),
        }
        if token is ADMIN:
            environ["MAILFLEET_TOKEN"] = local_api.admin_token
        elif token is not None:
            environ["MAILFLEET_TOKEN"] = token
        return environ

    return make


@pytest.fixture
def run(cli_env: Callable[..., dict[str, str]]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """run(*args, token=..., stdin=..., url=..., env=...) -> the finished `mailfleet` process."""

    def call(*args: str, token: Any = ADMIN, stdin: str | None = None, url: str | None = None,
             env: dict[str, str] | None = None, timeout: float = 180
             ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(MAILFLEET), *args], env=cli_env(token, url, env),
                              input=stdin, capture_output=True, text=True, timeout=timeout,
                              check=False)

    return call


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """Errors are one line on stderr, nothing on stdout, never a traceback."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("mailfleet: ")
    assert "Traceback" not in done.stderr and done.stdout == ""
    return lines[0]


@pytest.fixture
def fleet(local_api: Any, dovecot_hosts: list[DovecotInstance]) -> dict[str, Any]:
    """The three real Dovecot hosts registered under a fresh site tag."""
    site = uid("site")
    ids = []
    for n, inst in enumerate(dovecot_hosts):
        host_id = uid(f"dc{n}")
        answer = local_api.request("POST", "/hosts", json=host_body(
            inst, host_id, tags={"site": site, "role": "backend"}))
        assert answer.status_code == 201, answer.text
        ids.append(host_id)
    return {"site": site, "ids": ids, "instances": dovecot_hosts}


def test_the_installed_command_and_its_help(run: Callable[..., Any]) -> None:
    done = run("--help")
    assert done.returncode == 0
    for words in ("Exit codes", "3 partial", "6 server unreachable", "jobs", "cutovers",
                  "--install-completion"):
        assert words in done.stdout
    for command in (["jobs", "run"], ["cutovers", "watch"], ["hosts", "import"],
                    ["audit", "verify"], ["profile", "add"], ["tokens", "create"]):
        helped = run(*command, "--help")
        assert helped.returncode == 0, helped.stderr
        assert "Example" in helped.stdout, command
    # Shell completion, as bash asks for it.
    completion = subprocess.run(
        [str(MAILFLEET)], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "_MAILFLEET_COMPLETE": "complete_bash",
             "COMP_WORDS": "mailfleet cutovers r", "COMP_CWORD": "2"})
    assert completion.stdout.split() == ["rollback"], completion


def test_a_job_by_tag_with_progress_then_results(run: Callable[..., Any], local_api: Any,
                                                 fleet: dict[str, Any]) -> None:
    done = run("jobs", "run", "statsDump", "--kind", "dovecot", "--tag",
               f"site={fleet['site']}", "--max-concurrency", "50%", "--wait")
    assert done.returncode == 0, done.stderr
    # Progress on stderr (plain lines when it is not a terminal), ending with every host done.
    assert "RUNNING" in done.stderr or "PENDING" in done.stderr
    assert "SUCCEEDED: 3/3 hosts done (3 succeeded, 0 failed, 0 skipped" in done.stderr
    # The results on stdout, one row per host.
    for host_id in fleet["ids"]:
        row = next(line for line in done.stdout.splitlines() if line.startswith(host_id))
        assert "SUCCEEDED" in row
    job_id = next(line.split()[1] for line in done.stdout.splitlines()
                  if line.startswith("job_id"))
    api_view = local_api.request("GET", f"/jobs/{job_id}").json()
    assert api_view["status"] == "SUCCEEDED" and api_view["counts"] == {"SUCCEEDED": 3}

    # A script's JSON: exactly the API's answer, and no progress mixed into stdout.
    scripted = run("jobs", "run", "who", "--kind", "dovecot", "--tag",
                   f"site={fleet['site']}", "--wait", "-o", "json")
    assert scripted.returncode == 0, scripted.stderr
    job = json.loads(scripted.stdout)
    assert job["status"] == "SUCCEEDED"
    assert sorted(r["host"] for r in job["results"]) == sorted(fleet["ids"])
    assert job == local_api.request("GET", f"/jobs/{job['job_id']}").json()
    shown = run("jobs", "show", job["job_id"], "-o", "yaml")
    assert yaml.safe_load(shown.stdout) == job


def test_param_fitted_to_the_action_and_a_failing_host(run: Callable[..., Any],
                                                       local_api: Any,
                                                       fleet: dict[str, Any]) -> None:
    # `mask=carol` is sent as the list doveadm's kick takes; carol has no session: exit 68.
    kicked = run("jobs", "run", "kick", "--host", fleet["ids"][0], "--param", "mask=carol",
                 "--wait", "-o", "json")
    assert kicked.returncode == 1, kicked.stderr  # FAILED
    job = json.loads(kicked.stdout)
    assert job["params"]["mask"] == ["carol"]
    assert job["results"][0]["error"]["code"] == 68

    dead = uid("dead")
    body = host_body(fleet["instances"][0], dead, tags={"site": fleet["site"]})
    body["endpoint"] = "http://127.0.0.1:9"  # nothing listens on the discard port
    assert local_api.request("POST", "/hosts", json=body).status_code == 201
    partial = run("jobs", "run", "who", "--kind", "dovecot", "--tag", f"site={fleet['site']}",
                  "--timeout", "5", "--wait")
    assert partial.returncode == 3, partial.stderr  # PARTIAL
    assert "4/4 hosts done (3 succeeded, 1 failed" in partial.stderr
    rows = [line for line in partial.stdout.splitlines()
            if line.split()[:1] and line.split()[0] in (*fleet["ids"], dead)]
    # Failures first, with their error type and message.
    assert rows[0].startswith(dead) and "FAILED" in rows[0] and "connection" in rows[0]
    assert all("SUCCEEDED" in row for row in rows[1:]) and len(rows) == 4

    only_dead = run("-q", "jobs", "run", "who", "-H", dead, "--timeout", "5", "--wait")
    assert only_dead.returncode == 1 and only_dead.stderr == ""


def test_import_a_small_csv_inventory(run: Callable[..., Any], local_api: Any,
                                      dovecot_hosts: list[DovecotInstance],
                                      tmp_path: Path) -> None:
    probe = local_api.request("POST", "/inventory/import", json={"hosts": []})
    if probe.status_code in (403, 404) and "inventory" not in probe.text.lower():
        pytest.skip(f"POST /inventory/import is not in this tree yet ({probe.status_code})")
    site = uid("imp")
    good = [uid("imp-a"), uid("imp-b")]
    bad = uid("imp-bad")
    inst = dovecot_hosts[0]
    csv_file = tmp_path / "fleet.csv"
    csv_file.write_text(
        "id,kind,endpoint,tags,api_key\n"
        f"{good[0]},dovecot,{inst.endpoint},site={site};role=backend,{inst.api_key}\n"
        f"{good[1]},dovecot,{inst.endpoint},site={site},{inst.api_key}\n"
        # A proxy must be https: refused alone, the others are taken.
        f"{bad},proxy,http://127.0.0.1:1,site={site},\n")
    done = run("hosts", "import", str(csv_file), "-o", "json")
    assert done.returncode == 3, done.stderr  # partial: one host refused
    answer = json.loads(done.stdout)
    created = answer["created"]
    assert (len(created) if isinstance(created, list) else created) == 2
    assert [f["id"] for f in answer["failed"]] == [bad]
    assert answer["failed"][0]["field"] and answer["failed"][0]["reason"]

    listed = json.loads(run("hosts", "list", "--tag", f"site={site}", "-o", "json").stdout)
    assert sorted(h["id"] for h in listed["hosts"]) == sorted(good)
    assert inst.api_key not in json.dumps(listed)
    again = run("hosts", "import", str(csv_file), "--on-conflict", "skip")
    assert again.returncode == 3 and "2 skipped" in again.stdout

    broken = tmp_path / "broken.csv"
    broken.write_text("id,kind,endpoint,colour\na,dovecot,http://x,red\n")
    refused = run("hosts", "import", str(broken))
    assert refused.returncode == 2
    assert "line 1: unknown column 'colour'" in one_line_error(refused)


@pytest.fixture
def proxies(local_api: Any, proxy_double: Callable[..., ProxyDouble]
            ) -> Iterator[dict[str, Any]]:
    tag = uid("edge")
    accounts = [f"user{n}@{tag}.example" for n in range(3)]
    doubles = [proxy_double(destinations=("legacy", "stalwart"), default_destination="legacy",
                            mappings=dict.fromkeys(accounts, "legacy")) for _ in range(2)]
    for n, double in enumerate(doubles):
        answer = local_api.request("POST", "/hosts", json={
            "id": f"{tag}-{n}", "kind": "proxy", "endpoint": double.endpoint,
            "credentials": {"token": double.token},
            "tls": {"pin_sha256": double.fingerprint_sha256}, "tags": {"fleet": tag}})
        assert answer.status_code == 201, answer.text
    with lambda_bridge.instant_waits():
        yield {"tag": tag, "accounts": accounts, "doubles": doubles}


def test_a_cutover_watched_to_the_end_and_rolled_back(run: Callable[..., Any], local_api: Any,
                                                      proxies: dict[str, Any]) -> None:
    accounts = proxies["accounts"]
    done = run("cutovers", "start", *accounts, "--destination", "stalwart", "--proxy-tag",
               f"fleet={proxies['tag']}", "--delay", "1", "--wait")
    assert done.returncode == 0, done.stderr
    # The watch said, per account, its status and the step it was on.
    for account in accounts:
        assert f"{account}: DONE, step verify" in done.stderr
    assert "SUCCEEDED" in done.stderr
    for double in proxies["doubles"]:
        assert all(double.mapping_of(a) == "stalwart" for a in accounts)
    cutover_id = next(line.split()[1] for line in done.stdout.splitlines()
                      if line.startswith("cutover "))
    listed = json.loads(run("cutovers", "list", "-o", "json").stdout)
    assert cutover_id in [c["cutover_id"] for c in listed["cutovers"]]

    back = run("cutovers", "rollback", cutover_id, "--wait", "-o", "json")
    assert back.returncode == 0, back.stderr
    view = json.loads(back.stdout)
    assert view["status"] == "ROLLED_BACK"
    assert {a["status"] for a in view["accounts"]} == {"ROLLED_BACK"}
    assert f"{accounts[0]}: ROLLED_BACK" in back.stderr
    for double in proxies["doubles"]:
        assert all(double.mapping_of(a) == "legacy" for a in accounts)
    again = run("cutovers", "show", cutover_id, "-o", "json")
    assert json.loads(again.stdout) == local_api.request(
        "GET", f"/cutovers/{cutover_id}", params={"accounts_limit": 10000}).json()


def test_audit_list_and_verify(run: Callable[..., Any], fleet: dict[str, Any]) -> None:
    job = json.loads(run("jobs", "run", "who", "-H", fleet["ids"][0], "--wait",
                         "-o", "json").stdout)
    events = json.loads(run("audit", "list", "--job", job["job_id"], "-o", "json").stdout)
    assert sorted(e["action"] for e in events["events"]) == ["job.end", "job.start"]
    verified = run("audit", "verify")
    assert verified.returncode == 0 and "intact" in verified.stdout
    answer = json.loads(run("audit", "verify", "-o", "json").stdout)
    assert answer["ok"] is True and answer["checked"] >= 2


def test_scripts_json_is_the_api_answer(run: Callable[..., Any], local_api: Any,
                                        fleet: dict[str, Any]) -> None:
    done = run("hosts", "list", "--kind", "dovecot", "--tag", f"site={fleet['site']}",
               "-o", "json")
    assert done.returncode == 0 and done.stderr == ""
    assert json.loads(done.stdout) == local_api.request(
        "GET", "/hosts", params={"kind": "dovecot", "tag": f"site:{fleet['site']}"}).json()
    paged = json.loads(run("hosts", "list", "--tag", f"site={fleet['site']}", "--limit", "1",
                           "--all", "-o", "json").stdout)
    assert sorted(h["id"] for h in paged["hosts"]) == sorted(fleet["ids"])
    assert paged["next_token"] is None
    key = uid("key")
    first, again = (json.loads(run("jobs", "run", "who", "-H", fleet["ids"][0],
                                   "--idempotency-key", key, "-o", "json").stdout)
                    for _ in range(2))
    assert first["job_id"] == again["job_id"]  # the same key and body: one job
    me = json.loads(run("whoami", "-o", "json").stdout)
    assert me == {"principal": "bootstrap-admin", "role": "admin"}
    shown = json.loads(run("-o", "json", "hosts", "show", fleet["ids"][0]).stdout)
    assert shown["id"] == fleet["ids"][0] and "credentials" not in shown


def test_bad_input_wrong_token_and_unreachable(run: Callable[..., Any], local_api: Any,
                                               fleet: dict[str, Any]) -> None:
    wrong = run("whoami", token="mft_not_a_token")
    assert wrong.returncode == 4
    assert "401" in one_line_error(wrong) and "mft_not_a_token" not in wrong.stderr
    none = run("hosts", "list", token=None)
    assert none.returncode == 4 and "no token given" in one_line_error(none)

    bad_param = run("jobs", "run", "who", "-H", fleet["ids"][0], "--param", "bogus=1")
    assert bad_param.returncode == 2
    assert "params.bogus" in one_line_error(bad_param)
    bad_host = run("hosts", "add", "Bad Id!", "--kind", "dovecot", "--endpoint",
                   "http://127.0.0.1:1", "--credentials-secret", "x")
    assert bad_host.returncode == 2 and "id:" in one_line_error(bad_host)
    bad_limit = run("jobs", "run", "who", "-H", fleet["ids"][0], "--max-errors", "150%")
    assert bad_limit.returncode == 2 and "--max-errors" in one_line_error(bad_limit)
    usage = run("jobs", "run", "who", "--no-such-flag")
    assert usage.returncode == 2 and "--no-such-flag" in one_line_error(usage)

    missing = run("jobs", "show", "no-such-job")
    assert missing.returncode == 5 and "not found" in one_line_error(missing)
    exists = run("hosts", "add", fleet["ids"][0], "--kind", "dovecot", "--endpoint",
                 "http://127.0.0.1:1", "--credential", "api_key=-", stdin="k3y\n")
    assert exists.returncode == 7, exists.stderr

    viewer = local_api.request("POST", "/tokens", json={"role": "viewer",
                                                        "name": uid("ro")}).json()
    forbidden = run("jobs", "run", "who", "-H", fleet["ids"][0], token=viewer["token"])
    assert forbidden.returncode == 4 and "operator" in one_line_error(forbidden)
    assert viewer["token"] not in forbidden.stderr

    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    gone = run("whoami", url=f"http://127.0.0.1:{port}")
    assert gone.returncode == 6 and "cannot reach" in one_line_error(gone)


def test_profiles_keep_the_token_private(run: Callable[..., Any], local_api: Any,
                                         tmp_path: Path) -> None:
    added = run("profile", "add", "local", "--url", local_api.url, "--token-stdin", "--use",
                token=None, stdin=local_api.admin_token + "\n", env={"MAILFLEET_URL": ""})
    assert added.returncode == 0, added.stderr
    config = tmp_path / "config" / "profiles.ini"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    listed = run("profile", "list", token=None, env={"MAILFLEET_URL": ""})
    assert "local" in listed.stdout and local_api.url in listed.stdout
    me = run("whoami", token=None, env={"MAILFLEET_URL": ""})
    assert me.returncode == 0, me.stderr
    assert "bootstrap-admin" in me.stdout and "profile local" in me.stdout
    everything = listed.stdout + listed.stderr + me.stdout + me.stderr + added.stderr
    assert local_api.admin_token not in everything
    gone = run("profile", "remove", "local", token=None, env={"MAILFLEET_URL": ""})
    assert gone.returncode == 0
    unknown = run("-p", "local", "whoami", token=None, env={"MAILFLEET_URL": ""})
    assert unknown.returncode == 5 and "no profile named 'local'" in one_line_error(unknown)


def test_ctrl_c_stops_watching_not_the_job(run: Callable[..., Any],
                                           cli_env: Callable[..., dict[str, str]],
                                           local_api: Any, fleet: dict[str, Any]) -> None:
    import signal
    import socket

    # Hosts that accept connections and never answer: the job runs for a while.
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(50)
    try:
        # Hosts of 120 s one after another: the job cannot end before the test closes
        # the sink (then the host in flight fails at once), however slow the machine is.
        slow = [uid("slow") for _ in range(2)]
        for host_id in slow:
            body = host_body(fleet["instances"][0], host_id)
            body["endpoint"] = f"http://127.0.0.1:{sink.getsockname()[1]}"
            assert local_api.request("POST", "/hosts", json=body).status_code == 201
        started = run("jobs", "run", "who", *[a for h in slow for a in ("-H", h)],
                      "--max-concurrency", "1", "--timeout", "120", "-o", "json")
        assert started.returncode == 0, started.stderr
        job_id = json.loads(started.stdout)["job_id"]

        # Started as a shell without job control starts it (a script, `&`, CI): with
        # SIGINT ignored. The watch must still stop on it (it used to run to the end).
        watcher = subprocess.Popen(
            ["bash", "-c", 'trap "" INT; exec "$0" jobs watch "$1"', str(MAILFLEET), job_id],
            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert watcher.stderr is not None
            # The first progress line: the watch is under way, its Ctrl-C handler set.
            first = watcher.stderr.readline()
            assert f"job {job_id}" in first
            watcher.send_signal(signal.SIGINT)
            _, rest = watcher.communicate(timeout=30)
        finally:
            if watcher.poll() is None:
                watcher.kill()
        assert watcher.returncode == 130
        assert f"Resume with: mailfleet jobs watch {job_id}" in rest
        assert "Traceback" not in rest
        # The job itself goes on.
        assert local_api.request("GET", f"/jobs/{job_id}").json()["status"] == "RUNNING"

        assert run("jobs", "cancel", job_id).returncode == 0
        sink.close()  # the host in flight fails now
        resumed = run("jobs", "watch", job_id)
        # The watch resumes and ends with the job. CANCELLED if the engine saw the cancel
        # before the second host started; it reads it at most every 0.5 s (CachedCheck),
        # and that host then fails at once on the closed sink: FAILED, exit 1 as well.
        assert resumed.returncode == 1, resumed.stderr
        assert "CANCELLED" in resumed.stdout or "2/2 hosts done" in resumed.stderr
    finally:
        sink.close()


def test_destructive_confirmation_and_approval(run: Callable[..., Any], local_api: Any,
                                               dovecot_hosts: list[DovecotInstance]) -> None:
    site = uid("purge")
    ids = [uid(f"pg{n}") for n in range(11)]  # above the stack's approval threshold (10)
    for host_id in ids:
        answer = local_api.request("POST", "/hosts", json=host_body(
            dovecot_hosts[0], host_id, tags={"site": site}))
        assert answer.status_code == 201, answer.text
    actions = local_api.request("GET", f"/hosts/{ids[0]}/actions").json()["actions"]
    if not any("class" in a for a in actions):
        pytest.skip("the action policy (classes, confirm, approvals) is not in this tree yet")

    target = ("--kind", "dovecot", "--tag", f"site={site}", "--param", "user=alice")
    unconfirmed = run("jobs", "run", "purge", *target)
    assert unconfirmed.returncode == 2
    assert "confirm" in one_line_error(unconfirmed) and "purge@11" in unconfirmed.stderr

    started = run("jobs", "run", "purge", *target, "--confirm", "purge@11", "-o", "json")
    assert started.returncode == 0, started.stderr
    job = json.loads(started.stdout)
    assert job["status"] == "AWAITING_APPROVAL"
    assert f"mailfleet jobs approve {job['job_id']}" in started.stderr

    own = run("jobs", "approve", job["job_id"])
    assert own.returncode == 4 and "403" in one_line_error(own)
    second = local_api.request("POST", "/tokens", json={"role": "admin",
                                                        "name": uid("approver")}).json()
    approved = run("jobs", "approve", job["job_id"], token=second["token"])
    assert approved.returncode == 0, approved.stderr
    done = run("jobs", "watch", job["job_id"], "-o", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"] == {"SUCCEEDED": 11}


def test_live_progress_on_a_terminal(cli_env: Callable[..., dict[str, str]],
                                     fleet: dict[str, Any]) -> None:
    """With stderr on a terminal the progress is Rich's live bar; stdout stays the data."""
    import pty
    import select

    controller, terminal = pty.openpty()
    try:
        env = {**cli_env(), "TERM": "xterm-256color"}
        proc = subprocess.Popen(
            [str(MAILFLEET), "jobs", "run", "who", "--kind", "dovecot", "--tag",
             f"site={fleet['site']}", "--wait", "-o", "json"],
            env=env, stdout=subprocess.PIPE, stderr=terminal, text=True)
        os.close(terminal)
        seen = b""
        for _ in range(600):  # at most ~60 s
            ready, _, _ = select.select([controller], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the command closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        stdout, _ = proc.communicate(timeout=60)
    finally:
        os.close(controller)
    assert proc.returncode == 0
    assert json.loads(stdout)["status"] == "SUCCEEDED"
    screen = seen.decode(errors="replace")
    assert "\x1b[" in screen  # drawn live, with escape codes, not plain lines
    assert "3/3" in screen and "3 ok" in screen and "ETA" in screen
    assert "hosts done" not in screen  # the plain-line form is for logs only
