"""The pymap driver against a real pymap server (dict backend, demo data)."""

from __future__ import annotations

import datetime
import hashlib
import imaplib
import json
import queue
import re
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import pytest

from mailfleet.drivers import driver_class
from mailfleet.drivers.base import Deadline
from mailfleet.drivers.pymap import PymapDriver
from mailfleet.errors import ErrorType, HostError
from mailfleet.models.hosts import Credentials, Host, TlsOptions
from mailfleet_local.certs import make_self_signed
from mailfleet_local.peers.pymap import PymapServer
from tests.fixtures.pymap import pymap_host, pymap_imap

pytestmark = pytest.mark.pymap

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def run(
    driver: PymapDriver, action: str, params: dict | None = None, deadline: Deadline | None = None
) -> dict:
    """Validate, then perform, as the engine does."""
    clean = driver.validate(action, params or {})
    return driver.perform(action, clean, deadline or Deadline.after(15))


def fails(
    driver: PymapDriver, action: str, params: dict | None = None, deadline: Deadline | None = None
) -> HostError:
    with pytest.raises(HostError) as info:
        run(driver, action, params, deadline)
    return info.value


def new_user(driver: PymapDriver, password: str, **extra: object) -> str:
    user = f"u-{uuid.uuid4().hex[:10]}"
    run(driver, "user.set", {"user": user, "password": password, **extra})
    return user


# --- actions ----------------------------------------------------------------------------


def test_registry_builds_the_pymap_driver(pymap_tls_host: tuple[Host, Credentials]) -> None:
    driver = driver_class("pymap")(*pymap_tls_host)
    try:
        assert isinstance(driver, PymapDriver)
        assert run(driver, "ping")["pymap_version"] == version("pymap")
    finally:
        driver.close()


def test_ping_reports_versions(pymap_driver: PymapDriver) -> None:
    deadline = Deadline.after(10)
    out = run(pymap_driver, "ping", {}, deadline)
    assert out == {
        "pymap_version": version("pymap"),
        "pymap_admin_version": version("pymap-admin"),
        "client_version": version("pymap-admin"),
    }
    assert deadline.attempts == 1


def test_check_reports_serving(pymap_driver: PymapDriver) -> None:
    assert run(pymap_driver, "check") == {"service": "", "status": "SERVING"}
    assert run(pymap_driver, "check", {"service": "pymap.backend"})["status"] == "SERVING"
    err = fails(pymap_driver, "check", {"service": "no.such.service"})
    assert (err.type, err.code) == (ErrorType.COMMAND, "NOT_FOUND")


def test_set_then_get_user(pymap_driver: PymapDriver) -> None:
    user = f"u-{uuid.uuid4().hex[:10]}"
    out = run(
        pymap_driver,
        "user.set",
        {"user": user, "password": "s3cret-one", "roles": ["ops"], "params": {"quota": "10"}},
    )
    assert out["user"] == user and out["overwrite"] is False
    got = run(pymap_driver, "user.get", {"user": user})
    assert got["user"] == user
    assert got["roles"] == ["ops"] and got["params"] == {"quota": "10"}
    assert got["entity_tag"] == out["entity_tag"]
    assert got["password"] == {"set": True, "scheme": "pbkdf2-sha256"}
    # Neither the password nor its hash is ever in the output.
    text = json.dumps(got)
    assert "s3cret-one" not in text and "$pbkdf2" not in text


def test_set_existing_user_needs_overwrite(pymap_driver: PymapDriver) -> None:
    user = new_user(pymap_driver, "first-secret", roles=["ops"])
    err = fails(pymap_driver, "user.set", {"user": user, "password": "other"})
    assert (err.type, err.code) == (ErrorType.COMMAND, "CannotReplaceUser")
    assert "Cannot replace" in err.message
    run(pymap_driver, "user.set", {"user": user, "password": "other", "overwrite": True})
    assert run(pymap_driver, "user.get", {"user": user})["roles"] == []


def test_change_password_takes_effect_over_imap(
    pymap_server: PymapServer, pymap_driver: PymapDriver
) -> None:
    user = new_user(pymap_driver, password="old-pass-1", roles=["ops"], params={"k": "v"})
    with pymap_imap(pymap_server, user, "old-pass-1"):
        pass
    deadline = Deadline.after(15)
    out = run(pymap_driver, "user.password", {"user": user, "new_password": "new-pass-2"}, deadline)
    assert out["user"] == user
    assert deadline.attempts == 2  # GetUser, then SetUser guarded by its entity tag
    with pymap_imap(pymap_server, user, "new-pass-2") as imap:
        assert imap.state == "AUTH"
    with pytest.raises(imaplib.IMAP4.error), pymap_imap(pymap_server, user, "old-pass-1"):
        pass
    # Only the password changed.
    got = run(pymap_driver, "user.get", {"user": user})
    assert (got["roles"], got["params"]) == (["ops"], {"k": "v"})


def test_change_password_of_missing_user(pymap_driver: PymapDriver) -> None:
    deadline = Deadline.after(15)
    err = fails(
        pymap_driver, "user.password", {"user": "nobody-here", "new_password": "x"}, deadline
    )
    assert (err.type, err.code) == (ErrorType.COMMAND, "UserNotFound")
    assert deadline.attempts == 1  # no SetUser after a failed GetUser


def test_append_is_seen_over_imap(pymap_server: PymapServer, pymap_driver: PymapDriver) -> None:
    user = new_user(pymap_driver, password="imap-pass")
    subject = f"mailfleet {uuid.uuid4().hex}"
    when = datetime.datetime(2024, 5, 17, 8, 30, tzinfo=datetime.UTC)
    out = run(
        pymap_driver,
        "append",
        {
            "user": user,
            "message": f"From: ops@example.com\nSubject: {subject}\n\nhello\n",
            "flags": ["\\Flagged"],
            "when": when.isoformat(),
        },
    )
    assert out["delivered"] is True and out["mailbox"] == "INBOX"
    assert isinstance(out["uid"], int) and isinstance(out["validity"], int)
    with pymap_imap(pymap_server, user, "imap-pass") as imap:
        imap.select("INBOX", readonly=True)
        status, found = imap.uid("SEARCH", None, "SUBJECT", f'"{subject}"')
        assert status == "OK" and found[0].split() == [str(out["uid"]).encode()]
        _, fetched = imap.uid("FETCH", str(out["uid"]), "(FLAGS INTERNALDATE BODY.PEEK[])")
    meta, body = fetched[0]
    assert b"\\Flagged" in meta and b"17-May-2024 08:30:00 +0000" in meta
    assert body == f"From: ops@example.com\r\nSubject: {subject}\r\n\r\nhello\r\n".encode()


def test_append_to_missing_mailbox(pymap_driver: PymapDriver) -> None:
    user = new_user(pymap_driver, "first-secret")
    err = fails(pymap_driver, "append", {"user": user, "mailbox": "Nope", "message": "x"})
    assert (err.type, err.code) == (ErrorType.COMMAND, "MailboxNotFound")


def test_append_to_missing_user_is_a_clean_error(pymap_driver: PymapDriver) -> None:
    # pymap-admin's CLI dies with a KeyError here; the driver reports the host's answer.
    err = fails(pymap_driver, "append", {"user": "nobody-here", "message": "Subject: x\n\nx"})
    assert (err.type, err.code, err.retryable) == (ErrorType.COMMAND, "UserNotFound", False)
    assert "User not found" in err.message


def test_delete_user(pymap_server: PymapServer, pymap_driver: PymapDriver) -> None:
    user = new_user(pymap_driver, password="bye-pass")
    assert run(pymap_driver, "user.delete", {"user": user}) == {"user": user, "deleted": True}
    err = fails(pymap_driver, "user.get", {"user": user})
    assert err.code == "UserNotFound"
    with pytest.raises(imaplib.IMAP4.error), pymap_imap(pymap_server, user, "bye-pass"):
        pass


def test_user_not_found_is_a_command_error(pymap_driver: PymapDriver) -> None:
    deadline = Deadline.after(10)
    err = fails(pymap_driver, "user.get", {"user": "nobody-here"}, deadline)
    assert err.to_dict() == {
        "type": "command",
        "code": "UserNotFound",
        "message": "GetUser NO [NONEXISTENT] User not found.",
        "retryable": False,
    }
    assert deadline.attempts == 1


def test_demo_user_is_served(pymap_driver: PymapDriver) -> None:
    got = run(pymap_driver, "user.get", {"user": "demouser"})
    assert got["user"] == "demouser" and got["password"]["set"] is True


# --- authentication and versions --------------------------------------------------------


def test_wrong_token_is_auth(pymap_server: PymapServer) -> None:
    wrong = "not-the-token-" + uuid.uuid4().hex
    driver = PymapDriver(*pymap_host(pymap_server, token=wrong))
    try:
        err = fails(driver, "user.get", {"user": "demouser"})
        assert (err.type, err.code, err.retryable) == (ErrorType.AUTH, "InvalidAuth", False)
        assert wrong not in err.message and pymap_server.token not in err.message
        # pymap answers Ping without checking the token (a liveness probe).
        assert run(driver, "ping")["pymap_version"] == version("pymap")
    finally:
        driver.close()


def test_missing_token_is_a_credentials_error(pymap_server: PymapServer) -> None:
    host, _ = pymap_host(pymap_server)
    driver = PymapDriver(host, Credentials())
    deadline = Deadline.after(5)
    err = fails(driver, "ping", {}, deadline)
    assert err.type is ErrorType.CREDENTIALS and deadline.attempts == 0


def test_incompatible_client_version_is_unsupported(
    pymap_driver: PymapDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pymapadmin.__about__

    monkeypatch.setattr(pymapadmin.__about__, "__version__", "99.0.0")
    err = fails(pymap_driver, "ping")
    assert (err.type, err.code) == (ErrorType.UNSUPPORTED, "FAILED_PRECONDITION")
    assert "Incompatible version" in err.message


# --- TLS --------------------------------------------------------------------------------


def test_pin_mismatch_is_tls_and_sends_no_rpc(pymap_server: PymapServer) -> None:
    wrong_pin = hashlib.sha256(b"some other certificate").hexdigest()
    driver = PymapDriver(*pymap_host(pymap_server, pin_sha256=wrong_pin))
    try:
        deadline = Deadline.after(5)
        err = fails(driver, "user.get", {"user": "demouser"}, deadline)
        assert (err.type, err.code) == (ErrorType.TLS, "pin_mismatch")
        assert "nothing was sent" in err.message
        assert err.details == {"presented_sha256": pymap_server.fingerprint_sha256}
        assert deadline.attempts == 0
    finally:
        driver.close()


def test_pin_with_colons_and_capitals_matches(pymap_server: PymapServer) -> None:
    fp = pymap_server.fingerprint_sha256.upper()
    host = Host(
        id="pymap-colons",
        kind="pymap",
        endpoint=pymap_server.endpoint,
        tls=TlsOptions(pin_sha256=":".join(re.findall("..", fp))),
    )
    driver = PymapDriver(host, Credentials(token=pymap_server.token))
    try:
        assert run(driver, "check")["status"] == "SERVING"
    finally:
        driver.close()


def test_verification_against_system_cas_refuses_self_signed(pymap_server: PymapServer) -> None:
    host = Host(id="pymap-verify", kind="pymap", endpoint=pymap_server.endpoint)
    driver = PymapDriver(host, Credentials(token=pymap_server.token))
    try:
        err = fails(driver, "ping")
        assert err.type is ErrorType.TLS and "certificate verification failed" in err.message
    finally:
        driver.close()


@pytest.mark.parametrize("tls", ["ca_pem", "no_verify"])
def test_ca_pem_or_no_verify_connects(pymap_server: PymapServer, tls: str) -> None:
    options = (
        TlsOptions(ca_pem=pymap_server.cert_pem) if tls == "ca_pem" else TlsOptions(verify=False)
    )
    host = Host(id="pymap-ca", kind="pymap", endpoint=pymap_server.endpoint, tls=options)
    driver = PymapDriver(host, Credentials(token=pymap_server.token))
    try:
        assert run(driver, "user.get", {"user": "demouser"})["user"] == "demouser"
    finally:
        driver.close()


class RecordingTlsListener:
    """A TLS listener on loopback that records every byte a client sends after the
    handshake, one entry per connection, and never answers."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.set_alpn_protocols(["h2"])
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._record, args=(conn,), daemon=True).start()

    def _record(self, conn: socket.socket) -> None:
        data = b""
        try:
            conn.settimeout(10)
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                while chunk := tls.recv(65536):
                    data += chunk
        except OSError:
            pass
        self.received.put(data)

    def connections(self, count: int) -> list[bytes]:
        return [self.received.get(timeout=10) for _ in range(count)]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[RecordingTlsListener, str]]:
    certs = make_self_signed(tmp_path, "listener")
    recording = RecordingTlsListener(certs.cert_path, certs.key_path)
    yield recording, certs.fingerprint_sha256
    recording.close()


def _driver_for(port: int, pin: str) -> PymapDriver:
    host = Host(
        id="recorded",
        kind="pymap",
        endpoint=f"https://127.0.0.1:{port}",
        tls=TlsOptions(pin_sha256=pin),
    )
    return PymapDriver(host, Credentials(token="recorded-token"))


def test_pin_mismatch_sends_not_one_byte(listener: tuple[RecordingTlsListener, str]) -> None:
    recording, _ = listener
    driver = _driver_for(recording.port, hashlib.sha256(b"not it").hexdigest())
    try:
        err = fails(driver, "user.delete", {"user": "demouser"}, Deadline.after(5))
        assert err.type is ErrorType.TLS
    finally:
        driver.close()
    # One handshake happened, and nothing at all was written after it.
    assert recording.connections(1) == [b""]
    assert recording.received.empty()


def test_pin_match_sends_and_a_silent_host_times_out(
    listener: tuple[RecordingTlsListener, str],
) -> None:
    """The positive control for the test above: the same listener does record what a
    client sends once the pin matches. The host never answers: a timeout."""
    recording, fingerprint = listener
    driver = _driver_for(recording.port, fingerprint)
    deadline = Deadline.after(1.0)
    try:
        err = fails(driver, "ping", {}, deadline)
        assert err.type is ErrorType.TIMEOUT and deadline.attempts == 1
    finally:
        driver.close()
    probe, channel = sorted(recording.connections(2))
    assert probe == b"" and channel.startswith(H2_PREFACE)
    assert b"recorded-token" not in probe


def test_pinned_certificate_past_its_dates_is_still_trusted(tmp_path: Path) -> None:
    """A pin names one exact certificate: its dates don't matter (as with HTTP pins)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired")])
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(past)
        .not_valid_after(past + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "expired.crt", tmp_path / "expired.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    recording = RecordingTlsListener(cert_path, key_path)
    pin = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    driver = _driver_for(recording.port, pin)
    try:
        err = fails(driver, "ping", {}, Deadline.after(1.0))
        assert err.type is ErrorType.TIMEOUT  # past TLS, waiting on the silent host
    finally:
        driver.close()
        recording.close()
    assert any(c.startswith(H2_PREFACE) for c in recording.connections(2))


# --- transports, failures, threads ------------------------------------------------------


def test_unix_socket(pymap_server: PymapServer, pymap_unix_host: tuple[Host, Credentials]) -> None:
    driver = PymapDriver(*pymap_unix_host)
    try:
        assert run(driver, "ping")["pymap_version"] == version("pymap")
        user = new_user(driver, password="sock-pass")
        assert run(driver, "user.get", {"user": user})["user"] == user
        err = fails(driver, "user.get", {"user": "nobody-here"})
        assert err.code == "UserNotFound"
    finally:
        driver.close()
    wrong = PymapDriver(*pymap_host(pymap_server, via="unix", token="wrong"))
    try:
        assert fails(wrong, "user.get", {"user": "demouser"}).type is ErrorType.AUTH
    finally:
        wrong.close()


def test_stopped_server_is_a_connection_error() -> None:
    if PymapServer.available():
        pytest.skip(PymapServer.available())
    server = PymapServer().start()
    tcp = PymapDriver(*pymap_host(server))
    unix = PymapDriver(*pymap_host(server, via="unix"))
    try:
        assert run(tcp, "ping")["pymap_version"] and run(unix, "ping")["pymap_version"]
        server.stop()
        assert server.stopped_in is not None and server.stopped_in < 5
        for driver in (tcp, unix):
            deadline = Deadline.after(5)
            err = fails(driver, "ping", {}, deadline)
            assert err.type is ErrorType.CONNECTION and err.retryable, err
    finally:
        tcp.close()
        unix.close()
        server.stop()
    assert not server.socket_path.exists()


def test_spent_deadline_is_a_timeout_before_any_attempt(pymap_driver: PymapDriver) -> None:
    deadline = Deadline.after(-1)
    err = fails(pymap_driver, "ping", {}, deadline)
    assert err.type is ErrorType.TIMEOUT and deadline.attempts == 0


def test_one_driver_serves_many_worker_threads(pymap_driver: PymapDriver) -> None:
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda _: run(pymap_driver, "check")["status"], range(32)))
    assert outs == ["SERVING"] * 32


def test_closed_driver_reconnects_on_next_use(pymap_driver: PymapDriver) -> None:
    assert run(pymap_driver, "check")["status"] == "SERVING"
    pymap_driver.close()
    assert pymap_driver._channel is None
    assert run(pymap_driver, "check")["status"] == "SERVING"


def test_invalid_params_are_refused_before_contact(pymap_driver: PymapDriver) -> None:
    for action, params in [
        ("user.set", {"user": "x"}),  # no password
        ("user.get", {"user": "has space"}),
        ("append", {"user": "x", "message": "m", "flags": ["bad flag"]}),
        ("ping", {"extra": 1}),
    ]:
        err = fails(pymap_driver, action, params)
        assert err.type is ErrorType.INVALID_PARAMS, (action, err)
    assert fails(pymap_driver, "user.list").type is ErrorType.UNSUPPORTED
