"""Pooled HTTPS sessions per host, with verification on by default and certificate pins.

One requests.Session per host endpoint and TLS setting, reused across actions and jobs
in the same process. A pinned host is checked by urllib3's `assert_fingerprint` right
after the handshake, so on a mismatch no request is ever sent.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import http.client
import os
import ssl
import tempfile
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import httptools
import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, Timeout
from urllib3 import exceptions as urllib3_exceptions
from urllib3.util import parse_url
from urllib3.util.ssl_ import create_urllib3_context

from mailfleet.errors import ErrorType, HostError
from mailfleet.models.hosts import Host, TlsOptions

CONNECT_TIMEOUT = 5.0

_sessions: dict[tuple[str, str, str, int], requests.Session] = {}
# The urllib3 pool behind each session, and the default headers sent on it; the oldest
# are let go past MAX_POOLED_HOSTS, so a warm worker that runs batch after batch keeps
# no idle sockets of hosts it no longer talks to (Lambda allows 1,024 descriptors).
_pools: dict[tuple[str, str, str, int], tuple[HTTPConnectionPool, Mapping[str, str]]] = {}
MAX_POOLED_HOSTS = 512
_DEFAULT_HEADERS = dict(requests.utils.default_headers())
_lock = threading.Lock()


class _PinnedAdapter(HTTPAdapter):
    def __init__(self, pin_hex: str, **kwargs: Any) -> None:
        self._pin = pin_hex
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_fingerprint"] = self._pin
        # One ready context: otherwise urllib3 reloads the system CA store for every new
        # connection (~20 ms), and proxies and appliances close every connection.
        ctx = create_urllib3_context(cert_reqs=ssl.CERT_NONE)
        ctx.check_hostname = False
        kwargs["ssl_context"] = ctx
        super().init_poolmanager(*args, **kwargs)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):  # type: ignore[no-untyped-def]
        # The pin replaces chain verification: a self-signed certificate is expected.
        params, key = super().build_connection_pool_key_attributes(request, False, cert)
        key["assert_fingerprint"] = self._pin
        return params, key


def _ca_file(pem: str) -> str:
    """CA bundles are written once per content to a private temp file (requests wants a path)."""
    digest = hashlib.sha256(pem.encode()).hexdigest()[:16]
    path = os.path.join(tempfile.gettempdir(), f"mailfleet-ca-{digest}.pem")
    if not os.path.exists(path):
        fd, tmp = tempfile.mkstemp(prefix="mailfleet-ca-", suffix=".pem")
        with os.fdopen(fd, "w") as fh:
            fh.write(pem)
        os.replace(tmp, path)
    return path


def session_for(host: Host) -> requests.Session:
    tls = host.tls
    key = (host.id, host.endpoint, tls.model_dump_json(), host.max_concurrency)
    with _lock:
        session = _sessions.get(key)
        if session is None:
            session = _new_session(tls, host.max_concurrency)
            _sessions[key] = session
        return session


def _new_session(tls: TlsOptions, pool_size: int) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxies or netrc from the environment
    if tls.pin_sha256:
        adapter: HTTPAdapter = _PinnedAdapter(tls.pin_sha256, pool_maxsize=pool_size, max_retries=0)
        session.verify = False
    else:
        adapter = HTTPAdapter(pool_maxsize=pool_size, max_retries=0)
        if tls.ca_pem:
            session.verify = _ca_file(tls.ca_pem)
        else:
            session.verify = tls.verify
    session.mount("https://", adapter)
    session.mount("http://", HTTPAdapter(pool_maxsize=pool_size, max_retries=0))
    return session


def forget_sessions(host_id: str | None = None) -> None:
    """Drop pooled sessions (after a host's endpoint or TLS settings change)."""
    with _lock:
        for key in [k for k in _pools if host_id is None or k[0] == host_id]:
            _pools.pop(key)[0].close()
        for key in [k for k in _sessions if host_id is None or k[0] == host_id]:
            _sessions.pop(key).close()


def exchange(
    host: Host,
    method: str,
    path: str,
    *,
    body: bytes | None,
    headers: dict[str, str],
    timeout: tuple[float, float],
) -> tuple[int, str, bytes]:
    """One request on the host's pooled connections: (status, content type, body).

    The same urllib3 pool, TLS checks and default headers as `session_for(host)`, without
    requests' per-call work (cookies, hooks, settings merges): about 1 ms of CPU a
    request, more than the request itself, and the fan-out's limit at a thousand hosts.
    Failures are raised as the requests exceptions `transport_error` maps."""
    pool, defaults = _pool_for(host)
    try:
        resp = pool.urlopen(
            method,
            path,
            body=body,
            headers={**defaults, **headers},
            retries=False,
            redirect=False,
            assert_same_host=False,
            timeout=Timeout(connect=timeout[0], read=timeout[1]),
        )
    except (urllib3_exceptions.HTTPError, OSError) as exc:
        raise _as_requests_error(exc) from exc
    return resp.status, resp.headers.get("Content-Type", ""), resp.data


def _pool_for(host: Host) -> tuple[HTTPConnectionPool, Mapping[str, str]]:
    """The host's pool and the default headers its requests carry (a session's, if one
    was made for the host before its first request: callers may set headers there)."""
    key = (host.id, host.endpoint, host.tls.model_dump_json(), host.max_concurrency)
    with _lock:
        hit = _pools.get(key)
        session = _sessions.get(key)
    if hit is not None:
        return hit
    url = host.endpoint.rstrip("/") + "/"
    if url.startswith("http://") and session is None:
        # No TLS to set up: a plain pool, without building a session per host.
        parsed = parse_url(url)
        pool: HTTPConnectionPool = HTTPConnectionPool(
            parsed.host, parsed.port or 80, maxsize=host.max_concurrency, block=False
        )
        entry: tuple[HTTPConnectionPool, Mapping[str, str]] = (pool, _DEFAULT_HEADERS)
    else:
        # Ask the session's adapter, as requests does per call, once: one TLS policy.
        session = session_for(host)
        adapter = session.get_adapter(url)
        prepared = requests.Request("GET", url).prepare()
        pool = adapter.get_connection_with_tls_context(prepared, session.verify, proxies={})
        adapter.cert_verify(pool, url, session.verify, None)
        entry = (pool, session.headers)
    with _lock:
        entry = _pools.setdefault(key, entry)
        while len(_pools) > MAX_POOLED_HOSTS:
            old_key = next(iter(_pools))
            _pools.pop(old_key)[0].close()  # a request still on it finishes; idle ones close
            stale = _sessions.pop(old_key, None)
            if stale is not None:
                stale.close()
        return entry


def _as_requests_error(exc: BaseException) -> requests.RequestException:
    """urllib3's failure as requests would have raised it (for transport_error)."""
    if isinstance(exc, urllib3_exceptions.SSLError):
        return requests.exceptions.SSLError(exc)
    if isinstance(exc, urllib3_exceptions.NewConnectionError):  # before ConnectTimeoutError
        return requests.exceptions.ConnectionError(exc)
    if isinstance(exc, urllib3_exceptions.ConnectTimeoutError):
        return requests.exceptions.ConnectTimeout(exc)
    if isinstance(exc, urllib3_exceptions.ReadTimeoutError):
        return requests.exceptions.ReadTimeout(exc)
    return requests.exceptions.ConnectionError(exc)


def transport_error(exc: requests.RequestException, *, sent: bool | None = None) -> HostError:
    """Map a requests failure to the shared taxonomy. Messages carry no URL (a query may
    hold a token) and no header."""
    if isinstance(exc, requests.exceptions.SSLError):
        text = str(exc)
        if "Fingerprints did not match" in text or "fingerprint" in text.lower():
            return HostError(
                ErrorType.TLS,
                "certificate does not match the pinned SHA-256 fingerprint; nothing was sent",
            )
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return HostError(ErrorType.TLS, "certificate verification failed; nothing was sent")
        return HostError(ErrorType.TLS, "TLS handshake failed; nothing was sent")
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return HostError(ErrorType.TIMEOUT, "connect timed out", retryable=True)
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return HostError(ErrorType.TIMEOUT, "no answer before the deadline (the request was sent)")
    if isinstance(exc, requests.exceptions.ConnectionError):
        root = root_cause(exc)
        if isinstance(root, ConnectionRefusedError):
            return HostError(ErrorType.CONNECTION, "connection refused", retryable=True)
        if isinstance(root, http.client.RemoteDisconnected | ConnectionResetError):
            return HostError(
                ErrorType.CONNECTION, "the host closed the connection without a response"
            )
        if "Name or service not known" in str(exc) or "getaddrinfo" in str(exc):
            return HostError(ErrorType.CONNECTION, "host name does not resolve", retryable=True)
        return HostError(ErrorType.CONNECTION, f"connection failed ({type(root).__name__})")
    return HostError(ErrorType.CONNECTION, f"request failed ({type(exc).__name__})")


MAX_CAUSES = 64  # exceptions looked at behind one failure (chains can loop)


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every exception behind it, each once: requests and urllib3 wrap theirs
    with `raise ... from`, while handling another, and as an argument. Depth first along
    the likeliest cause (`__cause__`, then `__context__`, then the last argument), so the
    chain a plain walk would follow comes first. The one walker over causes: the
    drivers' transport checks (timed out? sent at all? refused?) all ask it."""
    seen: set[int] = set()
    stack = [exc]
    while stack and len(seen) < MAX_CAUSES:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend(reversed(_wrapped(current)))


def _wrapped(exc: BaseException) -> list[BaseException]:
    """What `exc` wraps, likeliest cause first."""
    inner = [a for a in getattr(exc, "args", ()) if isinstance(a, BaseException)]
    return [e for e in (exc.__cause__, exc.__context__, *reversed(inner)) if e is not None]


def root_cause(exc: BaseException) -> BaseException:
    """The innermost OS or http.client error behind requests' and urllib3's wrappers: the
    end of the likeliest chain."""
    last = exc
    for last in causes(exc):
        if not _wrapped(last):
            break
    return last


# -- the asynchronous path -------------------------------------------------------------
# One request on a connection of its own, in the caller's event loop: what a fan-out of
# thousands of doveadm hosts (each closing every connection) needs. A thread per host and
# urllib3's connection machinery cost ~0.4-1 ms of CPU a request; an asyncio protocol
# feeding httptools' C parser costs a fraction of that (h11, pure Python, measured ~0.1 ms
# a request more: a third of the worker's whole CPU per host-action). Same TLS policy
# (verify by default, a CA bundle, or a pin checked before anything is sent) and the same
# failures, raised as the requests exceptions `transport_error` maps.

_contexts: dict[str, ssl.SSLContext] = {}
MAX_REPLY_BYTES = 64 * 1024 * 1024  # a reply larger than this is refused, not buffered
_NO_RESPONSE = "Remote end closed connection without response"


def _ssl_context(tls: TlsOptions) -> ssl.SSLContext:
    """One context per TLS setting (loading the CA store costs ~20 ms)."""
    key = tls.model_dump_json()
    with _lock:
        ctx = _contexts.get(key)
    if ctx is not None:
        return ctx
    if tls.pin_sha256 or not tls.verify:
        # The pin replaces chain verification: it is checked right after the handshake.
        ctx = create_urllib3_context(cert_reqs=ssl.CERT_NONE)
        ctx.check_hostname = False
    else:
        ctx = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
        if tls.ca_pem:
            ctx.load_verify_locations(cafile=_ca_file(tls.ca_pem))
        else:
            ctx.load_default_certs()
            ctx.set_default_verify_paths()
    with _lock:
        return _contexts.setdefault(key, ctx)


class _Reply(asyncio.Protocol):
    """Feeds what the host sends to httptools' parser (llhttp: Content-Length, chunked)
    and resolves `done` with (status, content type, body) once the reply is complete; the
    connection is closed then (Dovecot 2.3 closes every connection after its answer)."""

    def __init__(self, done: asyncio.Future[tuple[int, str, bytes]]) -> None:
        self.done = done
        self.parser = httptools.HttpResponseParser(self)
        self.ctype = b""
        self.body = bytearray()
        self.head_done = False
        self.framed = False  # Content-Length or chunked; else the body ends when the host closes
        self.transport: asyncio.Transport | None = None

    # -- the parser's callbacks ------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self.ctype = value
        elif name in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body += body
        if len(self.body) > MAX_REPLY_BYTES:
            raise ValueError("the reply is too large")

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 1xx: the real answer follows on the same connection
            self.ctype, self.body, self.head_done, self.framed = b"", bytearray(), False, False
            return
        self._end(result=(status, self.ctype.decode("latin-1"), bytes(self.body)))

    # -- the transport's -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            root = (str(exc.__cause__ or exc)[:80] if self.head_done
                    else http.client.BadStatusLine(str(exc)[:80]))
            self._end(error=requests.exceptions.ConnectionError(root))

    def eof_received(self) -> bool:
        self._host_closed(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._host_closed(exc)

    def _host_closed(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if self.head_done and not self.framed:  # a body that ends with the connection
            status = self.parser.get_status_code()
            self._end(result=(status, self.ctype.decode("latin-1"), bytes(self.body)))
            return
        root: Exception = (http.client.IncompleteRead(bytes(self.body)) if self.head_done
                           else exc or http.client.RemoteDisconnected(_NO_RESPONSE))
        self._end(error=requests.exceptions.ConnectionError(root))

    def _end(self, *, result: tuple[int, str, bytes] | None = None,
             error: BaseException | None = None) -> None:
        if not self.done.done():
            if error is not None:
                self.done.set_exception(error)
            else:
                self.done.set_result(result)  # type: ignore[arg-type]
        if self.transport is not None:
            self.transport.close()


def _request_head(method: str, path: str, netloc: str, headers: dict[str, str],
                  body: bytes | None) -> bytes:
    """The request line and headers. No `Connection: close`: doveadm never answers a
    failed login that carries it."""
    fields = {"Host": netloc, "User-Agent": "mailfleet", "Accept-Encoding": "identity",
              **headers}
    if body is not None:
        fields["Content-Length"] = str(len(body))
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in fields.items())]
    head = "\r\n".join(lines)
    if head.count("\n") != len(lines) - 1 or "\r" in head.replace("\r\n", ""):
        raise ValueError("a header or the path holds a line break")  # no header injection
    return (head + "\r\n\r\n").encode("latin-1")


@functools.lru_cache(maxsize=4096)
def _address(endpoint: str) -> tuple[bool, str, int, str]:
    """(TLS?, host name, port, Host header) of an endpoint URL."""
    url = parse_url(endpoint)
    secure = url.scheme == "https"
    port = url.port or (443 if secure else 80)
    hostname = url.host or ""
    return secure, hostname, port, hostname if url.port is None else f"{hostname}:{port}"


async def exchange_async(
    host: Host,
    method: str,
    path: str,
    *,
    body: bytes | None,
    headers: dict[str, str],
    timeout: tuple[float, float],
) -> tuple[int, str, bytes]:
    """`exchange` in an event loop: (status, content type, body) of one request on a new
    connection (timeout: connect, then the whole reply). Failures are raised as the
    requests exceptions `transport_error` maps."""
    secure, hostname, port, netloc = _address(host.endpoint)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[int, str, bytes]] = loop.create_future()
    ctx = _ssl_context(host.tls) if secure else None
    try:
        async with asyncio.timeout(timeout[0]):
            transport, _ = await loop.create_connection(
                lambda: _Reply(done), hostname, port, ssl=ctx,
                server_hostname=hostname if ctx is not None else None,
            )
    except TimeoutError:
        raise requests.exceptions.ConnectTimeout("connect timed out") from None
    except ssl.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from None
    except OSError as exc:
        raise requests.exceptions.ConnectionError(exc) from None
    try:
        _check_pin(transport, host.tls)
        transport.write(_request_head(method, path, netloc, headers, body) + (body or b""))
        # The reply's own timer fails it (ReadTimeout) instead of a timeout scope and a
        # shield around it: one timer per request, in every host's fan-out.
        expiry = loop.call_later(timeout[1], _reply_late, loop, done)
        try:
            return await done
        finally:
            expiry.cancel()
    finally:
        transport.close()
        if not done.done():
            done.cancel()  # nobody waits for it any more


def _reply_late(loop: asyncio.AbstractEventLoop,
                done: asyncio.Future[tuple[int, str, bytes]]) -> None:
    # A busy loop runs its timers before reading sockets: a reply that came in time may
    # still be unread. One more turn of the loop reads it.
    loop.call_soon(_read_timed_out, done)


def _read_timed_out(done: asyncio.Future[tuple[int, str, bytes]]) -> None:
    if not done.done():
        done.set_exception(requests.exceptions.ReadTimeout("read timed out"))


def _check_pin(transport: asyncio.BaseTransport, tls: TlsOptions) -> None:
    """A pinned host's certificate, checked before anything is sent."""
    if not tls.pin_sha256:
        return
    sslobj = transport.get_extra_info("ssl_object")
    der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    if hashlib.sha256(der or b"").hexdigest() != tls.pin_sha256:
        raise requests.exceptions.SSLError("Fingerprints did not match")
