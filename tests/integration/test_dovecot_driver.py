"""The dovecot driver against real Dovecot 2.3 instances on loopback.

Raw requests (a plain socket, so every header is ours) show what the host does per
/work/shared/contracts/doveadm.md; driver calls show how mailfleet reports it.
"""

from __future__ import annotations

import base64
import imaplib
import json
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mailfleet.drivers.base import Deadline, DriverContext
from mailfleet.drivers.dovecot import (
    ONE_OF,
    REQUIRED,
    DovecotDriver,
    check_commands,
    forget_commands,
    parse_reply,
    validate_against,
)
from mailfleet.drivers.http import forget_sessions, session_for
from mailfleet.errors import ErrorType, HostError, InvalidParams, Unsupported
from mailfleet.models.hosts import Credentials, Host
from mailfleet_local.peers.dovecot import DovecotInstance
from tests.conftest import DOVEADM_COMMANDS
from tests.fixtures.dovecot import driver_for, host_for
from tests.waiting import wait_until, wait_until_steady

pytestmark = pytest.mark.dovecot

# A copy of ../shared/contracts/doveadm-2.3.19-commands.json, kept in the repo.
CONTRACT_COMMANDS = DOVEADM_COMMANDS
DROPPED = "DROPPED"
NO_ANSWER = "NO_ANSWER"


# -- helpers ---------------------------------------------------------------------------


def raw_post(
    inst: DovecotInstance,
    body: bytes | str,
    *,
    auth: str | None = None,
    extra_headers: str = "",
    timeout: float = 5.0,
) -> tuple[int, str, bytes] | str:
    """POST /doveadm/v1 over a bare socket: (status, content type, body), DROPPED when
    the host closed without a response, NO_ANSWER when nothing came before `timeout`."""
    data = body.encode() if isinstance(body, str) else body
    head = (
        "POST /doveadm/v1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {auth or inst.auth_header()}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        f"{extra_headers}\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", inst.doveadm_port), timeout=timeout) as sock:
        sock.sendall(head + data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            return NO_ANSWER
        except ConnectionResetError:
            return DROPPED
    if not received:
        return DROPPED
    header, _, payload = received.partition(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    ctype = next(
        (v.split(":", 1)[1].strip() for v in lines[1:] if v.lower().startswith("content-type:")), ""
    )
    return status, ctype, payload


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_command(
    inst: DovecotInstance, command: str, params: Any, **kw: Any
) -> tuple[int, str, bytes] | str:
    return raw_post(inst, json.dumps([[command, params, "t1"]]), **kw)


def log_mark(inst: DovecotInstance) -> int:
    """Where the log ends once earlier requests' lines (written asynchronously) are in."""
    return wait_until_steady(lambda: len(inst.log_text()), quiet=0.15)


def posts_since(
    inst: DovecotInstance, mark: int, status: int | None = None, expect: int = 1
) -> int:
    """POSTs the host logged since `mark` (its access log is written asynchronously)."""
    needle = '"POST /doveadm/v1 HTTP/1.1"' + (f" {status}" if status else "")
    def count() -> int:
        return inst.log_text()[mark:].count(needle)

    # Those expected, then no more for a while (a retry would show as one more).
    wait_until(lambda: count() >= expect, 2.0, what=f"{expect} POSTs logged")
    return wait_until_steady(count, quiet=0.2)


def run(
    driver: DovecotDriver,
    action: str,
    params: dict[str, Any] | None = None,
    seconds: float = 10.0,
    *,
    validate: bool = True,
) -> Any:
    deadline = Deadline.after(seconds)
    if validate:
        params = driver.validate(action, params or {}, deadline)
    return driver.perform(action, params or {}, deadline)


def run_error(
    driver: DovecotDriver, action: str, params: dict[str, Any] | None = None, seconds: float = 10.0
) -> tuple[HostError, Deadline, float]:
    """perform() without validation, expecting a HostError."""
    deadline = Deadline.after(seconds)
    began = time.monotonic()
    with pytest.raises(HostError) as info:
        driver.perform(action, params or {}, deadline)
    return info.value, deadline, time.monotonic() - began


def imap_closed(conn: imaplib.IMAP4, within: float = 3.0) -> bool:
    """True once the server has ended this IMAP session (a kick is asynchronous)."""
    until = time.monotonic() + within
    while time.monotonic() < until:
        try:
            conn.noop()
        except (imaplib.IMAP4.abort, OSError):
            return True
        time.sleep(0.05)
    return False


def usernames(who: list[dict[str, Any]]) -> set[str]:
    return {row["username"] for row in who}


# -- the command list ----------------------------------------------------------------------


def test_command_list_is_the_contracts(dovecot_host: DovecotInstance) -> None:
    forget_commands()
    driver = driver_for(dovecot_host, host_id="cmdlist")
    commands = driver.fetch_commands(Deadline.after(10))
    contract = check_commands(json.loads(CONTRACT_COMMANDS.read_text()))
    assert {c["command"] for c in commands} == {c["command"] for c in contract}
    assert len(commands) == 96
    actions = driver.actions()
    assert actions["who"].mutating is False and actions["kick"].mutating is True
    assert actions["who"].parameters_schema()["properties"]["mask"]["type"] == "array"


def test_seeded_command_list_is_used_without_asking_the_host() -> None:
    # The port is closed: any request would fail, so success proves no request was made.
    seeded = json.loads(CONTRACT_COMMANDS.read_text())
    host = Host(id="seeded", kind="dovecot", endpoint=f"http://127.0.0.1:{closed_port()}")
    driver = DovecotDriver(
        host, Credentials(api_key="k"), DriverContext(extras={"doveadm_commands": seeded})
    )
    assert driver.validate("kick", {"mask": ["alice"]}) == {"mask": ["alice"]}
    assert "directorMove" in driver.actions()


# -- sessions: who and kick ----------------------------------------------------------------


def test_who_sees_a_real_imap_session(dovecot_hosts: list[DovecotInstance]) -> None:
    inst = dovecot_hosts[0]
    conn = inst.imap("alice")
    try:
        conn.select("INBOX")
        who = run(driver_for(inst), "who")
        assert "alice" in usernames(who)
        row = next(r for r in who if r["username"] == "alice")
        assert row["service"] == "imap" and row["ip"] == "127.0.0.1"
        only_bob = run(driver_for(inst), "who", {"mask": ["bob"]})
        assert "alice" not in usernames(only_bob)
    finally:
        conn.logout()


def test_kick_ends_the_session_and_spares_other_users(
    dovecot_hosts: list[DovecotInstance],
) -> None:
    inst = dovecot_hosts[1]
    alice, bob = inst.imap("alice"), inst.imap("bob")
    try:
        driver = driver_for(inst, auth="password")
        assert run(driver, "kick", {"mask": ["alice"]}) == [{"result": "alice"}]
        assert imap_closed(alice), "alice's IMAP connection should have been closed"
        assert bob.noop()[0] == "OK"
        assert usernames(run(driver, "who")) == {"bob"}
    finally:
        bob.logout()
        try:
            alice.shutdown()
        except OSError:
            pass


def test_who_is_always_sent_with_separate_connections(
    dovecot_hosts: list[DovecotInstance],
) -> None:
    inst = dovecot_hosts[2]
    conns = [inst.imap("alice"), inst.imap("bob"), inst.imap("carol")]
    try:
        # The contract's bug: without separateConnections several users give a reply
        # entry of more than three items. Raw, we see it; the parser reports it cleanly.
        reply = raw_command(inst, "who", {})
        assert isinstance(reply, tuple) and reply[0] == 200
        assert len(json.loads(reply[2])[0]) > 3
        with pytest.raises(HostError) as info:
            parse_reply("who", "t1", *reply)
        assert info.value.type is ErrorType.COMMAND and "malformed" in info.value.message
        # The driver forces separateConnections, even when asked not to.
        driver = driver_for(inst)
        assert usernames(driver.perform("who", {}, Deadline.after(10))) == {"alice", "bob", "carol"}
        params = driver.validate("who", {"separateConnections": False})
        assert params["separateConnections"] is True
    finally:
        for c in conns:
            c.logout()


# -- everyday commands ---------------------------------------------------------------------


def test_reload_on_every_host(dovecot_hosts: list[DovecotInstance]) -> None:
    for inst in dovecot_hosts:
        mark = log_mark(inst)
        assert run(driver_for(inst), "reload") == []
        wait_until(lambda i=inst, m=mark: "SIGHUP received - reloading" in i.log_text()[m:],
                   3, what="the master reloaded")
        assert inst.running


def test_stats_dump_shows_the_imap_metric(dovecot_host: DovecotInstance) -> None:
    conn = dovecot_host.imap("carol")
    try:
        conn.select("INBOX")
        conn.noop()
    finally:
        conn.logout()
    stats = run(driver_for(dovecot_host), "statsDump")
    assert isinstance(stats, list)
    names = {row["metric_name"] for row in stats}
    assert "imap_command" in names
    total = next(r for r in stats if r["metric_name"] == "imap_command")
    assert total["count"] >= 2 and {"avg", "%95"} <= set(total)


def test_quota_get(dovecot_host: DovecotInstance) -> None:
    rows = run(driver_for(dovecot_host), "quotaGet", {"user": "bob"})
    storage = next(r for r in rows if r["type"] == "STORAGE")
    assert storage["root"] == "User quota"
    assert int(storage["limit"]) > 0 and storage["value"].isdigit()


def test_dict_set_and_get(dovecot_host: DovecotInstance) -> None:
    driver = driver_for(dovecot_host)
    params = {"user": "alice", "dictUri": "proxy::kv", "key": "shared/colour"}
    assert run(driver, "dictSet", {**params, "value": "teal"}) == []
    assert run(driver, "dictGet", params) == [{"value": "teal"}]


# -- doveadm failures: exit codes, unknown commands and parameters --------------------------


def test_exit_code_67_unknown_user(dovecot_host: DovecotInstance) -> None:
    err, deadline, _ = run_error(driver_for(dovecot_host), "quotaGet", {"user": "nobody"})
    assert (err.type, err.code, err.retryable) == (ErrorType.EXIT_CODE, 67, False)
    assert "user does not exist" in err.message
    assert err.to_dict()["type"] == "exitCode"
    assert deadline.attempts == 1


def test_exit_code_68_no_session_and_missing_key(dovecot_host: DovecotInstance) -> None:
    driver = driver_for(dovecot_host)
    err, deadline, _ = run_error(driver, "kick", {"mask": ["nosession"]})
    assert (err.type, err.code) == (ErrorType.EXIT_CODE, 68) and deadline.attempts == 1
    assert "not found" in err.message
    err, _, _ = run_error(
        driver, "dictGet", {"user": "alice", "dictUri": "proxy::kv", "key": "shared/none"}
    )
    assert (err.type, err.code) == (ErrorType.EXIT_CODE, 68)


def test_unknown_command(dovecot_host: DovecotInstance) -> None:
    driver = driver_for(dovecot_host)
    with pytest.raises(Unsupported) as info:
        driver.validate("WHO", {})
    assert "case-sensitive" in info.value.message and "'who'" in info.value.message
    # Sent anyway, the host answers unknownMethod.
    err, _, _ = run_error(driver, "noSuchCommand", {})
    assert (err.type, err.code) == (ErrorType.UNSUPPORTED, "unknownMethod")


def test_unknown_parameter(dovecot_host: DovecotInstance) -> None:
    driver = driver_for(dovecot_host)
    with pytest.raises(InvalidParams) as info:
        driver.validate("who", {"bogus": 1})
    assert info.value.field == "bogus" and info.value.type is ErrorType.INVALID_PARAMS
    # The host's own answer, raw and through the driver.
    reply = raw_command(dovecot_host, "who", {"bogus": 1})
    assert isinstance(reply, tuple) and reply[0] == 200
    assert json.loads(reply[2])[0][1]["type"] == "invalidRequest"
    err, _, _ = run_error(driver, "who", {"bogus": 1})
    assert (err.type, err.code) == (ErrorType.INVALID_PARAMS, "invalidRequest")


def test_wrong_parameter_type_is_rejected_before_sending(dovecot_host: DovecotInstance) -> None:
    driver = driver_for(dovecot_host)
    with pytest.raises(InvalidParams) as info:
        driver.validate("kick", {"mask": "alice"})
    assert info.value.field == "mask" and "array of strings" in info.value.message


def test_malformed_bodies_get_the_hosts_400_text(dovecot_host: DovecotInstance) -> None:
    cases = {
        "not json": "JSON parse error",
        "{}": "Request must be a JSON array",
        '[["who",[],"t1"]]': "Parameters must be contained in a JSON object",
        '[["who",{},1]]': "Command ID must be a string",
    }
    for body, text in cases.items():
        reply = raw_post(dovecot_host, body)
        assert isinstance(reply, tuple)
        status, ctype, payload = reply
        assert status == 400 and ctype.startswith("text/plain") and text in payload.decode()
        with pytest.raises(HostError) as info:
            parse_reply("who", "t1", status, ctype, payload)
        assert info.value.type is ErrorType.INVALID_PARAMS and text in info.value.message


def test_command_outside_allowed_commands(
    dovecot_factory: Callable[..., DovecotInstance],
) -> None:
    inst = dovecot_factory(allowed_commands=["who", "kick"])
    driver = driver_for(inst)
    assert run(driver, "who") == []
    err, deadline, _ = run_error(driver, "reload")
    assert (err.type, err.code, err.retryable) == (ErrorType.AUTH, "unAuthorized", False)
    assert deadline.attempts == 1


# -- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["api_key", "password"])
def test_wrong_credentials_fail_once(dovecot_host: DovecotInstance, auth: str) -> None:
    host, _ = host_for(dovecot_host, f"wrongcreds-{auth}")
    bad = Credentials(**{auth: "not-the-secret"})
    driver = DovecotDriver(host, bad)
    mark = log_mark(dovecot_host)
    err, deadline, elapsed = run_error(driver, "who", {})
    assert (err.type, err.code, err.retryable) == (ErrorType.AUTH, 401, False)
    assert deadline.attempts == 1 and elapsed < 2
    assert "not-the-secret" not in str(err) and "not-the-secret" not in repr(err.to_dict())
    assert posts_since(dovecot_host, mark, 401) == 1
    # The command list request is refused the same way.
    with pytest.raises(HostError) as info:
        driver.fetch_commands(Deadline.after(5))
    assert info.value.type is ErrorType.AUTH


def test_right_credentials_in_both_modes(dovecot_host: DovecotInstance) -> None:
    for auth in ("api_key", "password"):
        assert run(driver_for(dovecot_host, auth=auth), "penalty") == []


def test_missing_credentials_is_our_error() -> None:
    # A closed port: had anything been sent, this would be a connection error.
    host = Host(id="nocreds", kind="dovecot", endpoint=f"http://127.0.0.1:{closed_port()}")
    err, deadline, _ = run_error(DovecotDriver(host, Credentials(token="x")), "who")
    assert err.type is ErrorType.CREDENTIALS and deadline.attempts == 0
    assert "api_key or password" in err.message


def test_failed_auth_with_connection_close_is_never_answered(
    dovecot_host: DovecotInstance,
) -> None:
    wrong = "Basic " + base64.b64encode(b"doveadm:wrong").decode()
    body = '[["who",{},"t1"]]'
    # Without Connection: close, the 401 comes at once ...
    reply = raw_post(dovecot_host, body, auth=wrong)
    assert isinstance(reply, tuple) and reply[0] == 401
    # ... with it, nothing ever comes (the contract's hang).
    began = time.monotonic()
    assert (
        raw_post(dovecot_host, body, auth=wrong, extra_headers="Connection: close\r\n", timeout=1.0)
        == NO_ANSWER
    )
    assert time.monotonic() - began >= 1.0
    # Correct credentials with Connection: close are answered normally.
    ok = raw_post(dovecot_host, body, extra_headers="Connection: close\r\n")
    assert isinstance(ok, tuple) and ok[0] == 200


def test_a_hang_is_reported_as_a_timeout_within_the_deadline(
    dovecot_host: DovecotInstance,
) -> None:
    # Make our pooled session send Connection: close (as urllib would) with a wrong key:
    # the host never answers, and the driver must give up at the deadline.
    host, _ = host_for(dovecot_host, "hang-on-close")
    session_for(host).headers["Connection"] = "close"
    try:
        driver = DovecotDriver(host, Credentials(api_key="wrong"))
        err, deadline, elapsed = run_error(driver, "who", {}, seconds=1.5)
        assert err.type is ErrorType.TIMEOUT
        assert "credentials" in err.message and "Connection: close" in err.message
        assert 1.3 <= elapsed < 2.5 and deadline.attempts == 1
    finally:
        forget_sessions("hang-on-close")


# -- transport failures ----------------------------------------------------------------------


def test_a_crashing_request_is_a_connection_error_and_not_retried(
    dovecot_host: DovecotInstance,
) -> None:
    driver = driver_for(dovecot_host)
    with pytest.raises(InvalidParams) as info:
        driver.validate("mailboxList", {})
    assert info.value.field == "user"
    mark = log_mark(dovecot_host)
    err, deadline, _ = run_error(driver, "mailboxList", {})  # bypassing validation
    assert err.type is ErrorType.CONNECTION and not err.retryable
    assert "closed the connection without a response" in err.message
    assert deadline.attempts == 1
    assert posts_since(dovecot_host, mark, expect=0) == 0  # the worker died before logging
    assert "Fatal" in dovecot_host.log_text()[mark:]


def test_a_host_that_is_down_refuses_the_connection() -> None:
    host = Host(id="down", kind="dovecot", endpoint=f"http://127.0.0.1:{closed_port()}")
    err, deadline, elapsed = run_error(DovecotDriver(host, Credentials(api_key="k")), "who")
    assert err.type is ErrorType.CONNECTION and "refused" in err.message
    assert deadline.attempts == 1 and elapsed < 1


# -- exitCode 75 is retried --------------------------------------------------------------------


def test_temporary_failure_is_retried_with_backoff(dovecot_host: DovecotInstance) -> None:
    driver = driver_for(dovecot_host)
    params = {"user": "alice", "dictUri": "proxy::locked", "key": "shared/x", "value": "1"}
    mark = log_mark(dovecot_host)
    err, deadline, elapsed = run_error(driver, "dictSet", params, seconds=10)
    assert (err.type, err.code, err.retryable) == (ErrorType.EXIT_CODE, 75, True)
    assert "temporary failure" in err.message
    assert deadline.attempts == 4
    assert elapsed >= 0.2 + 0.4 + 0.8
    assert posts_since(dovecot_host, mark, 200, expect=4) == 4


def test_retries_stop_at_the_deadline(dovecot_host: DovecotInstance) -> None:
    driver = driver_for(dovecot_host)
    params = {"user": "alice", "dictUri": "proxy::locked", "key": "shared/x", "value": "1"}
    err, deadline, elapsed = run_error(driver, "dictSet", params, seconds=0.8)
    assert err.code == 75 and 2 <= deadline.attempts < 4
    assert elapsed < 0.9


# -- inputs that crash the worker are refused before sending --------------------------------


def crash_samples(folder: Path) -> dict[str, dict[str, Any]]:
    """For each rule of the driver's crash table, params the host accepts (answers)."""
    fs = {"fsDriver": "posix", "fsArgs": ""}
    (folder / "fs-in").write_text("hello")
    u = {"user": "alice"}
    everything = ["mailbox", "INBOX", "all"]
    return {
        "mailboxList": {**u},
        "quotaGet": {**u},
        "authCacheFlush": {"user": []},
        "fetch": {**u, "field": ["uid flags"], "query": ["all"]},
        "search": {**u, "query": ["all"]},
        "mailboxStatus": {**u, "field": ["messages"], "mailboxMask": ["INBOX"]},
        "mailboxCreate": {**u, "mailbox": ["Tmp1"]},
        "mailboxDelete": {**u, "mailbox": ["NoSuchBox"]},
        "mailboxRename": {**u, "mailbox": "NoSuchBox", "newName": "Other"},
        "mailboxSubscribe": {**u, "mailbox": ["INBOX"]},
        "mailboxUnsubscribe": {**u, "mailbox": ["Tmp1"]},
        "mailboxUpdate": {**u, "mailbox": "INBOX"},
        "mailboxPath": {**u, "mailbox": ["INBOX"]},
        "mailboxMetadataSet": {**u, "mailbox": "INBOX", "key": "/private/comment", "value": "v"},
        "mailboxMetadataGet": {**u, "mailbox": "INBOX", "key": "/private/comment"},
        "mailboxMetadataUnset": {**u, "mailbox": "INBOX", "key": "/private/comment"},
        "mailboxMetadataList": {**u, "mailbox": "INBOX"},
        "mailboxMutf7": {"name": ["abc"]},
        "index": {**u, "mailboxMask": "INBOX"},
        "forceResync": {**u, "mailboxMask": "INBOX"},
        "expunge": {**u, "query": ["mailbox", "NoSuchBox", "all"]},
        "altmove": {**u, "query": ["all"]},
        "deduplicate": {**u, "query": ["all"]},
        "mailboxCacheRemove": {**u, "query": ["all"]},
        "flagsAdd": {**u, "flag": ["\\Seen"], "query": ["all"]},
        "flagsRemove": {**u, "flag": ["\\Seen"], "query": ["all"]},
        "flagsReplace": {**u, "flag": ["\\Seen"], "query": ["all"]},
        "copy": {**u, "destinationMailbox": "Tmp1", "query": everything},
        "move": {**u, "destinationMailbox": "Tmp1", "query": everything},
        "import": {
            **u,
            "sourceLocation": f"maildir:{folder}/none",
            "destParentMailbox": "",
            "query": ["all"],
        },
        "backup": {**u, "destination": [f"maildir:{folder}/backup"]},
        "sync": {**u, "destination": [f"maildir:{folder}/sync"]},
        "fsPut": {**fs, "inputPath": str(folder / "fs-in"), "path": str(folder / "fs-a")},
        "fsCopy": {
            **fs,
            "sourcePath": str(folder / "fs-a"),
            "destinationPath": str(folder / "fs-b"),
        },
        "fsGet": {**fs, "path": str(folder / "fs-a")},
        "fsStat": {**fs, "path": str(folder / "fs-a")},
        "fsMetadata": {**fs, "path": str(folder / "fs-a")},
        "fsIter": {**fs, "path": str(folder)},
        "fsIterDirs": {**fs, "path": str(folder)},
        "fsDelete": {**fs, "path": [str(folder / "fs-b")]},
        "instanceRemove": {"name": "no-such-instance"},
        "proxyKick": {"user": []},
    }


def test_every_crash_rule_is_real(dovecot_factory: Callable[..., DovecotInstance]) -> None:
    """Each input the driver's crash table refuses really crashes a 2.3.19 worker, and
    each sample it accepts is answered: the table neither misses nor over-blocks."""
    inst = dovecot_factory()
    commands = driver_for(inst).commands(Deadline.after(10))
    with_selector = {
        c["command"] for c in commands if any(p["name"] == "allUsers" for p in c["parameters"])
    }
    samples = crash_samples(inst.folder)
    assert set(REQUIRED) - set(samples) == {"directorKick"}  # that one needs a director
    problems: list[str] = []

    def rejected(command: str, params: dict[str, Any], field: str | None) -> None:
        try:
            validate_against(commands, command, params)
            problems.append(f"{command} {params}: validation accepted it")
        except InvalidParams as err:
            if err.field != field:
                problems.append(f"{command} {params}: field {err.field}, not {field}")
        if raw_command(inst, command, params) != DROPPED:
            problems.append(f"{command} {params}: the host did not crash on it")

    for command, sample in samples.items():
        validate_against(commands, command, sample)
        reply = raw_command(inst, command, sample)
        if not (isinstance(reply, tuple) and reply[0] == 200):
            problems.append(f"{command} {sample}: accepted sample got {reply!r}")
        for entry in REQUIRED.get(command, ()):
            param = entry.rstrip("+")
            rejected(command, {k: v for k, v in sample.items() if k != param}, param)
            if entry.endswith("+"):
                rejected(command, {**sample, param: type(sample[param])()}, param)
        if command in with_selector:
            rejected(command, {k: v for k, v in sample.items() if k != "user"}, "user")
        if command in ONE_OF:
            names = ONE_OF[command]
            rejected(command, {k: v for k, v in sample.items() if k not in names}, names[0])
    # Values the parsers reject, and a command never to send over HTTP.
    rejected("fetch", {"user": "alice", "field": ["uid nosuch"], "query": ["all"]}, "field")
    rejected(
        "mailboxStatus", {"user": "alice", "field": ["bogus"], "mailboxMask": ["INBOX"]}, "field"
    )
    rejected("batch", {"user": "alice", "separator": ":", "args": ["who"]}, None)
    rejected("dsyncServer", {"user": "alice"}, None)
    assert problems == []


# -- director ----------------------------------------------------------------------------------


def test_director_routes_moves_kicks_and_flushes(
    dovecot_hosts: list[DovecotInstance],
    dovecot_factory: Callable[..., DovecotInstance],
) -> None:
    backend = dovecot_hosts[2]
    director = dovecot_factory(
        director=True,
        director_backends=["127.0.0.1", "127.0.0.2"],
        director_backend_port=backend.imap_port,
    )
    driver = driver_for(director)
    status = run(driver, "directorStatus")
    assert {r["mail server ip"] for r in status} == {"127.0.0.1", "127.0.0.2"}
    assert all(r["state"] == "up" for r in status)

    # A login through the director reaches the backend it maps alice to.
    assert run(driver, "directorMove", {"user": "alice", "host": "127.0.0.1"}) == []
    conn = director.imap("alice")
    try:
        assert conn.noop()[0] == "OK"
        assert "alice" in usernames(run(driver_for(backend), "who"))
        assert [r["username"] for r in run(driver, "proxyList")] == ["alice"]
        # directorKick ends the proxied session.
        assert run(driver, "directorKick", {"user": "alice"}) == []
        assert imap_closed(conn)
    finally:
        try:
            conn.shutdown()
        except OSError:
            pass

    # Move alice to the other backend (a cutover), then drain that backend.
    assert run(driver, "directorMove", {"user": "alice", "host": "127.0.0.2"}) == []
    [mapped] = run(driver, "directorStatus", {"user": "alice"})
    assert mapped["status"] == "127.0.0.2"
    assert {"user": "alice", "mail server ip": "127.0.0.2"}.items() <= run(driver, "directorMap")[
        0
    ].items()
    # Draining 127.0.0.2 redistributes its users: alice goes back to her hashed backend.
    assert run(driver, "directorFlush", {"host": "127.0.0.2"}) == []
    [mapped] = run(driver, "directorStatus", {"user": "alice"})
    assert mapped["status"] == mapped["hashed"] == "127.0.0.1"
    users = {r["mail server ip"]: r["users"] for r in run(driver, "directorStatus")}
    assert users["127.0.0.2"] == "0"
    assert run(driver, "directorRingStatus")[0]["status"] == "ring synced"

    # Unknown backend: a clean exit code; a kick without a user is refused before sending.
    err, _, _ = run_error(driver, "directorMove", {"user": "bob", "host": "10.9.9.9"})
    assert (err.type, err.code) == (ErrorType.EXIT_CODE, 68)
    with pytest.raises(InvalidParams):
        driver.validate("directorKick", {})
    assert raw_command(director, "directorKick", {}) == DROPPED


def test_no_doveadm_credentials_configured_is_500(
    dovecot_factory: Callable[..., DovecotInstance],
) -> None:
    inst = dovecot_factory(api_key="", doveadm_password="")
    host, _ = host_for(inst, "unconfigured")
    err, deadline, _ = run_error(DovecotDriver(host, Credentials(password="x")), "who")
    assert (err.type, err.code) == (ErrorType.COMMAND, 500) and deadline.attempts == 1


# -- the test peer itself --------------------------------------------------------------------


def test_parallel_starts_get_distinct_ports_and_retry_a_clash(
    dovecot_factory: Callable[..., DovecotInstance],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mailfleet_local.peers.dovecot as peer

    # First try: hand out a port someone else holds; the master exits 89 and we retry.
    busy = socket.create_server(("127.0.0.1", 0))
    real, tries = peer._free_ports, []

    def clashing(count: int, address: str = "127.0.0.1") -> list[int]:
        ports = real(count, address)
        tries.append(ports)
        if len(tries) == 1:
            ports[0] = busy.getsockname()[1]
        return ports

    monkeypatch.setattr(peer, "_free_ports", clashing)
    try:
        inst = dovecot_factory()
    finally:
        busy.close()
    assert len(tries) == 2 and inst.running and inst.imap_port != tries[0][0]
    monkeypatch.setattr(peer, "_free_ports", real)

    with ThreadPoolExecutor(4) as pool:
        fleet = list(pool.map(lambda _: dovecot_factory(quota=False), range(4)))
    ports = [p for i in fleet for p in (i.imap_port, i.doveadm_port)]
    assert len(set(ports)) == len(ports) == 8
    assert all(run(driver_for(i), "who") == [] for i in fleet)


def test_stop_ends_a_worker_stuck_on_an_unanswered_request() -> None:
    import mailfleet_local.peers.dovecot as peer

    inst = DovecotInstance(quota=False).start()
    try:
        wrong = "Basic " + base64.b64encode(b"doveadm:wrong").decode()
        body = b'[["who",{},"t1"]]'
        stuck = socket.create_connection(("127.0.0.1", inst.doveadm_port), timeout=5)
        stuck.sendall(
            b"POST /doveadm/v1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + f"Authorization: {wrong}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        workers = wait_until(lambda: [p for p in inst.child_pids() if _is_doveadm_server(p)],
                             timeout=10, what="the hung request holding a doveadm worker")
        master = inst.pid
        rss = inst.rss_bytes()
        assert 5_000_000 < rss < 100_000_000
        inst.stop()
        assert inst.stop_seconds is not None and inst.stop_seconds < 5
        # Gone, or a zombie waiting for init to reap it: either way it runs no more.
        assert not any(peer._alive(p) for p in [master, *workers])
        assert stuck.recv(100) == b""  # the hung connection was closed with the worker
        stuck.close()
        assert not inst.folder.exists()
    finally:
        inst.stop()


# -- the event-loop path (the fan-out's) against the real server ---------------------------


def test_the_event_loop_path_meets_the_real_server(dovecot_host: DovecotInstance) -> None:
    import asyncio

    def perform_async(driver: DovecotDriver, action: str, params: dict[str, Any],
                      seconds: float = 10.0) -> tuple[Any, Deadline]:
        deadline = Deadline.after(seconds)
        return asyncio.run(driver.perform_async(action, params, deadline)), deadline

    assert perform_async(driver_for(dovecot_host), "penalty", {})[0] == []
    # A wrong key is refused at once (no `Connection: close` is sent, so doveadm answers).
    host, _ = host_for(dovecot_host, "loop-wrongcreds")
    began = time.monotonic()
    with pytest.raises(HostError) as info:
        perform_async(DovecotDriver(host, Credentials(api_key="not-the-secret")), "who", {})
    assert (info.value.type, info.value.code) == (ErrorType.AUTH, 401)
    assert time.monotonic() - began < 2
    # Input that crashes the doveadm worker: a connection error, sent once.
    mark = log_mark(dovecot_host)
    with pytest.raises(HostError) as info:
        perform_async(driver_for(dovecot_host), "mailboxList", {})
    assert info.value.type is ErrorType.CONNECTION and not info.value.retryable
    assert "closed the connection without a response" in info.value.message
    # The crash reaches the log a moment after the close.
    wait_until(lambda: "Fatal" in dovecot_host.log_text()[mark:], 3, what="the crash logged")
    # A host that is down.
    down = Host(id="loop-down", kind="dovecot", endpoint=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(HostError) as info:
        perform_async(DovecotDriver(down, Credentials(api_key="k")), "who", {})
    assert info.value.type is ErrorType.CONNECTION and "refused" in info.value.message


def _is_doveadm_server(pid: int) -> bool:
    """A doveadm-server process; a child that exited since it was listed is not one."""
    try:
        return b"doveadm-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
