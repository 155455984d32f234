"""A faithful double of the Stalwart migration proxy's management API.

It is a real implicit-TLS HTTP/1.1 server on 127.0.0.1 with a self-signed certificate and
the behaviour of /work/shared/contracts/proxy.md: status codes, exact bodies, headers,
per-address lockout, mapping store, route cache, live sessions and login delays. Tests
drive and inspect it through plain methods (seed_sessions, inject, die, mapping_of, ...).

One accept thread per double and one short thread per connection (the proxy answers
`Connection: close`), so many doubles can run side by side in one process.
"""

from __future__ import annotations

import hashlib
import hmac
import http
import json
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from mailfleet_local.certs import SelfSigned, make_self_signed
from mailfleet_local.peers.tls_listener import StartedInWith, TlsListener

MIN_TOKEN_LEN = 32
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"

# Known paths and the methods each accepts: anything else on them is 405, elsewhere 404.
ROUTES: dict[str, frozenset[str]] = {
    "/stats": frozenset({"GET"}),
    "/destinations": frozenset({"GET"}),
    "/destinations/reset": frozenset({"POST"}),
    "/mappings": frozenset({"GET", "PUT", "DELETE"}),
    "/mappings/reload": frozenset({"POST"}),
    "/cache/invalidate": frozenset({"POST"}),
    "/connections/kick": frozenset({"POST"}),
    "/connections/delay": frozenset({"POST"}),
    "/config/reload": frozenset({"POST"}),
}

_MAX_LINE = 8192
_MAX_HEADERS = 100
_MAX_BODY = 1 << 20
_U64_MAX = (1 << 64) - 1
# Query keys never written to the request log, should a client put a secret there.
_SECRET_KEYS = re.compile(r"token|auth|secret|pass|key", re.IGNORECASE)


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the double saw it: no headers, so no auth material."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    client: str
    at: float  # time.time()


@dataclass(frozen=True)
class Delay:
    seconds: int
    set_at: float  # time.time() when the proxy accepted it

    def remaining(self, now: float | None = None) -> float:
        return max(0.0, self.set_at + self.seconds - (time.time() if now is None else now))


@dataclass(frozen=True)
class Login:
    """What a simulated new login of an account experienced on this proxy."""

    identifier: str
    destination: str
    held_back: float  # seconds the proxy would pause it before connecting
    cached: bool


@dataclass
class _Injection:
    method: str
    path: str
    status: int
    body: str
    content_type: str
    times: int | None
    identifier: str | None


@dataclass
class _Failures:
    count: int = 0
    window_start: float = 0.0
    locked_until: float = 0.0


@dataclass
class _Response:
    status: int
    body: str = ""
    content_type: str = TEXT
    drop: bool = False  # close the connection without answering

    @classmethod
    def text(cls, status: int, line: str) -> _Response:
        return cls(status, line + "\n", TEXT)

    @classmethod
    def json(cls, value: Any, status: int = 200) -> _Response:
        return cls(status, json.dumps(value), JSON)


class _BadRequest(Exception):
    pass


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    client: str


@dataclass
class _Conns:
    """Sockets being served, so die() can cut them off mid-request."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    open: set[socket.socket] = field(default_factory=set)


class ProxyDouble(StartedInWith):
    """The proxy's management API on https://127.0.0.1:PORT. Thread-safe.

    Options mirror the proxy's [admin] table and its routing state: `token` (≥ 32 chars,
    random if not given), `lockout_threshold`, `lockout_duration` (seconds),
    `destinations` (declared, in order), `default_destination` (first declared if not
    given), `mappings` (identifier → destination), `read_only` (writes answer 501),
    `config_reload` ("ok" | "fail" | "unavailable"), `latency` (seconds before each answer),
    `normalize` (lowercase identifiers), `port` (0 = a free one), `cert_dir`.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        lockout_threshold: int = 5,
        lockout_duration: float = 300.0,
        destinations: list[str] | tuple[str, ...] = ("legacy", "stalwart"),
        default_destination: str | None = None,
        mappings: dict[str, str] | None = None,
        read_only: bool = False,
        config_reload: Literal["ok", "fail", "unavailable"] = "ok",
        config_reload_error: str = "invalid value for key 'proxy.bind'",
        latency: float = 0.0,
        normalize: bool = True,
        port: int = 0,
        cert_dir: Path | str | None = None,
        io_timeout: float = 10.0,
    ) -> None:
        self.token = token if token is not None else secrets.token_urlsafe(32)
        if len(self.token) < MIN_TOKEN_LEN:
            # Like the proxy: a short token refuses to start. Never echo the token itself.
            raise ValueError(f"admin token shorter than {MIN_TOKEN_LEN} characters; "
                             "refusing to start")
        if not destinations:
            raise ValueError("at least one destination must be declared")
        self.lockout_threshold = lockout_threshold
        self.lockout_duration = lockout_duration
        self.read_only = read_only
        self.config_reload = config_reload
        self.config_reload_error = config_reload_error
        self.latency = latency
        self.normalize = normalize
        self.io_timeout = io_timeout

        self._lock = threading.RLock()
        self._destinations: dict[str, dict[str, Any]] = {
            d: {"consecutive_failures": 0, "down": False} for d in destinations
        }
        self.default_destination = default_destination or next(iter(self._destinations))
        if self.default_destination not in self._destinations:
            raise ValueError("the default destination must be declared")
        self._mappings: dict[str, str] = {}
        for ident, dest in (mappings or {}).items():
            self._mappings[self._norm(ident)] = dest
        self._cache: dict[str, tuple[str, bool]] = {}  # normalized → (destination, default)
        self._hits = 0
        self._misses = 0
        self._sessions: dict[str, int] = {}
        self._delays: dict[str, Delay] = {}
        self._failures: dict[str, _Failures] = {}
        self._injections: list[_Injection] = []
        self._log: list[LoggedRequest] = []
        self._reloads = {"mappings": 0, "config": 0}

        self._own_cert_dir = cert_dir is None
        self._cert_dir = Path(cert_dir) if cert_dir else Path(tempfile.mkdtemp(prefix="pxd-"))
        self.cert: SelfSigned = make_self_signed(self._cert_dir, name="proxy")
        self._ssl = self.cert.server_context()
        self._port = port
        self._listener: TlsListener | None = None
        self._conns = _Conns()
        self._alive = threading.Event()

    # ---- life cycle -------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self._port}"

    @property
    def fingerprint_sha256(self) -> str:
        return self.cert.fingerprint_sha256

    @property
    def ca_pem(self) -> str:
        return self.cert.cert_pem

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> ProxyDouble:
        if self._listener is not None:
            return self
        # Each life its own `alive`: a connection of the last one never serves this one.
        alive = self._alive = threading.Event()
        alive.set()
        listener = TlsListener("proxy-double", lambda: self._ssl,
                               lambda conn, client: self._serve(conn, client, alive),
                               io_timeout=self.io_timeout)
        self._port = listener.listen(self._port)
        self._listener = listener
        return self

    def die(self) -> None:
        """Stop answering: new connections are refused, open ones are cut. State is kept."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._alive.clear()
        listener.close()
        with self._conns.lock:
            for conn in list(self._conns.open):
                try:
                    socket.socket.shutdown(conn, socket.SHUT_RDWR)
                except OSError:
                    pass
        listener.join()

    def revive(self) -> ProxyDouble:
        """Answer again on the same port, with the state it had when it died."""
        return self.start()

    def stop(self) -> None:
        self.die()
        if self._own_cert_dir:
            shutil.rmtree(self._cert_dir, ignore_errors=True)

    # ---- test controls and accessors --------------------------------------------------

    @property
    def requests_log(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def requests_to(self, path: str, method: str | None = None) -> list[LoggedRequest]:
        return [r for r in self.requests_log
                if r.path == path and (method is None or r.method == method)]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def inject(self, method: str, path: str, status: int, body: str = "", *,
               times: int | None = 1, identifier: str | None = None,
               content_type: str = TEXT) -> None:
        """Answer the next `times` authenticated `method path` requests (None: all of them;
        only those for `identifier` if given) with `status` and `body` instead of handling
        them. The request then has no effect. Status 0 closes the connection unanswered."""
        with self._lock:
            self._injections.append(_Injection(
                method.upper(), _strip(path), status, body, content_type, times,
                self._norm(identifier) if identifier is not None else None,
            ))

    def clear_injections(self) -> None:
        with self._lock:
            self._injections.clear()

    def seed_sessions(self, identifier: str, n: int) -> None:
        """Set the number of live bridged sessions of an account."""
        with self._lock:
            self._sessions[self._norm(identifier)] = n

    def sessions_of(self, identifier: str) -> int:
        with self._lock:
            return self._sessions.get(self._norm(identifier), 0)

    def set_mapping(self, identifier: str, destination: str | None) -> None:
        """Change the store behind the proxy's back (the cache is not told)."""
        with self._lock:
            key = self._norm(identifier)
            if destination is None:
                self._mappings.pop(key, None)
            else:
                self._mappings[key] = destination

    def mapping_of(self, identifier: str) -> str | None:
        """The explicit mapping in the store, None when the account falls to the default."""
        with self._lock:
            return self._mappings.get(self._norm(identifier))

    def route_of(self, identifier: str) -> str:
        """Where a new login would go now (cache first, as the proxy does), without
        counting as a lookup."""
        with self._lock:
            key = self._norm(identifier)
            if key in self._cache:
                return self._cache[key][0]
            return self._mappings.get(key, self.default_destination)

    @property
    def mappings(self) -> dict[str, str]:
        with self._lock:
            return dict(self._mappings)

    @property
    def cached(self) -> dict[str, str]:
        with self._lock:
            return {k: v[0] for k, v in self._cache.items()}

    @property
    def delays(self) -> dict[str, Delay]:
        """Login hold-backs per normalized identifier, with when each was set."""
        with self._lock:
            return dict(self._delays)

    def delay_of(self, identifier: str) -> Delay | None:
        with self._lock:
            return self._delays.get(self._norm(identifier))

    def login(self, identifier: str) -> Login:
        """Simulate a new client login through the proxy: it is held back by any delay in
        force, routed through the cache (a lookup), and becomes a live session."""
        with self._lock:
            key = self._norm(identifier)
            destination, _default, cached = self._resolve(key)
            self._sessions[key] = self._sessions.get(key, 0) + 1
            delay = self._delays.get(key)
            return Login(key, destination, delay.remaining() if delay else 0.0, cached)

    def set_destination_down(self, destination: str, down: bool = True,
                             failures: int | None = None) -> None:
        with self._lock:
            state = self._destinations[destination]
            state["down"] = down
            if failures is not None:
                state["consecutive_failures"] = failures
            elif down:
                state["consecutive_failures"] = max(state["consecutive_failures"], 3)
            else:
                state["consecutive_failures"] = 0

    def destination_state(self, destination: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._destinations[destination])

    @property
    def stats(self) -> dict[str, Any]:
        with self._lock:
            return self._stats()

    @property
    def reload_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._reloads)

    def failed_auths(self, client: str = "127.0.0.1") -> int:
        with self._lock:
            entry = self._failures.get(client)
            return entry.count if entry else 0

    def locked_out(self, client: str = "127.0.0.1") -> bool:
        with self._lock:
            entry = self._failures.get(client)
            return entry is not None and entry.locked_until > time.monotonic()

    def reset_lockout(self) -> None:
        with self._lock:
            self._failures.clear()

    # ---- serving ----------------------------------------------------------------------

    def _serve(self, conn: socket.socket, client: str, alive: threading.Event) -> None:
        if not alive.is_set():
            return  # it came in as die() cut everything off
        with self._conns.lock:
            self._conns.open.add(conn)
        try:
            self._serve_one(conn, client, alive)
        finally:
            with self._conns.lock:
                self._conns.open.discard(conn)

    def _serve_one(self, conn: socket.socket, client: str, alive: threading.Event) -> None:
        reader = conn.makefile("rb")
        try:
            # The lockout check comes before the request is parsed: whatever arrives, a
            # locked-out address gets 429. The request is still drained so closing the
            # socket does not reset the connection under the answer.
            if self._is_locked(client):
                head = _drain(reader)
                if not head:
                    return  # nothing was asked (a client that hung up after the handshake)
                method, path = _peek_line(head)
                response = _Response.text(429, "locked out")
                self._record(method, path, {}, response.status, client)
            else:
                try:
                    request = _read_request(reader, client)
                except _BadRequest:
                    response = _Response.text(400, "bad request")
                    self._record("", "", {}, response.status, client)
                else:
                    try:
                        response = self._handle(request)
                    except Exception:  # a bug in the double must show, not look like a drop
                        response = _Response.text(500, "double: internal error")
                    self._record(request.method, request.path, request.query,
                                 response.status, client)
        finally:
            reader.close()
        if self.latency > 0 and _interrupted(alive, self.latency):
            return  # died while answering: the client sees the connection drop
        if response.drop or not alive.is_set():
            return
        conn.sendall(_encode(response))

    def _record(self, method: str, path: str, query: dict[str, str], status: int,
                client: str) -> None:
        safe = {k: v for k, v in query.items() if not _SECRET_KEYS.search(k)}
        with self._lock:
            self._log.append(LoggedRequest(method, path, safe, status, client, time.time()))

    # ---- authentication and lockout ---------------------------------------------------

    def _is_locked(self, client: str) -> bool:
        with self._lock:
            entry = self._failures.get(client)
            return entry is not None and entry.locked_until > time.monotonic()

    def _authenticate(self, request: _Request) -> bool:
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        # Digests first, so the comparison takes the same time whatever the lengths.
        ok = hmac.compare_digest(hashlib.sha256(value.strip().encode()).digest(),
                                 hashlib.sha256(self.token.encode()).digest())
        ok = ok and scheme == "Bearer"
        now = time.monotonic()
        with self._lock:
            if ok:
                self._failures.pop(request.client, None)
                return True
            entry = self._failures.setdefault(request.client, _Failures())
            if entry.count == 0 or now - entry.window_start >= self.lockout_duration:
                entry.count, entry.window_start = 1, now
            else:
                entry.count += 1
            if entry.count >= self.lockout_threshold:
                entry.locked_until = now + self.lockout_duration
            return False

    # ---- the API ----------------------------------------------------------------------

    def _handle(self, request: _Request) -> _Response:
        method, path, query = request.method, request.path, request.query
        if path == "/healthz":
            return _Response.text(200, "ok") if method == "GET" else _method_not_allowed()
        if not self._authenticate(request):
            return _Response.text(401, "unauthorized")
        injected = self._take_injection(method, path, query)
        if injected is not None:
            return injected
        allowed = ROUTES.get(path)
        if allowed is None:
            return _Response.text(404, "not found")
        if method not in allowed:
            return _method_not_allowed()
        handler = getattr(self, "_" + path.strip("/").replace("/", "_") + "_" + method.lower())
        with self._lock:
            return handler(query)

    def _take_injection(self, method: str, path: str, query: dict[str, str]
                        ) -> _Response | None:
        with self._lock:
            for inj in self._injections:
                if inj.method != method or inj.path != path:
                    continue
                if inj.identifier is not None and (
                        self._norm(query.get("identifier", "")) != inj.identifier):
                    continue
                if inj.times is not None:
                    inj.times -= 1
                    if inj.times <= 0:
                        self._injections.remove(inj)
                return _Response(inj.status, inj.body, inj.content_type, drop=inj.status == 0)
        return None

    def _stats_get(self, query: dict[str, str]) -> _Response:
        return _Response.json(self._stats())

    def _destinations_get(self, query: dict[str, str]) -> _Response:
        return _Response.json({"destinations": [
            {"destination": name, "consecutive_failures": s["consecutive_failures"],
             "down": s["down"]}
            for name, s in self._destinations.items()
        ]})

    def _destinations_reset_post(self, query: dict[str, str]) -> _Response:
        dest = query.get("destination")
        if not dest:
            return _Response.text(400, "destination required")
        state = self._destinations.get(dest)
        if state is None:
            return _Response.text(404, "unknown destination")
        state["consecutive_failures"], state["down"] = 0, False
        return _Response.text(200, "ok")

    def _mappings_get(self, query: dict[str, str]) -> _Response:
        ident = query.get("identifier")
        if not ident:
            return _Response.text(400, "identifier required")
        key = self._norm(ident)
        destination, default, cached = self._resolve(key)
        return _Response.json({"identifier": ident, "normalized": key,
                               "destination": destination, "routed_to_default": default,
                               "cached": cached})

    def _mappings_put(self, query: dict[str, str]) -> _Response:
        if self.read_only:
            return _Response.text(501, "mapping store is read-only")
        ident, dest = query.get("identifier"), query.get("destination")
        if not ident or not dest:
            return _Response.text(400, "identifier and destination required")
        if dest not in self._destinations:
            return _Response.text(400, "unknown destination")
        key = self._norm(ident)
        self._mappings[key] = dest
        self._cache.pop(key, None)
        return _Response.text(200, "ok")

    def _mappings_delete(self, query: dict[str, str]) -> _Response:
        if self.read_only:
            return _Response.text(501, "mapping store is read-only")
        ident = query.get("identifier")
        if not ident:
            return _Response.text(400, "identifier required")
        key = self._norm(ident)
        self._cache.pop(key, None)
        removed = self._mappings.pop(key, None) is not None
        return _Response.text(200, "removed" if removed else "absent")

    def _mappings_reload_post(self, query: dict[str, str]) -> _Response:
        self._reloads["mappings"] += 1
        return _Response.text(200, "reloaded")

    def _cache_invalidate_post(self, query: dict[str, str]) -> _Response:
        ident = query.get("identifier")
        if ident:
            self._cache.pop(self._norm(ident), None)
        else:
            self._cache.clear()
        return _Response.text(200, "ok")

    def _connections_kick_post(self, query: dict[str, str]) -> _Response:
        ident = query.get("identifier")
        if not ident:
            return _Response.text(400, "identifier required")
        kicked = self._sessions.pop(self._norm(ident), 0)
        return _Response.text(200, f"kicked {kicked}")

    def _connections_delay_post(self, query: dict[str, str]) -> _Response:
        ident, raw = query.get("identifier"), query.get("seconds")
        if not ident or raw is None or raw == "":
            return _Response.text(400, "identifier and seconds required")
        # Rust's u64 parser: optional '+', ASCII digits, nothing else.
        if not re.fullmatch(r"\+?[0-9]+", raw) or int(raw) > _U64_MAX:
            return _Response.text(400, "invalid seconds")
        self._delays[self._norm(ident)] = Delay(int(raw), time.time())
        return _Response.text(200, "ok")

    def _config_reload_post(self, query: dict[str, str]) -> _Response:
        if self.config_reload == "unavailable":
            return _Response.text(503, "config reload not available")
        if self.config_reload == "fail":
            return _Response.text(400, f"reload failed: {self.config_reload_error}")
        self._reloads["config"] += 1
        return _Response.json({"reloaded": True, "note": "listener and TLS settings need a "
                               "restart to change"})

    # ---- state helpers (called with the lock held) ------------------------------------

    def _norm(self, identifier: str) -> str:
        return identifier.lower() if self.normalize else identifier

    def _resolve(self, key: str) -> tuple[str, bool, bool]:
        """(destination, routed_to_default, served from cache); a lookup fills the cache."""
        hit = self._cache.get(key)
        if hit is not None:
            self._hits += 1
            return hit[0], hit[1], True
        self._misses += 1
        mapped = self._mappings.get(key)
        entry = (mapped, False) if mapped is not None else (self.default_destination, True)
        self._cache[key] = entry
        return entry[0], entry[1], False

    def _stats(self) -> dict[str, Any]:
        lookups = self._hits + self._misses
        return {
            "cache_hits": self._hits,
            "cache_misses": self._misses,
            "hit_rate_pct": round(100.0 * self._hits / lookups, 2) if lookups else 0.0,
            "cache_entries": len(self._cache),
            "active_connections": sum(self._sessions.values()),
        }


# ---- wire helpers ---------------------------------------------------------------------


def _strip(path: str) -> str:
    return path.rstrip("/") or "/"


def _method_not_allowed() -> _Response:
    return _Response.text(405, "method not allowed")


def _interrupted(alive: threading.Event, seconds: float) -> bool:
    """Sleep `seconds` unless die() comes first; True if it did."""
    deadline = time.monotonic() + seconds
    while alive.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(left, 0.05))
    return True


def _read_line(reader: Any) -> bytes:
    line = reader.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise _BadRequest("line too long")
    return line


def _read_request(reader: Any, client: str) -> _Request:
    line = _read_line(reader)
    if not line:
        raise OSError("closed before a request")
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest("bad request line")
    method, target, _version = parts
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS + 1):
        raw = _read_line(reader)
        if raw in (b"\r\n", b"\n"):
            break
        if not raw:
            raise _BadRequest("headers cut short")
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep:
            raise _BadRequest("bad header")
        headers.setdefault(name.strip().lower(), value.strip())
    else:
        raise _BadRequest("too many headers")
    _drain_body(reader, headers)
    path, _, query_string = target.partition("?")
    return _Request(method, _strip(path), _parse_query(query_string), headers, client)


def _parse_query(query_string: str) -> dict[str, str]:
    query: dict[str, str] = {}
    for pair in query_string.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        query.setdefault(unquote(key), unquote(value))  # the first occurrence wins
    return query


def _drain_body(reader: Any, headers: dict[str, str]) -> None:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        total = 0
        while True:
            size = int(_read_line(reader).split(b";")[0].strip() or b"0", 16)
            total += size
            if total > _MAX_BODY:
                raise _BadRequest("body too large")
            if size == 0:
                while _read_line(reader) not in (b"\r\n", b"\n", b""):
                    pass
                return
            reader.read(size + 2)
    length = headers.get("content-length", "0").strip() or "0"
    if not length.isdigit() or int(length) > _MAX_BODY:
        raise _BadRequest("bad content-length")
    if int(length):
        reader.read(int(length))


def _drain(reader: Any) -> bytes:
    """Read the request head (and a declared body) without interpreting it."""
    head = b""
    try:
        for _ in range(_MAX_HEADERS + 2):
            line = reader.readline(_MAX_LINE)
            head += line
            if line in (b"\r\n", b"\n", b""):
                break
        match = re.search(rb"(?im)^content-length:\s*(\d{1,7})\s*$", head)
        if match and int(match.group(1)) <= _MAX_BODY:
            reader.read(int(match.group(1)))
    except (OSError, ValueError):
        pass
    return head


def _peek_line(head: bytes) -> tuple[str, str]:
    """Method and path of a drained request, for the log only."""
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
    if len(parts) == 3:
        return parts[0], _strip(parts[1].partition("?")[0])
    return "", ""


def _encode(response: _Response) -> bytes:
    body = response.body.encode()
    try:
        reason = http.HTTPStatus(response.status).phrase
    except ValueError:
        reason = "Unknown"
    head = (
        f"HTTP/1.1 {response.status} {reason}\r\n"
        f"content-type: {response.content_type}\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n"
        f"date: {formatdate(usegmt=True)}\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + body
