"""A faithful double of the on-premises appliance admin API (`/api/v1/admin`, v1.24.0).

A real TLS HTTP/1.1 server on 127.0.0.1 (self-signed certificate, free port) built from
/work/shared/seeds/appliance-admin-api.txt and contracts/appliance.md, where the contract
wins:
- one request per connection; `?token=` or `?hash=` authentication, 403 otherwise;
- the allow-list of query and form field names (built-in names plus the config's
  `parameters`): any other name, or a POST without Content-Length, closes the connection
  without an answer;
- optional endpoints (settings, certs, license, storage, backup) answer 404 when disabled;
  a wrong method on a known endpoint is 400 "... Expected GET", other methods are 501;
- asynchronous update, certs, settings, storage and backup with configurable timings and
  outcomes, including the E1004 refusal of a second update that lingers after the first
  one finished; backups are real tar archives whose size and sha256 GET /backup shows;
- GET /reboot takes the server away (connection refused) for a while, then brings it back
  on the same port; POST /setup rotates the token, with a pause after a failed rotation.

Tests drive and inspect it through plain attributes and `inject(...)`. The request log
keeps field names only: never a token, a hash or a form value.
"""

from __future__ import annotations

import gzip
import hashlib
import heapq
import hmac
import io
import itertools
import json
import os
import secrets
import shutil
import ssl
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from email.utils import formatdate
from http.client import parse_headers
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from mailfleet_local.certs import SelfSigned, make_self_signed
from mailfleet_local.peers.tls_listener import StartedInWith, TlsListener

PREFIX = "/api/v1/admin"
API_VERSION = "1.24.0"
JSON = "application/json"
TEXT = "text/plain"
OCTETS = "application/octet-stream"

OPTIONAL_ENDPOINTS = ("settings", "certs", "license", "storage", "backup")
CORE_ENDPOINTS = (
    "build", "changelog", "debug", "endpoints", "health", "logs", "reboot", "services",
    "setup", "update", "version",
)
# The document's example config: optional field names the server accepts besides its own.
DEFAULT_PARAMETERS = ("public", "private", "ca", "license", "action", "archive")
BUILTIN_PARAMETERS = ("token", "hash", "newtoken", "update", "settings")
STORAGE_OPTIONS = ("local", "nfs", "nbd", "iscsi", "aoe")

# Each known endpoint and the methods it accepts.
ROUTES: dict[str, frozenset[str]] = {
    "/setup": frozenset({"POST"}),
    "/update": frozenset({"GET", "POST"}),
    "/update/log": frozenset({"GET"}),
    "/logs": frozenset({"GET"}),
    "/debug": frozenset({"GET"}),
    "/reboot": frozenset({"GET"}),
    "/services": frozenset({"GET"}),
    "/version": frozenset({"GET"}),
    "/changelog": frozenset({"GET"}),
    "/build": frozenset({"GET"}),
    "/health": frozenset({"GET"}),
    "/endpoints": frozenset({"GET"}),
    "/settings": frozenset({"GET", "POST"}),
    "/certs": frozenset({"GET", "POST"}),
    "/license": frozenset({"GET", "POST"}),
    "/storage": frozenset({"GET", "POST"}),
    "/backup": frozenset({"GET", "POST"}),
    "/backup/download": frozenset({"GET"}),
    "/backup/log": frozenset({"GET"}),
    "/backup/restore": frozenset({"POST"}),
}

REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 403: "Forbidden",
           404: "Not Found", 500: "Internal Server Error", 501: "Not Implemented",
           503: "Service Unavailable"}

UPDATE_ERRORS = {
    "E1000": "There was a scripting error in the update script",
    "E1001": "There was a version error in the update package",
    "E1002": "There was an error during the update process",
    "E1003": "Missing update package",
    "E1004": "Update already running",
    "E1005": "The update package couldn't be decrypted or extracted",
}

CHANGELOG = """# Changelog

## 1.0.9 (2015-08-21)

  * Update app to version 2.1.2
  * Update nodejs modules
  * Update system packages
  * Update API to version 1.1.6
"""

HEALTH = {
    "disk": {"used": "3.4G", "total": "234G", "percentage": 2},
    "memory": {"used": "260M", "total": "1000M", "percentage": 26},
    "cpu": {"num": 1, "load": "0.66, 0.28, 0.14", "cpu5min": 0},
}
SERVICES = {"services": [{"openssh": "running"}, {"jidoteki-admin-api": "running"}]}
LICENSE = {"app": "enterprise", "users": 20, "expires": "19 January 2038",
           "name": "Enterprise Company", "contact": "cto@enterprise"}

_PRINTABLE = frozenset(chr(c) for c in range(33, 127))
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_FQDN = _ALNUM | frozenset(".-")
_IPADDR = frozenset("abcdef0123456789ABCDEF.:")
_MAX_LINE = 8192
_MAX_BODY = 64 << 20
_CHUNK = 64 << 10
_LOG_TAIL = 10


@dataclass
class ApplianceTimings:
    """How long things take on the double (seconds). `fast()` is for tests."""

    # A POST answers 202 at once; the forked script writes its first status this much later.
    script_start: float = 0.3
    update: float = 3.0
    certs: float = 1.0
    settings: float = 1.0
    storage: float = 1.0
    backup: float = 2.0
    refusal_delay: float = 0.2  # an E1004 refusal shows in GET /update this long after
    reboot_after: float = 0.5  # the backup the appliance takes before going down
    reboot_downtime: float = 5.0  # connection refused meanwhile
    failed_setup_pause: float = 2.0  # POST /setup answers a failed rotation after this

    @classmethod
    def fast(cls) -> ApplianceTimings:
        return cls(script_start=0.05, update=0.3, certs=0.2, settings=0.2, storage=0.2, backup=0.3,
                   refusal_delay=0.05, reboot_after=0.1, reboot_downtime=0.5,
                   failed_setup_pause=0.1)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the double saw it: field names only, never a value."""

    method: str
    path: str  # without the query string
    fields: tuple[str, ...]  # query then form field names, in order
    status: int | None  # None: the connection was closed without an answer
    auth: str | None  # "hash", "token" or None: which credential was offered
    at: float  # time.monotonic() when the answer (or the drop) happened

    @property
    def endpoint(self) -> str:
        return self.path[len(PREFIX):] if self.path.startswith(PREFIX) else self.path

    @property
    def dropped(self) -> bool:
        return self.status is None


@dataclass
class _Field:
    filename: str | None
    data: bytes

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


@dataclass
class _Request:
    method: str
    endpoint: str
    query: dict[str, str]
    form: dict[str, _Field]


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0  # wait this long before answering (failed rotation)
    drop: bool = False  # close the connection instead of answering
    after: Callable[[], None] | None = None  # runs once the answer is out (reboot)


@dataclass
class _Job:
    """What GET /update or GET /certs shows: the appliance's status files."""

    status: str | None = None
    percentage: int | None = None
    log: list[str] = field(default_factory=list)
    error_code: str | None = None
    error_message: str | None = None
    running: bool = False  # really running, whatever the status file says
    refused: bool = False  # a second POST was refused while it ran
    generation: int = 0


def _json(value: Any, status: int = 200, headers: list[tuple[str, str]] | None = None
          ) -> _Response:
    body = json.dumps(value, separators=(",", ":")).encode()
    return _Response(status, body, JSON, headers or [])


def _msg(status: int, error: str | None = None) -> _Response:
    """The server's generic answer: {"Status": "404 Not Found"} plus Error-Message."""
    value: dict[str, str] = {"Status": f"{status} {REASONS.get(status, '')}".strip()}
    headers: list[tuple[str, str]] = []
    if error:
        value["Error-Message"] = error
        headers.append(("Error-Message", error))
    return _json(value, status, headers)


def _accepted(endpoint: str) -> _Response:
    location = PREFIX + endpoint
    return _json({"Status": "202 Accepted", "Location": location}, 202,
                 [("Location", location)])


def _stamp(text: str, who: str = "SYSTEM") -> str:
    return f"[{int(time.time())}][{who}] {text}"


def _human_size(size: int) -> str:
    """Like `du -h`, as the document shows it ("128.0K")."""
    value = float(size)
    for unit in ("", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.1f}{unit}" if unit else f"{int(value)}"
        value /= 1024
    return f"{value:.1f}G"


def _tar(members: dict[str, bytes], *, compress: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw) if compress else raw


def _parse_multipart(body: bytes, content_type: str) -> list[tuple[str, _Field]] | None:
    """Field names and values of a multipart/form-data body; None if it is malformed."""
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        return None
    fields: list[tuple[str, _Field]] = []
    for part in body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        part = part.removeprefix(b"\r\n")
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep:
            return None
        disposition = Message()
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-disposition":
                disposition["content-disposition"] = value.strip()
        field_name = disposition.get_param("name", header="content-disposition")
        if not isinstance(field_name, str):
            return None
        filename = disposition.get_param("filename", header="content-disposition")
        fields.append((field_name, _Field(filename if isinstance(filename, str) else None,
                                          data.removesuffix(b"\r\n"))))
    return fields


def _check_string(value: Any, option: str, allowed: frozenset[str], low: int, high: int
                  ) -> str | None:
    """The server's validate-string-range: an error message, or None when fine."""
    if not isinstance(value, str) or any(c not in allowed for c in value):
        return f"Missing or invalid string for option: {option}"
    if not low <= len(value) <= high:
        return (f"Invalid string length for option: {option}. "
                f"Allowed: >= {low} and <= {high}")
    return None


class ApplianceDouble(StartedInWith):
    """The appliance admin API on 127.0.0.1, over TLS, in this process.

    Controls: `token` (get/set), `latency`, `timings`, `inject(...)`, `requests_log`,
    `clear_log()`, `start()` / `stop()` or a `with` block. Inspection: `endpoint`, `port`,
    `fingerprint_sha256`, `cert_path`, `version`, `settings`, `storage`, `license`,
    `update_state()`, `backup_archive`, `reboots`, `rotations`, `is_up`.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        first_run: bool = False,
        version: str = "1.0.0",
        endpoints: tuple[str, ...] | list[str] = OPTIONAL_ENDPOINTS,
        parameters: tuple[str, ...] | list[str] = DEFAULT_PARAMETERS,
        timings: ApplianceTimings | None = None,
        latency: float = 0.0,
        update_outcome: str | None = None,
        e1004_lingers: bool = True,
        backup_size: int = 128 << 10,
        settings: dict[str, Any] | None = None,
        storage: dict[str, Any] | None = None,
        storage_options: tuple[str, ...] | list[str] = STORAGE_OPTIONS,
        license: dict[str, Any] | None = LICENSE,
        builddate: str = "123456789",
        directory: Path | None = None,
        port: int = 0,
    ) -> None:
        unknown = set(endpoints) - set(OPTIONAL_ENDPOINTS)
        if unknown:
            raise ValueError(f"not optional endpoints: {sorted(unknown)}")
        # No token given: a random one; `first_run`: none set yet (POST /setup needs no auth).
        self._token: str | None = None if first_run else token or secrets.token_urlsafe(24)
        self.version = version
        self.endpoints = frozenset(endpoints)
        self.parameters = frozenset(parameters)
        self.timings = timings or ApplianceTimings()
        self.latency = latency
        self.update_outcome = update_outcome  # None: success; else an E100x code
        self.e1004_lingers = e1004_lingers
        self.backup_size = backup_size
        self.settings = settings
        self.storage = storage
        self.storage_options = list(storage_options)
        self.license = license
        self.builddate = builddate
        self.reboots = 0
        self.rotations = 0
        self.failed_rotations = 0

        self._own_dir = directory is None
        self._dir = Path(tempfile.mkdtemp(prefix="appliance-double-")) if directory is None \
            else directory
        self._tls: SelfSigned | None = None
        self._cert_path: Path | None = None
        self._fingerprint = ""
        self._ssl_ctx: ssl.SSLContext | None = None
        self._port = port
        self._listener = TlsListener("appliance", self._context, self._serve, backlog=64)
        self._stopped = threading.Event()
        self._up = False

        self._lock = threading.RLock()
        self._log: list[RequestRecord] = []
        self._injections: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self._failures: dict[str, list[dict[str, Any]]] = {}
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

        self._update = _Job()
        self._certs = _Job()
        self._certs_swaps = 0
        self._late_outcome: tuple[str, str] | None = None  # set by a failed certs swap
        self._settings_gen = 0
        self._storage_gen = 0
        self._backup_status: dict[str, Any] | None = None
        self._backup_archive: bytes | None = None
        self._backup_log: list[str] = []
        self._backup_gen = 0
        self._backup_running = False

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> ApplianceDouble:
        if self._tls is None:
            self._tls = make_self_signed(self._dir, "appliance")
            self._cert_path = self._tls.cert_path
            self._fingerprint = self._tls.fingerprint_sha256
            self._ssl_ctx = self._tls.server_context()
        self._stopped.clear()
        self._listen()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._close_listener()
        self._listener.join()
        if self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    # ---- inspection and controls -----------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self._port}"

    @property
    def fingerprint_sha256(self) -> str:
        """The SHA-256 of the certificate the double presents now (changes on POST /certs)."""
        return self._fingerprint

    @property
    def cert_path(self) -> Path:
        """The certificate presented now, as a file (a CA bundle for `verify=`)."""
        assert self._cert_path is not None, "start() the double first"
        return self._cert_path

    @property
    def is_up(self) -> bool:
        return self._up

    @property
    def token(self) -> str | None:
        return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        with self._lock:
            self._token = value

    @property
    def requests_log(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def requests_to(self, endpoint: str, method: str | None = None) -> list[RequestRecord]:
        endpoint = "/" + endpoint.strip("/")
        return [r for r in self.requests_log
                if r.endpoint == endpoint and (method is None or r.method == method)]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    @property
    def backup_archive(self) -> bytes | None:
        with self._lock:
            self._advance()
            return self._backup_archive

    def update_state(self) -> dict[str, Any]:
        """What GET /update would answer now."""
        with self._lock:
            self._advance()
            return self._update_body(self._update)

    def update_running(self) -> bool:
        """Whether an update really runs now, whatever its status file says."""
        with self._lock:
            self._advance()
            return self._update.running

    def inject(self, endpoint: str, failure: str, *, times: int = 1, **details: Any) -> None:
        """Make the next `times` requests to `endpoint` ("setup", "/backup/download") fail:

        - "drop": close the connection unanswered before the request takes effect;
        - "drop_after_apply": let it take effect, then close the connection unanswered;
        - "http": answer `status=` (default 500) with the generic body, without effect;
        - "fail": the next operation started there (update, certs, settings, storage,
          backup) ends failed; update takes `code=` (default E1002) and `message=`;
        - "corrupt": (backup/download) serve bytes that do not match GET /backup's sha256.
        """
        if failure not in ("drop", "drop_before_apply", "drop_after_apply", "http", "fail",
                           "corrupt"):
            raise ValueError(f"unknown failure {failure!r}")
        key = "/" + endpoint.strip("/")
        failure = "drop" if failure == "drop_before_apply" else failure
        with self._lock:
            target = self._failures if failure in ("fail", "corrupt") else None
            for _ in range(times):
                if target is not None:
                    target.setdefault(f"{key}#{failure}", []).append(details)
                else:
                    self._injections.setdefault(key, []).append((failure, details))

    def clear_injections(self) -> None:
        with self._lock:
            self._injections.clear()
            self._failures.clear()

    def sign(self, method: str, endpoint: str, token: str | None = None) -> str:
        """The `hash` a client must send (the server's own computation, for tests)."""
        secret = token if token is not None else self._token
        if secret is None:
            raise ValueError("no token set")
        key = hashlib.sha256(secret.encode()).hexdigest().encode()
        message = f"{method.upper()}{PREFIX}/{endpoint.strip('/')}".encode()
        return hmac.new(key, message, hashlib.sha256).hexdigest()

    def url(self, endpoint: str, *, method: str = "GET", auth: str = "hash") -> str:
        """A full URL for raw requests in tests: auth "hash", "token" or "none"."""
        base = f"{self.endpoint}{PREFIX}/{endpoint.strip('/')}"
        if auth == "hash":
            return f"{base}?hash={self.sign(method, endpoint)}"
        if auth == "token":
            return f"{base}?token={quote(self._token or '', safe='')}"
        return base

    # ---- sockets ---------------------------------------------------------------------

    def _listen(self) -> None:
        self._port = self._listener.listen(self._port)
        self._up = True

    def _close_listener(self) -> None:
        self._up = False
        self._listener.close()

    def _context(self) -> ssl.SSLContext:
        with self._lock:
            self._advance()  # a finished POST /certs changes the certificate right now
            ctx = self._ssl_ctx
        assert ctx is not None
        return ctx

    def _serve(self, conn: ssl.SSLSocket, client: str) -> None:
        rfile = conn.makefile("rb")
        try:
            line = rfile.readline(_MAX_LINE + 1)
            if not line:
                return  # a client that hung up after the handshake (pin mismatch)
            parts = line.decode("latin-1").split()
            if len(parts) != 3:
                return
            method, target, _ = parts
            headers = parse_headers(rfile)
            path, _, query_string = target.partition("?")
            if self.latency:
                time.sleep(self.latency)
            query = parse_qsl(query_string, keep_blank_values=True)
            names = [k for k, _ in query]
            auth = "hash" if "hash" in names else "token" if "token" in names else None

            def record(status: int | None) -> None:
                with self._lock:
                    self._log.append(RequestRecord(method, path, tuple(names), status, auth,
                                                   time.monotonic()))

            if method not in ("GET", "POST"):
                self._send(conn, _msg(501))
                record(501)
                return
            form: dict[str, _Field] = {}
            if method == "POST":
                length = headers.get("Content-Length")
                if length is None or not length.strip().isdigit() \
                        or int(length) > _MAX_BODY:
                    record(None)
                    return
                body = rfile.read(int(length))
                fields = self._parse_form(body, headers.get("Content-Type", ""))
                if fields is None:
                    self._send(conn, _msg(400))
                    record(400)
                    return
                names.extend(name for name, _ in fields)
                form = dict(fields)
            allowed = self.parameters | set(BUILTIN_PARAMETERS)
            if any(name not in allowed for name in names):
                record(None)  # the server closes the connection on unknown field names
                return
            request = _Request(method, path[len(PREFIX):] if path.startswith(PREFIX + "/")
                               else "", dict(query), form)
            response = self._route(request)
            if response.delay:
                time.sleep(response.delay)
            if response.drop:
                record(None)
                return
            self._send(conn, response)
            record(response.status)
            if response.after is not None:
                response.after()
        finally:
            rfile.close()

    @staticmethod
    def _parse_form(body: bytes, content_type: str) -> list[tuple[str, _Field]] | None:
        kind = content_type.split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            return _parse_multipart(body, content_type)
        if kind == "application/x-www-form-urlencoded" or not body:
            pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True)
            return [(k, _Field(None, v.encode("latin-1"))) for k, v in pairs]
        return None

    @staticmethod
    def _send(conn: ssl.SSLSocket, response: _Response) -> None:
        head = [
            f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}",
            "Server: PicoLisp",
            "Strict-Transport-Security: max-age=31536000 ; includeSubDomains",
            "X-Frame-Options: deny",
            "X-Content-Type-Options: nosniff",
            f"Date: {formatdate(usegmt=True)}",
            f"Content-Length: {len(response.body)}",
            f"Content-Type: {response.content_type}",
            *(f"{k}: {v}" for k, v in response.headers),
        ]
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        view = memoryview(response.body)
        for start in range(0, len(view), _CHUNK):
            conn.sendall(view[start:start + _CHUNK])

    # ---- routing ---------------------------------------------------------------------

    def _route(self, req: _Request) -> _Response:
        methods = ROUTES.get(req.endpoint)
        owner = req.endpoint.strip("/").split("/")[0]
        if methods is None or (owner in OPTIONAL_ENDPOINTS and owner not in self.endpoints):
            return _msg(404)
        if req.endpoint == "/setup":
            return self._setup(req)  # its own authentication, with the failure pause
        if not self._authenticated(req):
            return _msg(403, "Authentication error")
        if req.method not in methods:
            expected = next(iter(methods))
            return _msg(400, f"Invalid authentication method. Expected {expected}")
        with self._lock:
            self._advance()
            injected = self._take_injection(req.endpoint)
            if injected is not None and injected[0] != "drop_after_apply":
                return injected[1]
            handler = getattr(self, "_" + req.method.lower() + "_"
                              + req.endpoint.strip("/").replace("/", "_"))
            response: _Response = handler(req)
        if injected is not None:
            response.drop = True
        return response

    def _take_injection(self, endpoint: str) -> tuple[str, _Response] | None:
        queue = self._injections.get(endpoint)
        if not queue:
            return None
        failure, details = queue.pop(0)
        if failure == "drop":
            return failure, _Response(0, drop=True)
        if failure == "http":
            return failure, _msg(int(details.get("status", 500)), details.get("message"))
        return failure, _Response(0)

    def _take_failure(self, endpoint: str, failure: str = "fail") -> dict[str, Any] | None:
        queue = self._failures.get(f"{endpoint}#{failure}")
        return queue.pop(0) if queue else None

    def _authenticated(self, req: _Request) -> bool:
        token = self._token
        if token is None:
            return False
        given_hash = req.query.get("hash")
        if given_hash is not None:  # a hash, when present, is the only credential looked at
            want = self.sign(req.method, req.endpoint, token)
            return hmac.compare_digest(given_hash.encode(), want.encode())
        given = req.query.get("token")
        return given is not None and hmac.compare_digest(given.encode(), token.encode())

    # ---- scheduled work --------------------------------------------------------------

    def _at(self, delay: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._events, (time.monotonic() + delay, next(self._seq), action))

    def _advance(self) -> None:
        """Run every scheduled step whose time has come, in time order (under the lock)."""
        now = time.monotonic()
        while self._events and self._events[0][0] <= now:
            _, _, action = heapq.heappop(self._events)
            action()

    # ---- setup (token) ---------------------------------------------------------------

    def _setup(self, req: _Request) -> _Response:
        if req.method != "POST":
            if not self._authenticated(req):
                return _msg(403, "Authentication error")
            return _msg(400, "Invalid authentication method. Expected POST")
        with self._lock:
            first_run = self._token is None
            if not first_run and not self._authenticated(req):
                return self._failed_setup(_msg(403, "Authentication error"))
            injected = self._take_injection("/setup")
            if injected is not None and injected[0] == "drop":
                return injected[1]
            if injected is not None and injected[0] == "http":
                return self._failed_setup(injected[1])
            new = req.form.get("newtoken")
            value = new.text() if new is not None else None
            if value is None or not 1 <= len(value) <= 255 \
                    or any(c not in _PRINTABLE for c in value):
                return self._failed_setup(
                    _msg(400, "Missing or invalid string for option: newtoken"))
            self._token = value
            self.rotations += 1
            response = _msg(200)
        if injected is not None:  # drop_after_apply
            response.drop = True
        return response

    def _failed_setup(self, response: _Response) -> _Response:
        self.failed_rotations += 1
        response.delay = self.timings.failed_setup_pause
        return response

    # ---- information -----------------------------------------------------------------

    def _get_version(self, req: _Request) -> _Response:
        return _json({"version": self.version})

    def _get_changelog(self, req: _Request) -> _Response:
        return _Response(200, CHANGELOG.encode(), TEXT)

    def _get_build(self, req: _Request) -> _Response:
        return _json({"builddate": self.builddate})

    def _get_health(self, req: _Request) -> _Response:
        return _json(HEALTH)

    def _get_services(self, req: _Request) -> _Response:
        return _json(SERVICES)

    def _get_endpoints(self, req: _Request) -> _Response:
        names = sorted(set(CORE_ENDPOINTS) | self.endpoints)
        return _json({"endpoints": [f"{PREFIX}/{n}" for n in names] + ["/docs"]})

    def _get_logs(self, req: _Request) -> _Response:
        archive = _tar({
            "logs/system.log": _stamp("System started\n").encode(),
            "logs/update.log": "\n".join(self._update.log).encode(),
            "logs/backup.log": "\n".join(self._backup_log).encode(),
        }, compress=True)
        return _Response(200, archive, OCTETS, [
            ("Filename", "logs.tar.gz"),
            ("Content-Disposition", 'attachment; filename="logs.tar.gz"')])

    def _get_debug(self, req: _Request) -> _Response:
        archive = _tar({"debug-bundle.enc": os.urandom(4096)})
        return _Response(200, archive, OCTETS, [
            ("Filename", "debug-bundle.tar"),
            ("Content-Disposition", 'attachment; filename="debug-bundle.tar"')])

    # ---- reboot ----------------------------------------------------------------------

    def _get_reboot(self, req: _Request) -> _Response:
        response = _json({"Status": "202 Accepted"}, 202)
        response.after = self._begin_reboot
        return response

    def _begin_reboot(self) -> None:
        threading.Thread(target=self._reboot_cycle, name=f"appliance-{self._port}-reboot",
                         daemon=True).start()

    def _reboot_cycle(self) -> None:
        # The appliance takes a backup first, still answering, then goes away.
        if self._stopped.wait(self.timings.reboot_after):
            return
        with self._lock:
            self._close_listener()
            self.reboots += 1
        self._listener.join()
        if self._stopped.wait(self.timings.reboot_downtime):
            return
        with self._lock:
            if not self._stopped.is_set():
                self._listen()

    # ---- update ----------------------------------------------------------------------

    @staticmethod
    def _tail(lines: list[str]) -> str | None:
        return "\n".join(lines[-_LOG_TAIL:]) if lines else None

    def _update_body(self, job: _Job) -> dict[str, Any]:
        body: dict[str, Any] = {"status": job.status, "percentage": job.percentage,
                                "log": self._tail(job.log)}
        if job.error_message is not None:
            body["error-message"] = job.error_message
        if job.error_code is not None:
            body["error-code"] = job.error_code
        return body

    def _get_update(self, req: _Request) -> _Response:
        return _json(self._update_body(self._update))

    def _get_update_log(self, req: _Request) -> _Response:
        if not self._update.log:
            return _msg(404)
        return _Response(200, ("\n".join(self._update.log) + "\n").encode(), TEXT)

    def _post_update(self, req: _Request) -> _Response:
        package = req.form.get("update")
        if package is None or package.filename is None:
            return _msg(400)
        job = self._update
        if job.running:
            # Still 202: the refusal only shows up later in GET /update (the contract).
            self._at(self.timings.refusal_delay, lambda: self._refuse_update(job))
            return _accepted("/update")
        failure = self._take_failure("/update")
        if failure is not None:
            outcome: tuple[str, str] | None = (
                failure.get("code", "E1002"),
                failure.get("message") or UPDATE_ERRORS[failure.get("code", "E1002")])
        elif not package.data:
            outcome = ("E1003", UPDATE_ERRORS["E1003"])
        elif self.update_outcome:
            outcome = (self.update_outcome, UPDATE_ERRORS.get(self.update_outcome, "failed"))
        else:
            outcome = None
        self._start_job(job, self.timings.update, "Updating system", outcome, percentage=True,
                        on_success=lambda: self._apply_package(package.data))
        return _accepted("/update")

    def _refuse_update(self, job: _Job) -> None:
        job.refused = job.running
        job.status = "failed"
        job.percentage = 0
        job.error_code = "E1004"
        job.error_message = UPDATE_ERRORS["E1004"]
        job.log.append(_stamp("Update already running"))

    def _apply_package(self, data: bytes) -> None:
        # A test package may carry "version=X.Y.Z" on its first line: the new version.
        first = data.split(b"\n", 1)[0]
        if first.startswith(b"version="):
            self.version = first[len(b"version="):].decode("ascii", "replace").strip()

    def _start_job(self, job: _Job, duration: float, what: str,
                   outcome: tuple[str, str] | None, *, percentage: bool,
                   on_success: Callable[[], None] | None = None) -> None:
        job.generation += 1
        generation = job.generation
        job.running = True  # the lock is taken at once: a second POST is refused
        job.refused = False

        def begin() -> None:
            # Until the script starts, GET still shows the previous status (stale).
            if job.generation != generation:
                return
            job.log.append(_stamp(f"{what}. Please wait.."))
            if job.refused:
                return
            job.status = "running"
            job.percentage = 0 if percentage else None
            job.error_code = job.error_message = None

        start = self.timings.script_start
        self._at(start, begin)
        if percentage:
            for step in (1, 2, 3, 4):
                self._at(start + duration * step / 5,
                         lambda pct=step * 20: self._progress(job, generation, pct, what))
        self._at(start + duration, lambda: self._finish(job, generation, what, outcome,
                                                        percentage, on_success))

    def _progress(self, job: _Job, generation: int, pct: int, what: str) -> None:
        if job.generation == generation and job.status == "running":
            job.percentage = pct
            job.log.append(_stamp(f"{what}: {pct}%"))

    def _finish(self, job: _Job, generation: int, what: str,
                outcome: tuple[str, str] | None, percentage: bool,
                on_success: Callable[[], None] | None) -> None:
        if job.generation != generation:
            return
        job.running = False
        if outcome is None and on_success is not None:
            on_success()
            outcome, self._late_outcome = self._late_outcome, None
        job.log.append(_stamp(f"{what} successful" if outcome is None
                              else f"Failed {what[0].lower()}{what[1:]}..."))
        if job.refused and self.e1004_lingers:
            return  # the refusal's failed/E1004 stays: the contract's lingering status
        if outcome is None:
            job.status = "success"
            job.percentage = 100 if percentage else None
        else:
            job.status = "failed"
            job.error_code, job.error_message = outcome if percentage else (None, None)

    # ---- certs -----------------------------------------------------------------------

    def _get_certs(self, req: _Request) -> _Response:
        return _json({"status": self._certs.status, "log": self._tail(self._certs.log)})

    def _post_certs(self, req: _Request) -> _Response:
        public, private, ca = (req.form.get(n) for n in ("public", "private", "ca"))
        if public is None or private is None or public.filename is None \
                or private.filename is None:
            return _msg(400)
        job = self._certs
        if job.running:
            self._at(self.timings.refusal_delay, lambda: self._refuse_certs(job))
            return _accepted("/certs")
        failure = self._take_failure("/certs")
        outcome = ("failed", "failed") if failure is not None else None
        self._start_job(job, self.timings.certs, "Updating TLS certificates", outcome,
                        percentage=False,
                        on_success=lambda: self._swap_certificate(public.data, private.data,
                                                                  ca.data if ca else None))
        return _accepted("/certs")

    def _refuse_certs(self, job: _Job) -> None:
        job.refused = job.running
        job.status = "failed"
        job.log.append(_stamp("TLS certificates update already running"))

    def _swap_certificate(self, public: bytes, private: bytes, ca: bytes | None) -> None:
        """Serve the uploaded certificate from now on, as the real appliance does."""
        self._certs_swaps += 1
        cert_path = self._dir / f"appliance-{self._certs_swaps}.crt"
        key_path = self._dir / f"appliance-{self._certs_swaps}.key"
        cert_path.write_bytes(public + (b"\n" + ca if ca else b""))
        key_path.write_bytes(private)
        key_path.chmod(0o600)
        try:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(cert_path), str(key_path))
            der = ssl.PEM_cert_to_DER_cert(public.decode("ascii"))
        except (ssl.SSLError, ValueError, UnicodeDecodeError):
            self._late_outcome = ("failed", "Invalid TLS certificate or key")
            self._certs.log.append(_stamp("Invalid TLS certificate or key"))
            return
        self._certs.log.append(_stamp("Validating and adding TLS certificates"))
        self._ssl_ctx = ctx
        self._cert_path = cert_path
        self._fingerprint = hashlib.sha256(der).hexdigest()

    # ---- license ---------------------------------------------------------------------

    def _get_license(self, req: _Request) -> _Response:
        return _json(self.license) if self.license is not None else _msg(404)

    def _post_license(self, req: _Request) -> _Response:
        upload = req.form.get("license")
        if upload is None or upload.filename is None:
            return _msg(400)
        try:
            value = json.loads(upload.data)  # the double's "encrypted" license is JSON
        except ValueError:
            return _msg(404)
        if not isinstance(value, dict) or "app" not in value:
            return _msg(404)
        self.license = value
        return _json(value)

    # ---- settings and storage --------------------------------------------------------

    def _get_settings(self, req: _Request) -> _Response:
        return _json(self.settings) if self.settings is not None else _msg(404)

    def _post_settings(self, req: _Request) -> _Response:
        upload = req.form.get("settings")
        if upload is None or upload.filename is None:
            return _msg(400)
        try:
            doc = json.loads(upload.data)
        except ValueError:
            return _msg(400)
        if not isinstance(doc, dict):
            return _msg(400)
        network = doc.get("network") or {}
        app = doc.get("app") or {}
        if not isinstance(network, dict) or not isinstance(app, dict):
            return _msg(400)
        error = self._validate_network(network)
        if error:
            return _msg(400, error)
        static = all(network.get(k) for k in ("ip_address", "netmask", "gateway"))
        stored = {"network": {"mode": "static" if static else "dhcp", **network}, "app": app}
        self._settings_gen += 1
        generation = self._settings_gen
        failed = self._take_failure("/settings") is not None

        def apply() -> None:
            if generation == self._settings_gen and not failed:
                self.settings = stored

        self._at(self.timings.settings, apply)
        return _accepted("/settings")

    @staticmethod
    def _validate_network(network: dict[str, Any]) -> str | None:
        checks = [
            ("interface", _ALNUM, 3, 14, True),
            ("hostname", _FQDN, 3, 255, True),
            ("ip_address", _IPADDR, 3, 45, False),
            ("netmask", _IPADDR | {"/"}, 2, 45, False),
            ("gateway", _IPADDR, 3, 45, False),
            ("dns1", _IPADDR, 3, 45, False),
            ("dns2", _IPADDR, 3, 45, False),
            ("ntpserver", _FQDN | {":"}, 3, 255, False),
        ]
        for name, chars, low, high, required in checks:
            if name in network or required:
                error = _check_string(network.get(name), name, chars, low, high)
                if error:
                    return error
        return None

    def _get_storage(self, req: _Request) -> _Response:
        if self.storage is None:
            return _msg(404)
        return _json({**self.storage, "options": self.storage_options})

    def _post_storage(self, req: _Request) -> _Response:
        upload = req.form.get("settings")
        if upload is None or upload.filename is None:
            return _msg(400)
        try:
            doc = json.loads(upload.data)
        except ValueError:
            return _msg(400)
        storage = doc.get("storage") if isinstance(doc, dict) else None
        if not isinstance(storage, dict):
            return _msg(400)
        kind = storage.get("type")
        if kind not in self.storage_options:
            return _msg(400, "Missing or invalid option: type")
        required = {"nfs": ("mount_options", "ip", "share"), "aoe": ("device",),
                    "iscsi": ("target", "ip", "username", "password"),
                    "nbd": ("export_name", "ip", "port")}.get(kind, ())
        for name in required:
            if not isinstance(storage.get(name), str) or not storage[name]:
                return _msg(400, f"Missing or invalid string for option: {name}")
        self._storage_gen += 1
        generation = self._storage_gen
        failed = self._take_failure("/storage") is not None

        def apply() -> None:
            if generation == self._storage_gen and not failed:
                self.storage = {"storage": storage}

        self._at(self.timings.storage, apply)
        return _accepted("/storage")

    # ---- backup ----------------------------------------------------------------------

    def _get_backup(self, req: _Request) -> _Response:
        if self._backup_status is None:
            return _msg(404)
        response = _json(self._backup_status)
        response.headers.append(("Cache-Control", "no-cache"))
        return response

    def _post_backup(self, req: _Request) -> _Response:
        field_ = req.form.get("action")
        action = field_.text().upper() if field_ is not None else ""
        if action not in ("START", "STOP"):
            return _msg(400, "Missing or invalid option: action. "
                             "Expected value 'START' or 'STOP'")
        if action == "STOP":
            self._backup_gen += 1
            self._backup_running = False
            self._backup_status = None
            self._backup_archive = None
            self._backup_log.append(_stamp("Deleting backup archive", "LIVE IMAGE"))
            return _accepted("/backup")
        if self._backup_running:
            self._backup_log.append(_stamp("Backup already running", "LIVE IMAGE"))
            return _accepted("/backup")
        self._backup_gen += 1
        generation = self._backup_gen
        failed = self._take_failure("/backup") is not None
        self._backup_running = True

        def begin() -> None:
            if generation != self._backup_gen:
                return
            self._backup_status = {"status": "running"}
            self._backup_archive = None
            self._backup_log.append(_stamp("Validating backup file size", "LIVE IMAGE"))
            self._backup_log.append(_stamp("Starting backup", "LIVE IMAGE"))

        def finish() -> None:
            if generation != self._backup_gen:
                return
            self._backup_running = False
            if failed:
                self._backup_status = {"status": "failed"}
                self._backup_log.append(_stamp("Backup failed", "LIVE IMAGE"))
                return
            archive = self._make_backup()
            digest = hashlib.sha256(archive).hexdigest()
            size = _human_size(len(archive))
            self._backup_archive = archive
            self._backup_status = {"status": "success", "filesize": size, "sha256": digest}
            self._backup_log.append(
                f"Created file: /opt/jidoteki/admin/home/sftp/uploads/backup.tar - "
                f"size: {size} - hash: {digest}")
            self._backup_log.append(_stamp("Backup complete", "LIVE IMAGE"))

        self._at(self.timings.script_start, begin)
        self._at(self.timings.script_start + self.timings.backup, finish)
        return _accepted("/backup")

    def _make_backup(self) -> bytes:
        meta = {"created": time.time(), "version": self.version,
                "nonce": os.urandom(8).hex()}
        return _tar({
            "backup/meta.json": json.dumps(meta).encode(),
            "backup/settings.json": json.dumps(self.settings or {}).encode(),
            "backup/storage.json": json.dumps(self.storage or {}).encode(),
            "backup/license.json": json.dumps(self.license or {}).encode(),
            "backup/data.bin": os.urandom(self.backup_size),
        })

    def _get_backup_download(self, req: _Request) -> _Response:
        if self._backup_archive is None:
            return _msg(404)
        data = self._backup_archive
        if self._take_failure("/backup/download", "corrupt") is not None:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return _Response(200, data, OCTETS, [
            ("Filename", "backup.tar"),
            ("Content-Disposition", 'attachment; filename="backup.tar"')])

    def _get_backup_log(self, req: _Request) -> _Response:
        if not self._backup_log:
            return _msg(404)
        return _Response(200, ("\n".join(self._backup_log) + "\n").encode(), TEXT)

    def _post_backup_restore(self, req: _Request) -> _Response:
        upload = req.form.get("archive")
        if upload is None or upload.filename is None or not upload.data:
            return _msg(400)
        try:
            with tarfile.open(fileobj=io.BytesIO(upload.data)) as tar:
                tar.getmembers()
        except tarfile.TarError:
            return _msg(400)
        self._backup_log.append(_stamp("Backup restored", "LIVE IMAGE"))
        return _msg(200)
