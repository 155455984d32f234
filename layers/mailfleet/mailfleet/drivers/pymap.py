"""pymap hosts: the admin gRPC service, through the pymapadmin grpclib stubs.

Endpoints are `https://host:port` (gRPC over TLS) or `unix:///path/admin.sock` (no TLS, but
still a token). Every call carries `client-version` (our pymapadmin version) and
`auth-token` metadata. Errors come back inside a successful gRPC response (`result.code ==
FAILURE` with a `result.key`); those become HostError(command, code=key), or auth for
`InvalidAuth`/`AuthorizationFailure`.

The engine calls drivers from worker threads, while grpclib is asyncio: every pymap driver
runs its calls on one event loop in one background thread, shared by the process, so
channels (and their TLS connections) are reused across calls and no loop is built per
call. grpclib, pymapadmin and protobuf are imported on first use, not with this module:
listing or validating pymap actions (the API function) never loads them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import functools
import hashlib
import hmac
import re
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, StringConstraints

from mailfleet.drivers.base import (
    ActionSpec,
    Deadline,
    Driver,
    DriverContext,
    HealthProbe,
    NoParams,
    require_secret,
)
from mailfleet.drivers.policy import (
    ActionClass,
    Decision,
    Rule,
    change,
    decide,
    destructive,
    raise_to,
    read,
)
from mailfleet.errors import ErrorType, HostError, Unsupported
from mailfleet.models.common import Model
from mailfleet.models.hosts import Credentials, Host, TlsOptions
from mailfleet.models.tokens import Role

if TYPE_CHECKING:
    from grpclib.client import Channel

T = TypeVar("T")

DEFAULT_PORT = 50051  # pymap's default --admin-port
# Our bound, not pymap's: params travel in the job item and the Lambda payload (6 MB).
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_GRACE = 1.0  # the loop's own timeout fires first; this only guards a wedged loop
_CLOSE_WAIT = 5.0
# OpenSSL's X509_V_FLAG_NO_CHECK_TIME (not exported by the ssl module): a pin names one
# exact certificate, so its dates don't matter, as with the HTTP drivers' pins.
_NO_CHECK_TIME = 0x200000

# Result keys that mean "these credentials may not do this" rather than a command failure.
_AUTH_KEYS = frozenset({"InvalidAuth", "AuthorizationFailure"})


# --- parameters -----------------------------------------------------------------------

UserName = Annotated[
    str, StringConstraints(min_length=1, max_length=320, pattern=r"^[^\s\x00-\x1f\x7f]+$")
]
# writeOnly/format: the API's schema marks these so redaction can find them.
Password = Annotated[
    str,
    Field(min_length=1, max_length=1024, json_schema_extra={"format": "password",
                                                            "writeOnly": True}),
]
# An IMAP flag: a system flag (\Seen) or a keyword atom.
MessageFlag = Annotated[
    str, StringConstraints(max_length=64, pattern=r'^\\?[^\s(){%*"\\\]\x00-\x1f\x7f]+$')
]


class _Params(Model):
    model_config = ConfigDict(extra="forbid")


class CheckParams(_Params):
    service: str = Field(
        default="", max_length=256,
        description="gRPC health service name, e.g. pymap.backend; empty for the server",
    )


class UserParams(_Params):
    user: UserName


class UserSetParams(UserParams):
    password: Password
    params: dict[Annotated[str, StringConstraints(min_length=1, max_length=128)],
                 Annotated[str, StringConstraints(max_length=1024)]] = Field(
        default_factory=dict, max_length=64)
    roles: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=64)
    overwrite: bool = Field(
        default=False,
        description="replace an existing user (its password, params and roles); "
                    "without it an existing user fails with CannotReplaceUser",
    )


class UserPasswordParams(UserParams):
    new_password: Password


class AppendParams(UserParams):
    mailbox: str = Field(default="INBOX", min_length=1, max_length=1024)
    message: str = Field(min_length=1, max_length=MAX_MESSAGE_BYTES,
                         description="the RFC 5322 message; bare LF line ends become CRLF")
    flags: list[MessageFlag] = Field(default_factory=list, max_length=32)
    when: datetime | None = Field(
        default=None, description="the message's internal date (default: now); naive is UTC")


_ACTIONS: dict[str, ActionSpec] = {
    spec.name: spec
    for spec in (
        ActionSpec("ping", "The host's pymap and pymap-admin versions.", NoParams),
        ActionSpec("check", "gRPC health check; fails unless the host reports SERVING.",
                   CheckParams),
        ActionSpec("user.get", "A user's roles and params, and whether a password is set "
                   "(with its hash scheme; the hash itself is never returned).", UserParams),
        ActionSpec("user.set", "Create a user (or replace it, with overwrite) with a "
                   "password, params and roles.", UserSetParams, mutating=True),
        ActionSpec("user.delete", "Delete a user and its mail.", UserParams, mutating=True),
        ActionSpec("user.password", "Change an existing user's password, keeping its params "
                   "and roles.", UserPasswordParams, mutating=True),
        ActionSpec("append", "Deliver a message straight into a user's mailbox.",
                   AppendParams, mutating=True),
    )
}

# The action policy (drivers/policy.py): class and least role of every action.
POLICY: dict[str, Rule] = {
    "ping": read("the host's versions"),
    "check": read("the gRPC health check"),
    "user.get": read("a user's roles and params (never the password hash)"),
    "user.set": change("creates a user with a password (`overwrite: true` makes it "
                       "destructive: it replaces an existing user's password)"),
    "append": change("delivers a message into a user's mailbox"),
    "user.delete": destructive("deletes a user and all its mail"),
    "user.password": destructive("replaces a user's password (a credential)"),
}
_ACTIONS = {name: replace(spec, rule=POLICY.get(name)) for name, spec in _ACTIONS.items()}


# --- the shared event loop ------------------------------------------------------------

_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _shared_loop() -> asyncio.AbstractEventLoop:
    """The process's one loop for pymap calls, started on first use (a daemon thread:
    it never keeps the process alive, and a frozen Lambda simply resumes it)."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="mailfleet-pymap-loop",
                             daemon=True).start()
            _loop = loop
        return _loop


# --- TLS ------------------------------------------------------------------------------

def _client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    return ctx


@functools.lru_cache(maxsize=64)
def _verifying_context(verify: bool, ca_pem: str | None) -> ssl.SSLContext:
    """System CAs by default; `ca_pem` instead of them; or no checks when verify is off.
    Shared per setting: loading the system store costs more than a handshake."""
    ctx = _client_context()
    if ca_pem:
        ctx.load_verify_locations(cadata=ca_pem)
    elif verify:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _pinned_context(host: str, port: int, pin: str, timeout: float) -> ssl.SSLContext:
    """A context that trusts exactly the certificate whose SHA-256 is `pin`.

    grpclib sends the HTTP/2 preface as soon as TLS is up and offers no hook in between,
    so the pin can't be checked on the channel's own connection. Instead a first
    connection only completes the handshake, takes the peer's certificate, compares it
    with the pin and closes, having sent nothing. On a match, the channel's context
    trusts that one certificate as its only anchor: if the host presents any other
    certificate later (a swap after the check, a reconnect), the handshake fails there,
    again before any byte of gRPC.
    """
    probe = _client_context()
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=probe), timeout)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.transport.abort()  # no close_notify to wait for: nothing was sent
    presented = hashlib.sha256(der or b"").hexdigest()
    if not der or not hmac.compare_digest(presented, pin):
        raise HostError(ErrorType.TLS, "certificate does not match the pinned SHA-256 "
                        "fingerprint; nothing was sent", code="pin_mismatch",
                        details={"presented_sha256": presented})
    ctx = _client_context()
    ctx.check_hostname = False  # the pin names the certificate; its names don't matter
    ctx.load_verify_locations(cadata=der)
    # A leaf (not only a self-signed root) may be the one trust anchor.
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | _NO_CHECK_TIME
    return ctx


def _host_port(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint)
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        port = -1
    if parts.scheme != "https" or not parts.hostname or not 0 < port < 65536:
        raise HostError(ErrorType.CONNECTION,
                        "a pymap endpoint must be https://host:port or unix:///path")
    return parts.hostname, port


# --- errors ---------------------------------------------------------------------------

def _response_text(response: bytes) -> str:
    return response.decode("utf-8", "replace").strip()[:500] or "the host reported a failure"


def _check_result(response: Any) -> None:
    result = response.result
    from pymapadmin.grpc.admin_pb2 import FAILURE

    if result.code == FAILURE:
        key = result.key or "Failure"
        kind = ErrorType.AUTH if key in _AUTH_KEYS else ErrorType.COMMAND
        raise HostError(kind, _response_text(result.response), code=key)


def _status_error(status: Any, message: str | None) -> HostError:
    from grpclib.const import Status

    name = status.name
    text = f"gRPC {name}: {message}" if message else f"gRPC {name}"
    if status in (Status.UNAUTHENTICATED, Status.PERMISSION_DENIED):
        return HostError(ErrorType.AUTH, text, code=name)
    if status is Status.UNAVAILABLE:
        return HostError(ErrorType.CONNECTION, text, code=name, retryable=True)
    if status is Status.DEADLINE_EXCEEDED:
        return HostError(ErrorType.TIMEOUT, text, code=name)
    if status is Status.FAILED_PRECONDITION:  # pymap: "Incompatible version"
        from pymapadmin.__about__ import __version__

        return HostError(ErrorType.UNSUPPORTED, f"{text} (our pymapadmin is {__version__})",
                         code=name)
    if status is Status.UNIMPLEMENTED:  # the host lacks this operation
        return HostError(ErrorType.UNSUPPORTED, text, code=name)
    return HostError(ErrorType.COMMAND, text, code=name)


def _host_error(exc: BaseException, deadline: Deadline) -> HostError:
    """Map a client-side failure to the shared taxonomy; messages carry no token."""
    from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

    if isinstance(exc, HostError):
        return exc
    if isinstance(exc, GRPCError):
        return _status_error(exc.status, exc.message)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return HostError(ErrorType.TLS, f"certificate verification failed "
                         f"({exc.verify_message}); nothing was sent")
    if isinstance(exc, ssl.SSLError):
        return HostError(ErrorType.TLS, f"TLS handshake failed ({exc.reason}); nothing was sent")
    if isinstance(exc, TimeoutError):
        return HostError(ErrorType.TIMEOUT, f"no answer within {deadline.seconds:g} s")
    if isinstance(exc, FileNotFoundError):
        return HostError(ErrorType.CONNECTION, "the admin socket does not exist",
                         retryable=True)
    if isinstance(exc, ConnectionRefusedError) or (
        isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED
    ) or (type(exc) is OSError and "Connect call failed" in str(exc)):
        return HostError(ErrorType.CONNECTION, "connection refused", retryable=True)
    if isinstance(exc, socket.gaierror):
        return HostError(ErrorType.CONNECTION, "host name does not resolve", retryable=True)
    if isinstance(exc, StreamTerminatedError | ConnectionResetError | BrokenPipeError
                  | EOFError):
        return HostError(ErrorType.CONNECTION, "the host closed the connection without a "
                         "response")
    if isinstance(exc, ProtocolError):
        return HostError(ErrorType.CONNECTION, "the host does not speak gRPC over HTTP/2")
    if isinstance(exc, OSError):
        return HostError(ErrorType.CONNECTION,
                         f"connection failed ({exc.strerror or type(exc).__name__})")
    return HostError(ErrorType.COMMAND, f"pymap client failure ({type(exc).__name__})")


# --- outputs --------------------------------------------------------------------------

def _password_scheme(stored: str) -> str | None:
    """`pbkdf2-sha256` from `$pbkdf2-sha256$...`; None for anything that isn't a
    modular-crypt hash (a backend might keep a password in clear: never echo it)."""
    match = re.match(r"^\$([a-z0-9-]{1,32})\$", stored)
    return match.group(1) if match else None


def _user_output(response: Any) -> dict[str, Any]:
    """A user without the password hash: job results are readable by every viewer and
    kept in the jobs table, and a hash is an offline-crackable credential. Whether one
    is set, and its scheme (to find users on weak schemes), is what operators need."""
    data = response.data
    has_password = data.HasField("password")
    return {
        "user": response.user,
        # int64 as a string: JSON readers that use doubles would round it.
        "entity_tag": str(response.entity_tag),
        "roles": sorted(data.roles),
        "params": dict(sorted(data.params.items())),
        "password": {
            "set": has_password,
            "scheme": _password_scheme(data.password) if has_password else None,
        },
    }


def _crlf(text: str) -> bytes:
    return re.sub(r"\r?\n", "\r\n", text).encode("utf-8")


# --- the driver -----------------------------------------------------------------------

class PymapDriver(Driver):
    kind: ClassVar[str] = "pymap"

    def __init__(
        self, host: Host, credentials: Credentials, context: DriverContext | None = None
    ) -> None:
        super().__init__(host, credentials, context)
        self._channel: Channel | None = None
        self._connect_lock = asyncio.Lock()  # binds to the shared loop on first use

    policy_rules = POLICY
    health_probe = HealthProbe("ping")

    @classmethod
    def static_actions(cls) -> dict[str, ActionSpec]:
        return _ACTIONS

    def health_details(self, answer: Any, deadline: Deadline) -> dict[str, Any]:
        return {"version": answer.get("pymap_version")} if isinstance(answer, dict) else {}

    @classmethod
    def classify(cls, action: str, params: dict[str, Any] | None) -> Decision:
        decision = decide(cls.kind, POLICY, action)
        if action == "user.set" and (params or {}).get("overwrite") is True:
            decision = raise_to(decision, ActionClass.DESTRUCTIVE, Role.ADMIN,
                                "overwrite replaces an existing user's password",
                                rule="pymap.user.set.overwrite", field="overwrite")
        return decision

    def perform(self, action: str, params: dict[str, Any], deadline: Deadline) -> Any:
        spec = _ACTIONS.get(action)
        if spec is None:
            raise Unsupported(f"pymap host {self.host.id} has no action {action!r}")
        # Validated params arrive in their JSON form; the model gives back typed values.
        args = spec.params.model_validate(params or {})
        token = require_secret(self.credentials, "token")["token"]
        handler: Callable[[Any, str, Deadline], Awaitable[Any]] = getattr(
            self, "_do_" + action.replace(".", "_"))
        return self._run(lambda: handler(args, token, deadline), deadline)

    def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is None:
            return

        async def shut() -> None:
            channel.close()  # the transport belongs to the loop: close it there

        try:
            asyncio.run_coroutine_threadsafe(shut(), _shared_loop()).result(_CLOSE_WAIT)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass  # the loop is gone or wedged; the connection dies with it

    # -- running on the shared loop

    def _run(self, make: Callable[[], Awaitable[T]], deadline: Deadline) -> T:
        wait = deadline.timeout()  # raises the timeout error if nothing is left

        async def guarded() -> T:
            try:
                return await make()
            except Exception as exc:
                raise _host_error(exc, deadline) from exc

        future = asyncio.run_coroutine_threadsafe(guarded(), _shared_loop())
        try:
            return future.result(wait + _GRACE)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise HostError(ErrorType.TIMEOUT,
                            f"no answer within {deadline.seconds:g} s") from None

    async def _connect(self, deadline: Deadline) -> Channel:
        async with self._connect_lock:
            if self._channel is None:
                self._channel = await self._open_channel(deadline)
            return self._channel

    async def _open_channel(self, deadline: Deadline) -> Channel:
        from grpclib.client import Channel

        endpoint = self.host.endpoint
        if endpoint.startswith("unix://"):
            return Channel(path=endpoint[len("unix://"):])
        host, port = _host_port(endpoint)
        tls: TlsOptions = self.host.tls
        if tls.pin_sha256:
            ctx = await _pinned_context(host, port, tls.pin_sha256, deadline.timeout())
        else:
            ctx = _verifying_context(tls.verify, tls.ca_pem)
        return Channel(host, port, ssl=ctx)

    async def _call(
        self, method: Callable[[Channel], Any], request: Any, token: str, deadline: Deadline
    ) -> Any:
        """One RPC: connect (and check the pin) first, so a refused pin counts no attempt."""
        from pymapadmin.__about__ import __version__

        channel = await self._connect(deadline)
        deadline.attempt()
        metadata = {"client-version": __version__, "auth-token": token}
        return await method(channel)(request, timeout=deadline.timeout(), metadata=metadata)

    # -- actions

    async def _do_ping(self, args: NoParams, token: str, deadline: Deadline) -> dict[str, Any]:
        from pymapadmin.__about__ import __version__
        from pymapadmin.grpc.admin_grpc import SystemStub
        from pymapadmin.grpc.admin_pb2 import PingRequest

        response = await self._call(lambda ch: SystemStub(ch).Ping, PingRequest(), token,
                                    deadline)
        _check_result(response)
        return {
            "pymap_version": response.pymap_version,
            "pymap_admin_version": response.pymap_admin_version,
            "client_version": __version__,
        }

    async def _do_check(self, args: CheckParams, token: str, deadline: Deadline
                        ) -> dict[str, Any]:
        from pymapadmin.grpc.health_grpc import HealthStub
        from pymapadmin.grpc.health_pb2 import HealthCheckRequest, HealthCheckResponse

        response = await self._call(lambda ch: HealthStub(ch).Check,
                                    HealthCheckRequest(service=args.service), token, deadline)
        status = HealthCheckResponse.ServingStatus.Name(response.status)
        if response.status != HealthCheckResponse.ServingStatus.SERVING:
            raise HostError(ErrorType.COMMAND, f"the host reports {status}", code=status)
        return {"service": args.service, "status": status}

    async def _do_user_get(self, args: UserParams, token: str, deadline: Deadline
                           ) -> dict[str, Any]:
        from pymapadmin.grpc.admin_grpc import UserStub
        from pymapadmin.grpc.admin_pb2 import GetUserRequest

        response = await self._call(lambda ch: UserStub(ch).GetUser,
                                    GetUserRequest(user=args.user), token, deadline)
        _check_result(response)
        return _user_output(response)

    async def _do_user_set(self, args: UserSetParams, token: str, deadline: Deadline
                           ) -> dict[str, Any]:
        from pymapadmin.grpc.admin_grpc import UserStub
        from pymapadmin.grpc.admin_pb2 import SetUserRequest, UserData

        data = UserData(password=args.password, params=args.params, roles=args.roles)
        request = SetUserRequest(user=args.user, overwrite=args.overwrite, data=data)
        response = await self._call(lambda ch: UserStub(ch).SetUser, request, token, deadline)
        _check_result(response)
        return {"user": response.user, "entity_tag": str(response.entity_tag),
                "overwrite": args.overwrite}

    async def _do_user_delete(self, args: UserParams, token: str, deadline: Deadline
                              ) -> dict[str, Any]:
        from pymapadmin.grpc.admin_grpc import UserStub
        from pymapadmin.grpc.admin_pb2 import DeleteUserRequest

        response = await self._call(lambda ch: UserStub(ch).DeleteUser,
                                    DeleteUserRequest(user=args.user), token, deadline)
        _check_result(response)
        return {"user": args.user, "deleted": True}

    async def _do_user_password(self, args: UserPasswordParams, token: str, deadline: Deadline
                                ) -> dict[str, Any]:
        """As pymap-admin's change-password: read the user, then write it back with the new
        password, guarded by the entity tag so a change in between is refused, not lost."""
        from pymapadmin.grpc.admin_grpc import UserStub
        from pymapadmin.grpc.admin_pb2 import GetUserRequest, SetUserRequest, UserData

        current = await self._call(lambda ch: UserStub(ch).GetUser,
                                   GetUserRequest(user=args.user), token, deadline)
        _check_result(current)
        data = UserData(password=args.new_password, params=current.data.params,
                        roles=current.data.roles)
        request = SetUserRequest(user=args.user, previous_entity_tag=current.entity_tag,
                                 data=data)
        response = await self._call(lambda ch: UserStub(ch).SetUser, request, token, deadline)
        _check_result(response)
        return {"user": response.user, "entity_tag": str(response.entity_tag)}

    async def _do_append(self, args: AppendParams, token: str, deadline: Deadline
                         ) -> dict[str, Any]:
        from pymapadmin.grpc.admin_grpc import MailboxStub
        from pymapadmin.grpc.admin_pb2 import AppendRequest

        when = args.when or datetime.now(UTC)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        request = AppendRequest(user=args.user, mailbox=args.mailbox, data=_crlf(args.message),
                                flags=args.flags, when=int(when.timestamp()))
        response = await self._call(lambda ch: MailboxStub(ch).Append, request, token,
                                    deadline)
        # The CLI crashes on keys it has no text for (UserNotFound); here any key is an error.
        _check_result(response)
        delivered = response.HasField("uid")  # no uid: the user's sieve filter discarded it
        return {
            "user": args.user,
            "delivered": delivered,
            "mailbox": response.mailbox or None,
            "validity": response.validity if response.HasField("validity") else None,
            "uid": response.uid if delivered else None,
        }

