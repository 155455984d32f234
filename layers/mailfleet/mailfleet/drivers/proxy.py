"""Driver for the Stalwart migration proxy's management API (implicit TLS, bearer token).

Every endpoint is one action. The proxy locks a client address out after a handful of
failed logins, so this driver never retries anything and, once it has seen a 401 or a
429, refuses every further call on the same instance without sending a request: the
engine keeps one instance per host for a whole job or cutover step, so one refusal stops
that job from hammering the proxy into (or deeper into) a lockout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any, ClassVar
from urllib.parse import quote

import requests
from pydantic import ConfigDict, Field, StringConstraints

from mailfleet.drivers.base import (
    ActionSpec,
    Deadline,
    Driver,
    DriverContext,
    HealthProbe,
    HostRole,
    NoParams,
    require_secret,
)
from mailfleet.drivers.http import CONNECT_TIMEOUT, causes, session_for, transport_error
from mailfleet.drivers.policy import Rule, change, read, session
from mailfleet.errors import ErrorType, HostError, Unsupported
from mailfleet.models.common import Model
from mailfleet.models.hosts import Credentials, Host
from mailfleet.models.tokens import Role

# Bodies of this API are a line or a small JSON document; anything bigger is not the proxy.
MAX_BODY = 1 << 20
DETAIL_CHARS = 500

# No control characters: they could not travel in a query string intact anyway.
Identifier = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1024,
                           pattern=r"^[^\x00-\x1f\x7f]+$")
]
Destination = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255,
                           pattern=r"^[^\x00-\x1f\x7f]+$")
]


class _Params(Model):
    model_config = ConfigDict(extra="forbid")


class DestinationParams(_Params):
    destination: Destination


class IdentifierParams(_Params):
    identifier: Identifier


class MappingSetParams(_Params):
    identifier: Identifier
    destination: Destination


class CacheInvalidateParams(_Params):
    identifier: Identifier | None = Field(
        default=None, description="one account; without it the whole route cache is cleared"
    )


class DelayParams(_Params):
    identifier: Identifier
    # strict: a JSON true must not become a one-second delay. A day is far beyond any
    # sensible hold-back; a bigger number is a typo that would lock an account out.
    seconds: int = Field(ge=0, le=86400, strict=True)


Parser = Callable[[str, str], Any]


@dataclass(frozen=True)
class _Route:
    method: str
    path: str
    parse: Parser
    query: tuple[str, ...] = ()
    authenticated: bool = True


def _plain(expected: str, value: dict[str, Any]) -> Parser:
    def parse(body: str, content_type: str) -> Any:
        if body.strip() != expected:
            raise _unexpected(body)
        return dict(value)

    return parse


def _kicked(body: str, content_type: str) -> Any:
    match = re.fullmatch(r"kicked (\d+)", body.strip())
    if match is None:
        raise _unexpected(body)
    return {"kicked": int(match.group(1))}


def _removed(body: str, content_type: str) -> Any:
    word = body.strip()
    if word not in ("removed", "absent"):
        raise _unexpected(body)
    return {"removed": word == "removed"}


def _json(body: str, content_type: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise _unexpected(body) from None


def _unexpected(body: str) -> HostError:
    return HostError(ErrorType.COMMAND, "the proxy answered 200 with a body this driver does "
                     "not understand", code=200, details={"body": body[:DETAIL_CHARS]})


_OK = _plain("ok", {"ok": True})

_ROUTES: dict[str, _Route] = {
    "health": _Route("GET", "/healthz", _OK, authenticated=False),
    "stats": _Route("GET", "/stats", _json),
    "destinations.list": _Route("GET", "/destinations", _json),
    "destinations.reset": _Route("POST", "/destinations/reset", _OK, ("destination",)),
    "mapping.get": _Route("GET", "/mappings", _json, ("identifier",)),
    "mapping.set": _Route("PUT", "/mappings", _OK, ("identifier", "destination")),
    "mapping.delete": _Route("DELETE", "/mappings", _removed, ("identifier",)),
    "mappings.reload": _Route("POST", "/mappings/reload",
                              _plain("reloaded", {"reloaded": True})),
    "cache.invalidate": _Route("POST", "/cache/invalidate", _OK, ("identifier",)),
    "connections.kick": _Route("POST", "/connections/kick", _kicked, ("identifier",)),
    "connections.delay": _Route("POST", "/connections/delay", _OK, ("identifier", "seconds")),
    "config.reload": _Route("POST", "/config/reload", _json),
}

_ACTIONS: dict[str, ActionSpec] = {
    spec.name: spec
    for spec in (
        ActionSpec("health", "Liveness of the management listener (GET /healthz)."),
        ActionSpec("stats", "Route-cache and connection counters."),
        ActionSpec("destinations.list",
                   "Every destination with its consecutive failures and down state."),
        ActionSpec("destinations.reset",
                   "Clear a destination's failure count and down state.",
                   DestinationParams, mutating=True),
        ActionSpec("mapping.get", "How an identifier resolves: destination, default "
                   "fall-through, cached.", IdentifierParams),
        ActionSpec("mapping.set", "Map an identifier to a destination (drops its cached "
                   "route).", MappingSetParams, mutating=True),
        ActionSpec("mapping.delete", "Remove an identifier's mapping; it falls back to the "
                   "default destination.", IdentifierParams, mutating=True),
        ActionSpec("mappings.reload", "Re-read the mapping store from its source.",
                   NoParams, mutating=True),
        ActionSpec("cache.invalidate", "Drop one identifier's cached route, or the whole "
                   "cache.", CacheInvalidateParams, mutating=True),
        ActionSpec("connections.kick", "End every live session of an identifier.",
                   IdentifierParams, mutating=True),
        ActionSpec("connections.delay", "Hold new logins of an identifier back for N "
                   "seconds.", DelayParams, mutating=True),
        ActionSpec("config.reload", "Re-read and validate the proxy's configuration.",
                   NoParams, mutating=True),
    )
}

# The action policy (drivers/policy.py): class and least role of every action.
POLICY: dict[str, Rule] = {
    "health": read("liveness of the management listener"),
    "stats": read("route-cache and connection counters"),
    "destinations.list": read("destinations with their failure counts"),
    "mapping.get": read("where an identifier goes"),
    "destinations.reset": change("clears a destination's failure count and down state"),
    "mapping.set": change("routes an identifier to another destination"),
    "mapping.delete": change("sends an identifier back to the default destination"),
    "mappings.reload": change("re-reads the mapping store"),
    "cache.invalidate": session("drops cached routes (looked up again on next login)"),
    "connections.kick": session("ends an identifier's live sessions"),
    "connections.delay": session("holds an identifier's new logins back for a while"),
    "config.reload": change("re-reads the proxy's configuration", Role.ADMIN),
}

# 500 bodies of writes that failed in the store: the request was sound, try again later.
_TRANSIENT_500 = ("upsert failed", "remove failed", "reload failed")


class ProxyDriver(Driver):
    kind: ClassVar[str] = "proxy"

    def __init__(self, host: Host, credentials: Credentials,
                 context: DriverContext | None = None) -> None:
        super().__init__(host, credentials, context)
        # Set once a 401 or 429 came back; from then on this instance sends nothing.
        self._refusal: HostError | None = None

    policy_rules = POLICY
    health_probe = HealthProbe("health")
    # It locks a controller out after a few refused tokens: one refusal is enough to know.
    locks_out_on_refusal = True
    roles = frozenset({HostRole.PROXY})

    @classmethod
    def static_actions(cls) -> dict[str, ActionSpec]:
        return {name: replace(spec, rule=POLICY.get(name)) for name, spec in _ACTIONS.items()}

    def health_details(self, answer: Any, deadline: Deadline) -> dict[str, Any]:
        """How many destinations the proxy routes to, and which it marks down."""
        listed = self.perform("destinations.list", {}, deadline)
        destinations = (listed.get("destinations") or []) if isinstance(listed, dict) else []
        return {"destinations": len(destinations),
                "destinations_down": sorted(str(d.get("destination")) for d in destinations
                                            if isinstance(d, dict) and d.get("down"))}

    def end_sessions(self, account: str, deadline: Deadline) -> Any:
        params = self.validate("connections.kick", {"identifier": account}, deadline)
        return self.perform("connections.kick", params, deadline)

    def perform(self, action: str, params: dict[str, Any], deadline: Deadline) -> Any:
        if self._refusal is not None:
            raise self._refused_again()
        route = _ROUTES.get(action)
        if route is None:
            raise Unsupported(f"proxy host {self.host.id} has no action {action!r}")
        headers = {"Accept": "application/json, text/plain"}
        if route.authenticated:
            token = require_secret(self.credentials, "token")["token"]
            headers["Authorization"] = f"Bearer {token}"
        query = {name: str(params[name]) for name in route.query if params.get(name) is not None}

        read_timeout = deadline.timeout()  # raises TIMEOUT before anything is sent
        deadline.attempt()
        status, content_type, body = self._send(route, query, headers, deadline, read_timeout)
        if status == 200:
            return route.parse(body, content_type)
        error = self._error(action, status, body)
        if error.type in (ErrorType.AUTH, ErrorType.LOCKED_OUT):
            self._refusal = error
        raise error

    def _send(self, route: _Route, query: dict[str, str], headers: dict[str, str],
              deadline: Deadline, read_timeout: float) -> tuple[int, str, str]:
        session = session_for(self.host)
        url = self.host.endpoint.rstrip("/") + route.path
        if query:
            # Percent-encode everything ourselves: requests would send a space as '+', which
            # the proxy (percent-decoding only) would take literally.
            url += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}"
                                  for k, v in query.items())
        try:
            with session.request(
                route.method, url, headers=headers, stream=True,
                allow_redirects=False,
                timeout=(min(CONNECT_TIMEOUT, read_timeout), read_timeout),
            ) as response:
                body = self._read_body(response, deadline)
                content_type = response.headers.get("Content-Type", "")
                return response.status_code, content_type, body
        except requests.RequestException as exc:
            # `from None`: the chained exception would carry the URL into tracebacks.
            raise _transport(exc) from None

    @staticmethod
    def _read_body(response: requests.Response, deadline: Deadline) -> str:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(65536):
            size += len(chunk)
            if size > MAX_BODY:
                raise HostError(ErrorType.COMMAND, "the proxy's answer is larger than "
                                f"{MAX_BODY} bytes", code=response.status_code)
            chunks.append(chunk)
            deadline.timeout()  # a trickling answer must not outlive the deadline
        return b"".join(chunks).decode("utf-8", errors="replace")

    def _error(self, action: str, status: int, body: str) -> HostError:
        text = body.strip()
        details = {"body": text[:DETAIL_CHARS]} if text else {}

        def err(kind: ErrorType, message: str, retryable: bool = False) -> HostError:
            return HostError(kind, message, code=status, retryable=retryable, details=details)

        if status == 401:
            return err(ErrorType.AUTH, "the proxy refused the token (401); not retried, since "
                       "repeated failures lock this controller's address out")
        if status == 429:
            return err(ErrorType.LOCKED_OUT, "the proxy has locked this controller's address "
                       "out after failed logins (429); wait for the lockout to expire")
        if status == 501:
            if "read-only" in text:
                return err(ErrorType.UNSUPPORTED, "the proxy's mapping store is read-only: "
                           "mappings cannot be changed through it, so a cutover through this "
                           "proxy is impossible")
            return err(ErrorType.UNSUPPORTED, f"the proxy does not implement {action} (501)")
        if status == 400:
            if action == "config.reload":
                # Nothing we sent was wrong: the proxy's own configuration file is invalid.
                return err(ErrorType.COMMAND, f"the proxy refused to reload its configuration: "
                           f"{text}")
            return err(ErrorType.INVALID_PARAMS, f"the proxy rejected the request: {text}")
        if status == 404:
            if action == "destinations.reset" and text == "unknown destination":
                return err(ErrorType.COMMAND, "the proxy has no such destination")
            return err(ErrorType.UNSUPPORTED, f"the proxy does not offer {action} (404); "
                       "an older version?")
        if status == 405:
            return err(ErrorType.UNSUPPORTED, f"the proxy does not accept {action} (405)")
        if status == 503 and action == "config.reload":
            return err(ErrorType.UNSUPPORTED, "configuration reload is not available on this "
                       "proxy (503)")
        if status == 500 and text in _TRANSIENT_500:
            return err(ErrorType.COMMAND, f"the proxy failed: {text}", retryable=True)
        return err(ErrorType.COMMAND, f"the proxy answered HTTP {status}",
                   retryable=status in (502, 503, 504))

    def _refused_again(self) -> HostError:
        first = self._refusal
        assert first is not None
        return HostError(
            first.type,
            f"no request was sent: this proxy already answered {first.code} earlier in this "
            f"run, and calling again would only extend the lockout ({first.message})",
            code=first.code,
            retryable=False,
            details={"refused_without_request": True},
        )


def _transport(exc: requests.RequestException) -> HostError:
    # requests reports a read timeout inside the body as a ConnectionError.
    if (isinstance(exc, requests.exceptions.ConnectionError)
            and not isinstance(exc, requests.exceptions.Timeout) and _timed_out(exc)):
        return HostError(ErrorType.TIMEOUT, "no answer before the deadline (the request was "
                         "sent)")
    return transport_error(exc)


def _timed_out(exc: BaseException) -> bool:
    return any(isinstance(e, TimeoutError) or type(e).__name__ == "ReadTimeoutError"
               for e in causes(exc))
