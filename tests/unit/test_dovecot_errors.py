"""The dovecot driver's validation and error mapping, without a real Dovecot.

Validation runs against the contract's command list (what a real 2.3.19 reports). Reply
shapes go through parse_reply directly; the wire behaviour (headers, retries, timeouts,
dropped connections, TLS) uses a tiny loopback HTTP server, for shapes real Dovecot
cannot be made to produce on demand.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mailfleet.drivers import dovecot as dv
from mailfleet.drivers import driver_class
from mailfleet.drivers.base import Deadline, DriverContext
from mailfleet.drivers.dovecot import (
    DovecotDriver,
    actions_from_commands,
    command_schema,
    parse_reply,
    validate_against,
)
from mailfleet.errors import ErrorType, HostError, InvalidParams, Unsupported
from mailfleet.models.hosts import Credentials, Host
from tests.conftest import DOVEADM_COMMANDS

SECRET = "s3cret-key-value"
# doveadm's command list (the doveadm_commands fixture, tests/conftest.py).
type Commands = list[dict[str, Any]]


def reply(kind: str, payload: Any, tag: str = "t") -> bytes:
    return json.dumps([[kind, payload, tag]]).encode()


def error_of(
    status: int, body: bytes, ctype: str = "application/json", command: str = "who"
) -> HostError:
    with pytest.raises(HostError) as info:
        parse_reply(command, "t", status, ctype, body)
    return info.value


# -- parse_reply ---------------------------------------------------------------------------


def test_success_payloads() -> None:
    assert parse_reply("who", "t", 200, "application/json", reply("doveadmResponse", [])) == []
    user = {"alice": {"uid": "vmail"}}
    assert parse_reply("user", "t", 200, "", reply("doveadmResponse", user)) == user


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (2, "mailbox changed"),
        (64, "invalid parameters"),
        (65, "already exists"),
        (67, "user does not exist"),
        (68, "not found"),
        (73, "over quota"),
        (75, "temporary failure"),
        (77, "no permission"),
        (78, "configuration error"),
        (99, "unknown exit code"),
    ],
)
def test_exit_codes(code: int, words: str) -> None:
    err = error_of(200, reply("error", {"type": "exitCode", "exitCode": code}))
    assert err.type is ErrorType.EXIT_CODE and err.code == code
    assert words in err.message
    assert err.retryable is (code == 75)
    assert err.to_dict() == {
        "type": "exitCode",
        "code": code,
        "message": err.message,
        "retryable": code == 75,
    }


@pytest.mark.parametrize(
    ("etype", "expected", "code"),
    [
        ("unknownMethod", ErrorType.UNSUPPORTED, "unknownMethod"),
        ("invalidRequest", ErrorType.INVALID_PARAMS, "invalidRequest"),
        ("unAuthorized", ErrorType.AUTH, "unAuthorized"),
        ("somethingNew", ErrorType.COMMAND, "somethingNew"),
    ],
)
def test_other_error_types(etype: str, expected: ErrorType, code: str) -> None:
    err = error_of(200, reply("error", {"type": etype, "exitCode": 0}))
    assert (err.type, err.code, err.retryable) == (expected, code, False)


@pytest.mark.parametrize(
    ("status", "body", "ctype", "expected", "code"),
    [
        (
            400,
            b"JSON parse error: Invalid data as value\r\n",
            "text/plain; charset=utf-8",
            ErrorType.INVALID_PARAMS,
            400,
        ),
        (401, b"", "", ErrorType.AUTH, 401),
        (404, b"Path Not Found", "text/plain", ErrorType.UNSUPPORTED, 404),
        (500, b"", "", ErrorType.COMMAND, 500),
        (503, b"", "", ErrorType.COMMAND, 503),
    ],
)
def test_http_statuses(
    status: int, body: bytes, ctype: str, expected: ErrorType, code: int
) -> None:
    err = error_of(status, body, ctype)
    assert (err.type, err.code) == (expected, code)
    assert err.retryable is (status == 503)
    if status == 400:
        assert "JSON parse error: Invalid data as value" in err.message


@pytest.mark.parametrize(
    "body",
    [
        # The `who` bug: several users without separateConnections.
        b'[["doveadmResponse",[{"username":"a"}],{"username":"b"},{"username":"c"},"t"]]',
        b"not json",
        b"{}",
        b'[["doveadmResponse",[],"t"],["doveadmResponse",[],"u"]]',
        b'[["doveadmResponse",[],"other-tag"]]',
        b'[["doveadmResponse","text","t"]]',
        b'[["error",{"type":"exitCode"},"t"]]',
        b'[["surprise",{},"t"]]',
    ],
)
def test_malformed_replies_are_command_errors(body: bytes) -> None:
    err = error_of(200, body)
    assert err.type is ErrorType.COMMAND and "malformed" in err.message


# -- validation against the contract's command list ------------------------------------------


def test_unknown_command_and_case(doveadm_commands: Commands) -> None:
    with pytest.raises(Unsupported):
        validate_against(doveadm_commands, "frobnicate", {})
    with pytest.raises(Unsupported) as info:
        validate_against(doveadm_commands, "statsdump", {})
    assert "'statsDump'" in info.value.message


@pytest.mark.parametrize(
    ("action", "params", "field"),
    [
        ("who", {"bogus": True}, "bogus"),
        ("who", {"separateConnections": "yes"}, "separateConnections"),
        ("who", {"mask": "alice"}, "mask"),
        ("who", {"mask": ["alice", 3]}, "mask"),
        ("kick", {"force": 1, "mask": ["a"]}, "force"),
        ("directorFlush", {"host": "10.0.0.1", "maxParallel": "4"}, "maxParallel"),
        ("directorFlush", {"host": "10.0.0.1", "maxParallel": True}, "maxParallel"),
        ("quotaGet", {"user": 123}, "user"),
    ],
)
def test_unknown_parameters_and_wrong_types(action: str, params: dict[str, Any], field: str,
        doveadm_commands: Commands) -> None:
    with pytest.raises(InvalidParams) as info:
        validate_against(doveadm_commands, action, params)
    assert info.value.field == field and info.value.code == field
    assert repr(field) in info.value.message


@pytest.mark.parametrize(
    ("action", "params", "field"),
    [
        ("mailboxList", {}, "user"),
        ("mailboxList", {"user": ""}, "user"),
        ("quotaGet", {"allUsers": False}, "user"),
        ("authCacheFlush", {}, "user"),
        ("batch", {"user": "alice", "args": ["who"]}, None),
        ("fetch", {"user": "a", "field": ["uid"]}, "query"),
        ("fetch", {"user": "a", "field": ["uid bogus"], "query": ["all"]}, "field"),
        ("search", {"user": "a", "query": []}, "query"),
        ("mailboxStatus", {"user": "a", "field": ["nope"], "mailboxMask": ["INBOX"]}, "field"),
        ("proxyKick", {}, "user"),
        ("fsStat", {"fsDriver": "posix", "path": "/x"}, "fsArgs"),
    ],
)
def test_inputs_that_crash_the_worker_are_refused(action: str, params: dict[str, Any], field: str,
        doveadm_commands: Commands) -> None:
    with pytest.raises(InvalidParams) as info:
        validate_against(doveadm_commands, action, params)
    assert info.value.field == field
    assert "crash" in info.value.message or "batch" in info.value.message


@pytest.mark.parametrize(
    ("action", "params"),
    [
        ("mailboxList", {"user": "alice"}),
        ("mailboxList", {"allUsers": True}),
        ("quotaGet", {"userFile": "/etc/users"}),
        ("authCacheFlush", {"user": []}),
        ("fetch", {"user": "a", "field": ["uid hdr.subject", "body.1"], "query": ["all"]}),
        ("fetch", {"user": "a", "field": [], "query": ["all"]}),
        ("proxyKick", {"host": "10.0.0.1"}),
        ("fsStat", {"fsDriver": "posix", "fsArgs": "", "path": "/x"}),
        ("reload", None),
        ("directorMove", {"user": "alice", "host": "10.0.0.2"}),
        ("dictInc", {"user": "a", "key": "shared/n", "difference": -2}),
    ],
)
def test_valid_inputs_pass_unchanged(action: str, params: dict[str, Any] | None,
        doveadm_commands: Commands) -> None:
    assert validate_against(doveadm_commands, action, params) == (params or {})


def test_who_is_normalised_to_separate_connections(doveadm_commands: Commands) -> None:
    assert validate_against(doveadm_commands, "who", {}) == {"separateConnections": True}
    assert (
        validate_against(doveadm_commands, "who",
                         {"separateConnections": False})["separateConnections"]
        is True
    )


def test_params_must_be_an_object(doveadm_commands: Commands) -> None:
    with pytest.raises(InvalidParams) as info:
        validate_against(doveadm_commands, "who", ["mask"])  # type: ignore[arg-type]
    assert info.value.field is None and "JSON object" in info.value.message


# -- schemas and specs -----------------------------------------------------------------------


def test_schemas_follow_parameter_types(doveadm_commands: Commands) -> None:
    by_name = {c["command"]: c for c in doveadm_commands}
    kick = command_schema(by_name["kick"])
    assert kick["additionalProperties"] is False
    assert kick["properties"]["force"]["type"] == "boolean"
    assert kick["properties"]["mask"] == {
        "type": "array",
        "items": {"type": "string"},
        "x-doveadm-type": "array",
    }
    assert command_schema(by_name["logErrors"])["properties"]["since"]["type"] == "integer"
    fetch = command_schema(by_name["fetch"])
    assert fetch["required"] == ["field", "query"]
    assert {"required": ["allUsers"]} in fetch["anyOf"]


def test_specs_and_mutating_flags(doveadm_commands: Commands) -> None:
    specs = actions_from_commands(doveadm_commands)
    assert len(specs) == 96
    names = set(specs)
    assert dv.READ_ONLY <= names, "READ_ONLY names a command the host does not have"
    assert set(dv.REQUIRED) <= names and set(dv.ONE_OF) <= names
    for ro in (
        "who",
        "statsDump",
        "penalty",
        "quotaGet",
        "directorStatus",
        "fetch",
        "replicatorDsyncStatus",
        "mailboxPath",
        "sisFind",
        "oldstatsDump",
    ):
        assert specs[ro].mutating is False
    for rw in (
        "kick",
        "reload",
        "directorMove",
        "directorKick",
        "directorFlush",
        "dictSet",
        "mailboxDelete",
        "stop",
        "proxyKick",
    ):
        assert specs[rw].mutating is True
    described = specs["directorMove"].describe()
    assert described["name"] == "directorMove" and "director move" in described["description"]
    assert described["parameters"]["properties"]["host"]["type"] == "string"
    assert "refused" in specs["batch"].description


def test_registry_finds_the_driver() -> None:
    assert driver_class("dovecot") is DovecotDriver
    assert DovecotDriver.static_actions() == {}


# -- the wire: a tiny loopback HTTP server ---------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeDoveadm:
    """Answers each request with `behave(seen) -> bytes | "close" | ("sleep", s)`."""

    behave: Callable[[Seen], Any]
    requests: list[Seen] = field(default_factory=list)
    port: int = 0


class _Handler(socketserver.BaseRequestHandler):
    server: Any

    def handle(self) -> None:
        fake: FakeDoveadm = self.server.fake
        self.request.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {
            k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])
        }
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            body += self.request.recv(65536)
        seen = Seen(method, path, headers, body)
        fake.requests.append(seen)
        action = fake.behave(seen)
        if action == "close":
            return
        if isinstance(action, tuple):
            time.sleep(action[1])
            return
        self.request.sendall(action)


def http(status: int, body: bytes = b"", ctype: str = "application/json") -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
        f"Content-Type: {ctype}\r\n\r\n"
    ).encode() + body


def tag_of(seen: Seen) -> str:
    return json.loads(seen.body)[0][2]


@pytest.fixture
def fake() -> Iterator[Callable[[Callable[[Seen], Any]], FakeDoveadm]]:
    servers: list[socketserver.ThreadingTCPServer] = []

    def start(behave: Callable[[Seen], Any]) -> FakeDoveadm:
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        state = FakeDoveadm(behave, port=server.server_address[1])
        server.fake = state  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        servers.append(server)
        return state

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(params=["threads", "event loop", "prepared once"])
def via(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Every way a driver runs an action: perform (threads), perform_async (the fan-out's
    event loop) and perform_async of a call prepared once per job (what the fan-out
    sends); the wire and the errors must be the same."""

    def call(driver: DovecotDriver, action: str, params: dict[str, Any], deadline: Deadline
             ) -> Any:
        if request.param == "threads":
            return driver.perform(action, params, deadline)
        if request.param == "prepared once":
            prepared = driver.prepare(action, params)
            return asyncio.run(driver.perform_async(action, prepared, deadline))
        return asyncio.run(driver.perform_async(action, params, deadline))

    return call


def driver_at(
    state: FakeDoveadm,
    creds: Credentials | None = None,
    host_id: str = "fake",
    extras: dict[str, Any] | None = None,
) -> DovecotDriver:
    host = Host(id=host_id, kind="dovecot", endpoint=f"http://127.0.0.1:{state.port}")
    return DovecotDriver(
        host, creds or Credentials(api_key=SECRET), DriverContext(extras=extras or {})
    )


def ok(payload: Any) -> Callable[[Seen], bytes]:
    return lambda seen: http(200, reply("doveadmResponse", payload, tag_of(seen)))


def test_request_shape_and_api_key_auth(fake: Any, via: Any) -> None:
    state = fake(ok([]))
    deadline = Deadline.after(5)
    driver = driver_at(state, Credentials(api_key=SECRET, password="pw"))
    assert via(driver, "who", {"mask": ["a*"]}, deadline) == []
    [seen] = state.requests
    assert (seen.method, seen.path) == ("POST", "/doveadm/v1")
    assert (
        seen.headers["authorization"]
        == "X-Dovecot-API " + base64.b64encode(SECRET.encode()).decode()
    )
    assert seen.headers.get("connection", "").lower() != "close"
    assert seen.headers["content-type"] == "application/json"
    [[command, params, tag]] = json.loads(seen.body)
    assert command == "who" and params == {"mask": ["a*"], "separateConnections": True}
    assert isinstance(tag, str) and deadline.attempts == 1


@pytest.mark.parametrize(("action", "params"), [
    ("who", {}),
    ("who", {"mask": ["a*"]}),
    ("reload", None),
    ("kick", {"mask": ['quote"d', "\u00e9t\u00e9\n"], "force": True}),
])
def test_a_call_prepared_once_sends_what_each_host_would(action: str,
                                                         params: dict[str, Any] | None) -> None:
    """The body made once per job is, tag for tag, the one made per request; every
    request still gets a tag of its own."""
    call = dv.DoveadmCall.of(action, dv._command_params(action, params))
    sent = [call.request() for _ in range(3)]
    for tag, body in sent:
        assert body == json.dumps([[action, dv._command_params(action, params), tag]]).encode()
        [[command, as_sent, tag_sent]] = json.loads(body)
        assert (command, as_sent, tag_sent) == (action, call.params, tag)
    assert len({tag for tag, _ in sent}) == 3
    driver = DovecotDriver(Host(id="h", kind="dovecot", endpoint="http://127.0.0.1:1"),
                           Credentials(api_key=SECRET))
    assert driver.prepare(action, params or {}) == call


def test_password_auth(fake: Any, via: Any) -> None:
    state = fake(ok([]))
    via(driver_at(state, Credentials(password="pw")), "reload", {}, Deadline.after(5))
    expected = "Basic " + base64.b64encode(b"doveadm:pw").decode()
    assert state.requests[0].headers["authorization"] == expected


def test_tempfail_is_retried_then_succeeds(fake: Any, via: Any) -> None:
    def behave(seen: Seen) -> bytes:
        if len(state.requests) == 1:
            return http(200, reply("error", {"type": "exitCode", "exitCode": 75}, tag_of(seen)))
        return http(200, reply("doveadmResponse", [{"value": "1"}], tag_of(seen)))

    state = fake(behave)
    deadline = Deadline.after(5)
    began = time.monotonic()
    out = via(driver_at(state), "dictGet", {"user": "a", "key": "k"}, deadline)
    assert out == [{"value": "1"}] and deadline.attempts == 2 and len(state.requests) == 2
    assert time.monotonic() - began >= dv.RETRY_FIRST_DELAY


@pytest.mark.parametrize("code", [64, 67, 68, 73])
def test_other_exit_codes_are_not_retried(fake: Any, code: int, via: Any) -> None:
    state = fake(
        lambda seen: http(200, reply("error", {"type": "exitCode", "exitCode": code}, tag_of(seen)))
    )
    deadline = Deadline.after(5)
    with pytest.raises(HostError) as info:
        via(driver_at(state), "kick", {"mask": ["x"]}, deadline)
    assert info.value.code == code and deadline.attempts == 1 and len(state.requests) == 1


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (http(500), ErrorType.COMMAND),
        (http(401), ErrorType.AUTH),
        (http(404, b"Path Not Found", "text/plain"), ErrorType.UNSUPPORTED),
        ("close", ErrorType.CONNECTION),
    ],
    ids=["500", "401", "404", "closed"],
)
def test_failures_are_sent_once(fake: Any, answer: Any, expected: ErrorType, via: Any) -> None:
    state = fake(lambda seen: answer)
    deadline = Deadline.after(5)
    with pytest.raises(HostError) as info:
        via(driver_at(state), "who", {}, deadline)
    assert info.value.type is expected and deadline.attempts == 1
    assert len(state.requests) == 1
    assert SECRET not in json.dumps(info.value.to_dict())
    if expected is ErrorType.CONNECTION:
        assert "without a response" in info.value.message and not info.value.retryable


def _framed(framing: str, seen: Seen) -> bytes:
    body = reply("doveadmResponse", [{"user": "a"}], tag_of(seen))
    head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
    if framing == "chunked":
        half = len(body) // 2
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:half], body[half:]))
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + chunks + b"0\r\n\r\n"
    return (head + "\r\n").encode() + body  # no length: the body ends when the host closes


@pytest.mark.parametrize("framing", ["chunked", "until close"])
def test_reply_framings(fake: Any, framing: str, via: Any) -> None:
    state = fake(lambda seen: _framed(framing, seen))
    assert via(driver_at(state), "who", {}, Deadline.after(5)) == [{"user": "a"}]


@pytest.mark.parametrize(
    ("answer", "words"),
    [(b"garbage\r\n\r\n", "connection failed"),
     (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n[[", "connection failed")],
    ids=["bad status line", "cut-off body"],
)
def test_broken_replies_are_connection_errors(fake: Any, answer: bytes, words: str,
                                              via: Any) -> None:
    state = fake(lambda seen: answer)
    deadline = Deadline.after(5)
    with pytest.raises(HostError) as info:
        via(driver_at(state), "who", {}, deadline)
    assert info.value.type is ErrorType.CONNECTION and words in info.value.message
    assert deadline.attempts == 1 and len(state.requests) == 1


def test_read_timeout_mentions_credentials(fake: Any, via: Any) -> None:
    state = fake(lambda seen: ("sleep", 3))
    deadline = Deadline.after(0.5)
    began = time.monotonic()
    with pytest.raises(HostError) as info:
        via(driver_at(state), "who", {}, deadline)
    assert info.value.type is ErrorType.TIMEOUT and "credentials" in info.value.message
    assert time.monotonic() - began < 1.0 and deadline.attempts == 1


def test_expired_deadline_sends_nothing(fake: Any, via: Any) -> None:
    state = fake(ok([]))
    deadline = Deadline.after(0)
    with pytest.raises(HostError) as info:
        via(driver_at(state), "who", {}, deadline)
    assert info.value.type is ErrorType.TIMEOUT
    assert state.requests == [] and deadline.attempts == 0


def test_tls_pin_mismatch_sends_nothing(tmp_path: Path, via: Any) -> None:
    from mailfleet_local.certs import make_self_signed

    cert = make_self_signed(tmp_path)
    received: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    ctx = cert.server_context()

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                received.append(tls.recv(65536))
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    host = Host(
        id="pinned",
        kind="dovecot",
        endpoint=f"https://127.0.0.1:{port}",
        tls={"pin_sha256": "00" * 32},
    )
    with pytest.raises(HostError) as info:
        via(DovecotDriver(host, Credentials(api_key=SECRET)), "who", {}, Deadline.after(5))
    thread.join(5)
    listener.close()
    assert info.value.type is ErrorType.TLS
    assert not any(received), "no request may be sent to a host failing its pin"


def test_missing_credentials(via: Any) -> None:
    host = Host(id="nocreds", kind="dovecot", endpoint="http://127.0.0.1:9")
    with pytest.raises(HostError) as info:
        via(DovecotDriver(host, Credentials()), "who", {}, Deadline.after(5))
    assert info.value.type is ErrorType.CREDENTIALS


# -- the command list: cache, TTL and seeding ------------------------------------------------


def test_command_list_is_cached_per_host(fake: Any, monkeypatch: pytest.MonkeyPatch,
        doveadm_commands: Commands) -> None:
    dv.forget_commands()
    state = fake(lambda seen: http(200, DOVEADM_COMMANDS.read_bytes()))
    first = driver_at(state, host_id="cached")
    assert "who" in first.actions()
    second = driver_at(state, host_id="cached")  # a new driver, same process
    second.validate("kick", {"mask": ["a"]})
    assert [r.method for r in state.requests] == ["GET"]
    assert state.requests[0].path == "/doveadm/v1"
    # Past the TTL the host is asked again.
    monkeypatch.setattr(dv, "COMMANDS_TTL", -1.0)
    dv.remember_commands(first.host, doveadm_commands)
    second.actions()
    assert len(state.requests) == 2
    dv.forget_commands("cached")
    assert dv.cached_commands(first.host) is None


def test_seeded_command_list_wins(fake: Any) -> None:
    state = fake(lambda seen: http(500))
    seeded = [{"command": "who", "parameters": [{"name": "mask", "type": "array"}]}]
    driver = driver_at(state, host_id="seeded-unit", extras={"doveadm_commands": seeded})
    assert set(driver.actions()) == {"who"}
    with pytest.raises(Unsupported):
        driver.validate("kick", {})
    assert state.requests == []


@pytest.mark.parametrize("body", [b"{}", b'[{"command": 1}]', b"nope"])
def test_malformed_command_list(fake: Any, body: bytes) -> None:
    dv.forget_commands()
    state = fake(lambda seen: http(200, body))
    with pytest.raises(HostError) as info:
        driver_at(state, host_id="badlist").fetch_commands(Deadline.after(5))
    assert info.value.type is ErrorType.COMMAND and "command list" in info.value.message


def _tls_doveadm(tmp_path: Path) -> tuple[Any, int, list[bytes], Callable[[], None]]:
    """A one-connection TLS doveadm answering `who` with []; (cert, port, seen, stop)."""
    from mailfleet_local.certs import make_self_signed

    cert = make_self_signed(tmp_path)
    seen: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    ctx = cert.server_context()

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                data = tls.recv(65536)
                while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
                    data.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0]
                ):
                    data += tls.recv(65536)
                seen.append(data)
                tag = json.loads(data.split(b"\r\n\r\n", 1)[1])[0][2]
                tls.sendall(http(200, reply("doveadmResponse", [], tag)))
        except (OSError, ValueError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def stop() -> None:
        thread.join(5)
        listener.close()

    return cert, listener.getsockname()[1], seen, stop


@pytest.mark.parametrize("trust", ["ca_pem", "pin", "system store"])
def test_tls_on_both_paths(tmp_path: Path, trust: str, via: Any) -> None:
    cert, port, seen, stop = _tls_doveadm(tmp_path)
    tls = {"ca_pem": {"ca_pem": cert.cert_pem}, "pin": {"pin_sha256": cert.fingerprint_sha256},
           "system store": {"verify": True}}[trust]
    host = Host(id=f"tls-{trust.replace(' ', '-')}", kind="dovecot",
                endpoint=f"https://127.0.0.1:{port}", tls=tls)
    driver = DovecotDriver(host, Credentials(api_key=SECRET))
    try:
        if trust == "system store":  # a self-signed certificate is refused, nothing sent
            with pytest.raises(HostError) as info:
                via(driver, "who", {}, Deadline.after(5))
            assert info.value.type is ErrorType.TLS and not any(seen)
        else:
            assert via(driver, "who", {}, Deadline.after(5)) == []
            assert seen and seen[0].startswith(b"POST /doveadm/v1 ")
    finally:
        stop()


def test_a_job_checks_and_prepares_once_per_command_list(doveadm_commands: Commands) -> None:
    """HostActions (the fan-out's per-host work): hosts sharing a command list share one
    checked and prepared call, the same as each host's own would be; another list gets
    its own."""
    from mailfleet.logic.host_actions import HostActions

    def driver(host_id: str, commands: Commands) -> DovecotDriver:
        host = Host(id=host_id, kind="dovecot", endpoint="http://127.0.0.1:1")
        extras = {"doveadm_commands": commands, "doveadm_commands_checked": True}
        return DovecotDriver(host, Credentials(api_key=SECRET), DriverContext(extras=extras))

    other_version = [dict(c) for c in doveadm_commands]
    drivers = [driver("a", doveadm_commands), driver("b", doveadm_commands),
               driver("c", other_version)]
    actions = HostActions("job", "who", {"mask": ["a*"]}, {}, None, None)  # type: ignore[arg-type]

    async def prepared_for_each() -> list[Any]:
        deadline = Deadline.after(5)
        return list(await asyncio.gather(*(actions._checked(d, deadline) for d in drivers)))

    first, second, third = asyncio.run(prepared_for_each())
    assert first is second and third is not first
    own = drivers[0].prepare("who", drivers[0].validate("who", {"mask": ["a*"]}))
    assert first == own == third
    assert first.params == {"mask": ["a*"], "separateConnections": True}
