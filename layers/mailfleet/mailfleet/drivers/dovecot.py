"""Dovecot over the doveadm HTTP API (2.3): one doveadm command per request.

The action name is the doveadm command name (case-sensitive) and the params are its
parameters. A host describes its own commands (`GET /doveadm/v1`); that list is cached
per process and can be seeded from outside (`context.extras["doveadm_commands"]`), so a
job is validated without asking the host again.

What the real server does, where it differs from the seed document, is in
/work/shared/contracts/doveadm.md; the error mapping follows that page:
  - a command failure is HTTP 200 with `["error", {"type": "exitCode", "exitCode": N}]`;
  - some inputs crash the worker: the connection closes with no response at all;
  - a POST that fails authentication while carrying `Connection: close` is never answered.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import re
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

import requests

from mailfleet.drivers import dovecot_policy
from mailfleet.drivers.base import (
    ActionSpec,
    Deadline,
    Driver,
    HealthProbe,
    HostRole,
    require_secret,
)
from mailfleet.drivers.http import CONNECT_TIMEOUT, exchange, exchange_async, transport_error
from mailfleet.drivers.policy import Decision
from mailfleet.errors import ErrorType, HostError, InvalidParams, Unsupported
from mailfleet.models.hosts import Host

API_PATH = "/doveadm/v1"
DSYNC_PORT = 2425  # the doveadm TCP listener migrations copy mail to, by default
COMMANDS_TTL = 600.0  # seconds a host's command list is trusted in this process
DEFAULT_LOOKUP_SECONDS = 10.0  # when actions() is asked without a deadline

# exitCode 75 is doveadm's "temporary failure": worth a few quick retries.
TEMPFAIL = 75
NOT_FOUND = 68  # doveadm's "no such session" on kick
RETRY_FIRST_DELAY = 0.2
RETRY_MAX_ATTEMPTS = 4

# The meaning of each exit code, from the seed's table (contracts/doveadm.md adds what
# was seen behind 65 and 68).
EXIT_CODES: dict[int, str] = {
    2: "success, but the mailbox changed during the operation",
    64: "invalid parameters",
    65: "data error (e.g. it already exists)",
    67: "user does not exist",
    68: "not found (e.g. the user has no session)",
    73: "user is over quota",
    75: "temporary failure",
    77: "no permission",
    78: "configuration error",
}

READ_ONLY: frozenset[str] = frozenset({
    "who", "statsDump", "oldstatsDump", "penalty", "quotaGet", "proxyList",
    "directorStatus", "directorMap", "directorDump", "directorRingStatus",
    "mailboxList", "mailboxStatus", "mailboxMetadataGet", "mailboxMetadataList",
    "mailboxPath", "mailboxMutf7", "fetch", "search", "user", "dictGet", "dictIter",
    "fsGet", "fsStat", "fsMetadata", "fsIter", "fsIterDirs", "logErrors", "logFind",
    "serviceStatus", "processStatus", "instanceList", "replicatorStatus",
    "replicatorDsyncStatus", "sisFind",
})

JSON_TYPES: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "boolean": {"type": "boolean"},
    "integer": {"type": "integer"},
    "array": {"type": "array", "items": {"type": "string"}},
}

# -- inputs that crash a doveadm 2.3.19 worker ---------------------------------------------
# contracts/doveadm.md ("Some bad input crashes the worker"): the connection closes with
# no HTTP response, so the client cannot tell whether anything ran. Each rule below was
# seen to crash a real 2.3.19 (tests/integration/test_dovecot_driver.py replays them);
# they are rejected before anything is sent.
NEVER_OVER_HTTP: dict[str, str] = {
    # A well-formed batch does run, but any bad sub-command (CLI words we cannot check)
    # crashes the worker, and the replies come merged into one object.
    "batch": "batch crashes the doveadm HTTP worker on any bad sub-command and merges "
             "their replies; send its commands as separate jobs",
    "dsyncServer": "dsyncServer speaks the dsync protocol and crashes over HTTP",
}
# Mail commands (those taking `allUsers`) crash without one of these.
USER_SELECTOR: tuple[str, ...] = ("user", "allUsers", "userFile")
# Parameters without which the command crashes (its CLI form's positional arguments);
# a trailing "+" means an empty value crashes it too.
_FS = ("fsDriver", "fsArgs")
REQUIRED: dict[str, tuple[str, ...]] = {
    "authCacheFlush": ("user",),  # an empty list is fine, a missing one is not
    "fetch": ("field", "query+"),
    "search": ("query+",),
    "mailboxStatus": ("field+", "mailboxMask+"),
    "mailboxCreate": ("mailbox",),
    "mailboxDelete": ("mailbox",),
    "mailboxRename": ("mailbox", "newName"),
    "mailboxSubscribe": ("mailbox",),
    "mailboxUnsubscribe": ("mailbox",),
    "mailboxUpdate": ("mailbox",),
    "mailboxPath": ("mailbox+",),
    "mailboxMetadataSet": ("mailbox", "key", "value"),
    "mailboxMetadataGet": ("mailbox", "key"),
    "mailboxMetadataUnset": ("mailbox", "key"),
    "mailboxMetadataList": ("mailbox",),
    "mailboxMutf7": ("name",),
    "index": ("mailboxMask",),
    "forceResync": ("mailboxMask",),
    "expunge": ("query+",),
    "altmove": ("query+",),
    "deduplicate": ("query+",),
    "mailboxCacheRemove": ("query+",),
    "flagsAdd": ("flag", "query+"),
    "flagsRemove": ("flag", "query+"),
    "flagsReplace": ("flag", "query+"),
    "copy": ("destinationMailbox", "query+"),
    "move": ("destinationMailbox", "query+"),
    "import": ("sourceLocation", "destParentMailbox", "query+"),
    "backup": ("destination",),
    "sync": ("destination",),
    "fsGet": (*_FS, "path"),
    "fsStat": (*_FS, "path"),
    "fsMetadata": (*_FS, "path"),
    "fsIter": (*_FS, "path"),
    "fsIterDirs": (*_FS, "path"),
    "fsPut": (*_FS, "inputPath", "path"),
    "fsCopy": (*_FS, "sourcePath", "destinationPath"),
    "fsDelete": (*_FS, "path"),
    "instanceRemove": ("name+",),
    "directorKick": ("user",),
}
# At least one of these, else a crash.
ONE_OF: dict[str, tuple[str, ...]] = {
    "proxyKick": ("user", "host"),
}
# Field names the parser accepts; any other one crashes the worker.
FETCH_FIELDS: frozenset[str] = frozenset({
    "user", "mailbox", "mailbox-guid", "seq", "uid", "guid", "flags", "modseq", "hdr",
    "body", "body.snippet", "text", "text.utf8", "size.physical", "size.virtual",
    "date.received", "date.sent", "date.saved", "date.received.unixtime",
    "date.sent.unixtime", "date.saved.unixtime", "imap.envelope", "imap.body",
    "imap.bodystructure", "pop3.uidl", "pop3.order", "refcount", "storageid",
})
FETCH_FIELD_PREFIXES: tuple[str, ...] = ("hdr.", "body.", "binary.")
STATUS_FIELDS: frozenset[str] = frozenset({
    "all", "messages", "recent", "uidnext", "uidvalidity", "unseen", "highestmodseq",
    "vsize", "guid", "firstsaved",
})


def _fetch_field_ok(name: str) -> bool:
    return name in FETCH_FIELDS or (
        name.startswith(FETCH_FIELD_PREFIXES) and len(name.split(".", 1)[1]) > 0
    )


def _words(values: Sequence[str]) -> list[str]:
    # doveadm splits each element on spaces, as its CLI does ("uid flags").
    return [w for v in values for w in v.split()]


# -- the process-wide cache of command lists ----------------------------------------------
_commands_cache: dict[tuple[str, str], tuple[float, list[dict[str, Any]]]] = {}
_cache_lock = threading.Lock()


def cached_commands(host: Host) -> list[dict[str, Any]] | None:
    """The host's command list if this process learned it less than COMMANDS_TTL ago."""
    with _cache_lock:
        hit = _commands_cache.get((host.id, host.endpoint))
    if hit is None or hit[0] < time.monotonic():
        return None
    return hit[1]


def remember_commands(host: Host, commands: list[dict[str, Any]]) -> None:
    with _cache_lock:
        _commands_cache[(host.id, host.endpoint)] = (time.monotonic() + COMMANDS_TTL, commands)


def forget_commands(host_id: str | None = None) -> None:
    """Drop cached command lists (all, or one host's after its endpoint changed)."""
    with _cache_lock:
        for key in [k for k in _commands_cache if host_id is None or k[0] == host_id]:
            del _commands_cache[key]


def check_commands(data: Any) -> list[dict[str, Any]]:
    """The command list as `GET /doveadm/v1` gives it, checked; ValueError if malformed."""
    if not isinstance(data, list):
        raise ValueError("the command list is not a JSON array")
    out: list[dict[str, Any]] = []
    for item in data:
        if not (isinstance(item, dict) and isinstance(item.get("command"), str)
                and isinstance(item.get("parameters"), list)):
            raise ValueError("a command entry lacks `command` or `parameters`")
        params = []
        for p in item["parameters"]:
            if not (isinstance(p, dict) and isinstance(p.get("name"), str)
                    and isinstance(p.get("type"), str)):
                raise ValueError(f"a parameter of {item['command']!r} lacks `name` or `type`")
            params.append({"name": p["name"], "type": p["type"]})
        out.append({"command": item["command"], "parameters": params})
    return out


# -- schemas, specs and validation -----------------------------------------------------


def _describe(command: str) -> str:
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", command).lower()
    return f"doveadm {words}"


def command_schema(command: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON schema for one command's parameters, with the crash rules as `required`."""
    name = command["command"]
    params = {p["name"]: p["type"] for p in command["parameters"]}
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            p: dict(JSON_TYPES.get(t, {}), **{"x-doveadm-type": t}) for p, t in params.items()
        },
    }
    required = [p for p, _ in _required(name) if p in params]
    if required:
        schema["required"] = required
    one_of = USER_SELECTOR if "allUsers" in params else ONE_OF.get(name, ())
    if one_of:
        schema["anyOf"] = [{"required": [p]} for p in one_of if p in params]
    return schema


def _required(command: str) -> list[tuple[str, bool]]:
    """(parameter, must be non-empty) pairs from the REQUIRED table."""
    return [(p.rstrip("+"), p.endswith("+")) for p in REQUIRED.get(command, ())]


def command_spec(command: Mapping[str, Any]) -> ActionSpec:
    name = command["command"]
    description = _describe(name)
    if name in NEVER_OVER_HTTP:
        description += f" (refused: {NEVER_OVER_HTTP[name]})"
    return ActionSpec(
        name=name,
        description=description,
        mutating=name not in READ_ONLY,
        schema=command_schema(command),
        rule=dovecot_policy.RULES.get(name),
    )


def actions_from_commands(commands: Sequence[Mapping[str, Any]]) -> dict[str, ActionSpec]:
    """An ActionSpec per command of a host's list (what GET /hosts/{id}/actions shows)."""
    return {c["command"]: command_spec(c) for c in commands}


def _type_error(action: str, param: str, expected: str, value: Any) -> InvalidParams:
    got = type(value).__name__ if value is not None else "null"
    return InvalidParams(f"{action}: parameter {param!r} must be {expected}, not {got}",
                         field=param)


def _check_type(action: str, param: str, ptype: str, value: Any) -> None:
    if ptype == "string":
        ok = isinstance(value, str)
        expected = "a string"
    elif ptype == "boolean":
        ok = isinstance(value, bool)
        expected = "a boolean"
    elif ptype == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "an integer"
    elif ptype == "array":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        expected = "an array of strings"
    else:  # a type a newer Dovecot may add: let the host judge it
        return
    if not ok:
        raise _type_error(action, param, expected, value)


def _check_crash_rules(action: str, params: dict[str, Any], known: set[str]) -> None:
    if action in NEVER_OVER_HTTP:
        raise InvalidParams(f"{action}: {NEVER_OVER_HTTP[action]}", field=None)
    if "allUsers" in known and not (
        params.get("user") or params.get("allUsers") or params.get("userFile")
    ):
        raise InvalidParams(
            f"{action} needs 'user' (or 'allUsers': true, or 'userFile'); without it "
            "doveadm crashes and answers nothing", field="user")
    for param, non_empty in _required(action):
        value = params.get(param)
        if param in known and (value is None or (non_empty and not value)):
            what = "a non-empty" if non_empty else "a"
            raise InvalidParams(
                f"{action} needs {what} {param!r}; without it doveadm crashes and answers "
                "nothing", field=param)
    one_of = [p for p in ONE_OF.get(action, ()) if p in known]
    if one_of and all(params.get(p) is None for p in one_of):
        raise InvalidParams(
            f"{action} needs one of {', '.join(map(repr, one_of))}; without them doveadm "
            "crashes and answers nothing", field=one_of[0])
    if action == "fetch" and params.get("field"):
        bad = [f for f in _words(params["field"]) if not _fetch_field_ok(f)]
        if bad:
            raise InvalidParams(
                f"fetch: unknown field {bad[0]!r} (doveadm crashes on it); known: "
                f"{', '.join(sorted(FETCH_FIELDS))}, hdr.<name>, body.<section>",
                field="field")
    if action == "mailboxStatus" and params.get("field"):
        bad = [f for f in _words(params["field"]) if f not in STATUS_FIELDS]
        if bad:
            raise InvalidParams(
                f"mailboxStatus: unknown field {bad[0]!r} (doveadm crashes on it); known: "
                f"{', '.join(sorted(STATUS_FIELDS))}", field="field")


def validate_against(
    commands: Sequence[Mapping[str, Any]], action: str, params: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Check one doveadm call against a host's command list, without contacting it.

    Returns the params as they will be sent. Raises Unsupported for an unknown command
    and InvalidParams (field = the parameter; None when the whole call is at fault) for
    an unknown parameter, a wrong type, or an input known to crash the doveadm worker.
    """
    by_name = {c["command"]: c for c in commands}
    command = by_name.get(action)
    if command is None:
        hint = next((n for n in by_name if n.lower() == action.lower()), None)
        extra = f" (commands are case-sensitive: did you mean {hint!r}?)" if hint else ""
        raise Unsupported(f"the host has no doveadm command {action!r}{extra}")
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise InvalidParams(f"{action}: params must be a JSON object", field=None)
    types = {p["name"]: p["type"] for p in command["parameters"]}
    for key, value in params.items():
        if key not in types:
            known = ", ".join(types) or "none"
            raise InvalidParams(
                f"{action}: unknown parameter {key!r} (known: {known})", field=str(key))
        _check_type(action, key, types[key], value)
    out = dict(params)
    if action == "who":
        # Without it, more than one user yields a malformed reply (contract: the who bug).
        out["separateConnections"] = True
    _check_crash_rules(action, out, set(types))
    return out


# -- replies -----------------------------------------------------------------------------


def exit_code_error(command: str, code: int) -> HostError:
    meaning = EXIT_CODES.get(code, "unknown exit code")
    return HostError(ErrorType.EXIT_CODE, f"doveadm {command} failed: exit code {code}, {meaning}",
                     code=code, retryable=code == TEMPFAIL)


def _malformed(command: str, why: str) -> HostError:
    return HostError(ErrorType.COMMAND, f"doveadm {command}: malformed reply ({why})",
                     code="malformed")


def _http_error(command: str, status: int, content_type: str, body: bytes) -> HostError:
    if status == 400:
        # Dovecot explains a malformed body in text/plain; it echoes no credentials.
        text = body.decode("utf-8", "replace").strip()[:300] if "text/" in content_type else ""
        return HostError(ErrorType.INVALID_PARAMS,
                         f"doveadm {command}: the host rejected the request: "
                         f"{text or 'HTTP 400'}", code=400)
    if status == 401:
        return HostError(ErrorType.AUTH, "the host refused our credentials (HTTP 401)",
                         code=401)
    if status == 404:
        return HostError(ErrorType.UNSUPPORTED,
                         "no doveadm HTTP API at this endpoint (HTTP 404)", code=404)
    if status == 500:
        return HostError(ErrorType.COMMAND,
                         f"doveadm {command}: internal server error (HTTP 500; a host with "
                         "neither doveadm_password nor doveadm_api_key answers so)", code=500)
    return HostError(ErrorType.COMMAND, f"doveadm {command}: unexpected HTTP {status}",
                     code=status, retryable=status in (502, 503, 504))


def parse_reply(command: str, tag: str, status: int, content_type: str, body: bytes) -> Any:
    """The `doveadmResponse` payload of one single-command reply, or HostError."""
    if status != 200:
        raise _http_error(command, status, content_type, body)
    try:
        reply = json.loads(body)
    except ValueError:
        raise _malformed(command, "not JSON") from None
    if not (isinstance(reply, list) and len(reply) == 1 and isinstance(reply[0], list)):
        raise _malformed(command, "expected exactly one reply entry")
    entry = reply[0]
    if len(entry) != 3:
        # E.g. `who` without separateConnections: ["doveadmResponse", [u1], {u2}, "tag"].
        raise _malformed(command, f"a reply entry of {len(entry)} items instead of 3")
    kind, payload, reply_tag = entry
    if reply_tag != tag:
        raise _malformed(command, "the reply tag does not match the request")
    if kind == "doveadmResponse":
        if not isinstance(payload, list | dict):
            raise _malformed(command, "the response payload is not an array or object")
        return payload
    if kind != "error" or not isinstance(payload, dict):
        raise _malformed(command, f"unknown reply kind {str(kind)[:40]!r}")
    etype = payload.get("type")
    if etype == "exitCode":
        code = payload.get("exitCode")
        if not isinstance(code, int) or isinstance(code, bool):
            raise _malformed(command, "an exitCode error without a numeric exitCode")
        raise exit_code_error(command, code)
    if etype == "unknownMethod":
        raise HostError(ErrorType.UNSUPPORTED, f"the host has no doveadm command {command!r}",
                        code="unknownMethod")
    if etype == "invalidRequest":
        raise HostError(ErrorType.INVALID_PARAMS,
                        f"doveadm {command}: the host rejected the parameters "
                        "(invalidRequest: an unknown parameter?)", code="invalidRequest")
    if etype == "unAuthorized":
        raise HostError(ErrorType.AUTH,
                        f"doveadm {command} is not allowed on this host "
                        "(doveadm_allowed_commands)", code="unAuthorized")
    raise HostError(ErrorType.COMMAND, f"doveadm {command} failed ({str(etype)[:40]})",
                    code=str(etype)[:40])


def _transport_error(exc: requests.RequestException, command: str,
                     deadline: Deadline) -> HostError:
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return HostError(
            ErrorType.TIMEOUT,
            f"doveadm {command}: no answer within {deadline.seconds:g} s. The request was "
            "sent, so it may have run; the host may also have refused our credentials "
            "(doveadm leaves a failed-auth request unanswered when the client sends "
            "Connection: close)")
    error = transport_error(exc)
    # transport_error's words for RemoteDisconnected / ConnectionResetError.
    if error.type is ErrorType.CONNECTION and "without a response" in error.message:
        # Typically a doveadm worker that crashed on the input: it may have run.
        return HostError(
            ErrorType.CONNECTION,
            f"doveadm {command}: the host closed the connection without a response "
            "(the doveadm worker may have crashed; the command may have run)")
    return error


@dataclass(frozen=True)
class DoveadmCall:
    """One command with its parameters as sent, serialized once: every host of a job
    sends the same body but for its tag (a fresh one per request), so the JSON is made
    once per job, not once per host."""

    command: str
    params: dict[str, Any]
    head: bytes  # the body up to the tag's opening quote
    tail: bytes  # from the tag's closing quote on

    @classmethod
    def of(cls, command: str, params: dict[str, Any]) -> DoveadmCall:
        """`params` exactly as sent (perform's callers: _command_params first)."""
        text = json.dumps([[command, params, ""]])  # ends with the empty tag: ""]]
        return cls(command, params, text[:-3].encode(), text[-3:].encode())

    def request(self) -> tuple[str, bytes]:
        """A fresh tag and the one-command request body carrying it."""
        tag = f"mf{secrets.token_hex(4)}"  # hex: nothing to escape in JSON
        return tag, self.head + tag.encode() + self.tail


# -- the driver --------------------------------------------------------------------------


class DovecotDriver(Driver):
    kind: ClassVar[str] = "dovecot"
    has_async_perform: ClassVar[bool] = True
    policy_rules = dovecot_policy.RULES
    # The doveadm HTTP API has no ping; processStatus of one service is a constant-size
    # answer.
    health_probe = HealthProbe("processStatus", {"service": ["anvil"]})
    describes_own_actions = True
    roles = frozenset({HostRole.DIRECTOR, HostRole.BACKEND})

    @classmethod
    def static_actions(cls) -> dict[str, ActionSpec]:
        return {}  # every host says what it offers (GET /doveadm/v1)

    @classmethod
    def classify(cls, action: str, params: dict[str, Any] | None) -> Decision:
        return dovecot_policy.classify(action, params)

    # -- the host's command list ---------------------------------------------------------

    def commands(self, deadline: Deadline | None = None) -> list[dict[str, Any]]:
        """The host's commands: seeded by the caller, cached, or asked of the host."""
        seeded = self.context.extras.get("doveadm_commands")
        if seeded:
            # The inventory stores only lists check_commands passed; checking one again
            # per host cost more CPU than the request itself in a thousand-host job.
            if self.context.extras.get("doveadm_commands_checked"):
                return seeded
            return check_commands(seeded)
        cached = cached_commands(self.host)
        if cached is not None:
            return cached
        return self.fetch_commands(deadline or Deadline.after(DEFAULT_LOOKUP_SECONDS))

    def fetch_commands(self, deadline: Deadline) -> list[dict[str, Any]]:
        """Ask the host for its command list (and cache it for COMMANDS_TTL)."""
        status, ctype, body = self._exchange("GET", None, deadline, "command list")
        if status != 200:
            raise _http_error("command list", status, ctype, body)
        try:
            commands = check_commands(json.loads(body))
        except ValueError as exc:
            raise _malformed("command list", str(exc)) from None
        remember_commands(self.host, commands)
        return commands

    @classmethod
    def actions_from_commands(cls, commands: Sequence[Mapping[str, Any]]
                              ) -> dict[str, ActionSpec]:
        return actions_from_commands(commands)

    @classmethod
    def validate_against_commands(cls, commands: Sequence[Mapping[str, Any]], action: str,
                                  params: Mapping[str, Any]) -> dict[str, Any]:
        return validate_against(commands, action, params)

    def actions(self, deadline: Deadline | None = None) -> dict[str, ActionSpec]:
        return actions_from_commands(self.commands(deadline))

    def validate(self, action: str, params: dict[str, Any], deadline: Deadline | None = None
                 ) -> dict[str, Any]:
        return validate_against(self.commands(deadline), action, params)

    def end_sessions(self, account: str, deadline: Deadline) -> Any:
        try:
            return self.perform("kick", {"mask": [account]}, deadline)
        except HostError as exc:
            if exc.type == ErrorType.EXIT_CODE and exc.code == NOT_FOUND:
                return {"kicked": 0}  # no session there: nothing to end
            raise

    # -- performing ----------------------------------------------------------------------

    def prepare(self, action: str, params: dict[str, Any]) -> DoveadmCall:
        """The checked params serialized once for every host of a job (perform_async
        takes either)."""
        return DoveadmCall.of(action, _command_params(action, params))

    def perform(self, action: str, params: dict[str, Any], deadline: Deadline) -> Any:
        """Run one command; exitCode 75 (temporary failure) is retried with back-off
        while the deadline allows, nothing else is."""
        call = DoveadmCall.of(action, _command_params(action, params))
        delay = RETRY_FIRST_DELAY
        for attempt in range(1, RETRY_MAX_ATTEMPTS + 1):
            try:
                return self._run_call(call, deadline)
            except HostError as error:
                if not _retry_allowed(error, attempt, delay, deadline):
                    raise
                deadline.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def perform_async(self, action: str, params: dict[str, Any] | DoveadmCall,
                            deadline: Deadline) -> Any:
        """`perform` in an event loop (the fan-out's path for many hosts): the same
        request, retries and errors, on a connection of its own. `params` may come
        `prepare`d (once per job)."""
        call = params if isinstance(params, DoveadmCall) else self.prepare(action, params)
        delay = RETRY_FIRST_DELAY
        for attempt in range(1, RETRY_MAX_ATTEMPTS + 1):
            try:
                return await self._run_async(call, deadline)
            except HostError as error:
                if not _retry_allowed(error, attempt, delay, deadline):
                    raise
                await asyncio.sleep(max(0.0, min(delay, deadline.remaining())))
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _run(self, command: str, params: dict[str, Any], deadline: Deadline) -> Any:
        """One command as given (no `who` rewrite, no retry): migrations' own calls."""
        return self._run_call(DoveadmCall.of(command, params), deadline)

    def _run_call(self, call: DoveadmCall, deadline: Deadline) -> Any:
        command = call.command
        tag, body = call.request()
        status, ctype, data = self._exchange("POST", body, deadline, command, attempt=True)
        return parse_reply(command, tag, status, ctype, data)

    async def _run_async(self, call: DoveadmCall, deadline: Deadline) -> Any:
        command = call.command
        tag, body = call.request()
        headers, timeout = self._prepare(body, deadline, attempt=True)
        try:
            status, ctype, data = await exchange_async(
                self.host, "POST", API_PATH, body=body, headers=headers, timeout=timeout)
        except requests.RequestException as exc:
            raise _transport_error(exc, command, deadline) from None
        return parse_reply(command, tag, status, ctype, data)

    def _prepare(self, body: bytes | None, deadline: Deadline, *, attempt: bool
                 ) -> tuple[dict[str, str], tuple[float, float]]:
        headers = {"Authorization": self._authorization(), "Accept": "application/json"}
        # Both raise once no time is left: nothing is sent then.
        connect, read = deadline.timeout(CONNECT_TIMEOUT), deadline.timeout()
        if attempt:
            deadline.attempt()
        if body is not None:
            headers["Content-Type"] = "application/json"
        return headers, (connect, read)

    def _exchange(self, method: str, body: bytes | None, deadline: Deadline, what: str,
                  *, attempt: bool = False) -> tuple[int, str, bytes]:
        headers, timeout = self._prepare(body, deadline, attempt=attempt)
        # requests never sends Connection: close, so a failed login is answered with 401
        # at once instead of hanging until our timeout.
        try:
            return exchange(self.host, method, API_PATH, body=body, headers=headers,
                            timeout=timeout)
        except requests.RequestException as exc:
            raise _transport_error(exc, what, deadline) from None

    def _authorization(self) -> str:
        secret = require_secret(self.credentials, "api_key", "password")
        if "api_key" in secret:
            return "X-Dovecot-API " + base64.b64encode(secret["api_key"].encode()).decode()
        token = base64.b64encode(f"doveadm:{secret['password']}".encode()).decode()
        return "Basic " + token

    # -- moving a mailbox between backends (dsync), for migrations only --------------------
    # Trusted internal path: the migration logic calls these with a destination it built
    # from the inventory; public jobs never reach them (contracts/doveadm.md, "Moving a
    # mailbox between backends").

    def dsync_backup(self, user: str, to: DsyncTarget, deadline: Deadline, *,
                     lock_seconds: int) -> DsyncOutcome:
        """`backup` of one user from this host to `to` (one-way: `to` is made identical).

        The copy runs on this host for as long as it takes; if it outlasts `deadline` we
        hang up and it goes on (doveadm keeps running a command whose client left), so the
        answer is "running". Every copy takes the user's dsync lock (`lockTimeout`): a
        second copy while one runs fails with exitCode 75 after `lock_seconds`, which also
        means "running". No tempfail retries here: the caller polls."""
        params = {"user": user, "destination": [to.location], "lockTimeout": lock_seconds}
        try:
            self._run("backup", params, deadline)
        except HostError as error:
            if error.type is ErrorType.TIMEOUT:
                return DsyncOutcome.RUNNING
            if error.type is ErrorType.EXIT_CODE and error.code == TEMPFAIL:
                return DsyncOutcome.RUNNING
            if error.type is ErrorType.CONNECTION and "without a response" in error.message:
                # Seen on 2.3.19: the worker dies when it cannot reach the destination.
                raise HostError(
                    ErrorType.CONNECTION,
                    f"doveadm backup: the host closed the connection without a response: it "
                    f"could not reach the destination's doveadm listener at {to.location} "
                    "(or its worker crashed)", retryable=True) from None
            raise
        return DsyncOutcome.DONE

    def mailboxes(self, user: str, deadline: Deadline) -> dict[str, dict[str, Any]]:
        """One user's mailboxes: {name: {"messages": n, "guid": g}} (mailboxList, then
        mailboxStatus on them all). dsync keeps a mailbox's GUID on the copy, so a GUID
        tells a copy of a mailbox from a different one of the same name."""
        listed = self._run("mailboxList", {"user": user}, deadline)
        names = [row.get("mailbox") for row in listed if isinstance(row, dict)]
        status = self._run("mailboxStatus", {"user": user, "field": ["messages", "guid"],
                                             "mailboxMask": ["*"]}, deadline)
        out: dict[str, dict[str, Any]] = {
            n: {"messages": 0, "guid": None} for n in names if isinstance(n, str)}
        for row in status:
            try:
                out[str(row["mailbox"])] = {"messages": int(row["messages"]),
                                            "guid": row.get("guid")}
            except (KeyError, TypeError, ValueError):
                raise _malformed("mailboxStatus", "a row without mailbox or messages") from None
        return out


class DsyncOutcome(StrEnum):
    DONE = "done"
    RUNNING = "running"


_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


@dataclass(frozen=True)
class DsyncTarget:
    """Where a source's dsync reaches the other backend's doveadm listener."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not (1 <= self.port <= 65535):
            raise ValueError("the port must be 1-65535")
        if not (_HOSTNAME.match(self.host) or _is_ip(self.host)):
            raise ValueError("the host must be a host name or an IP address")

    @property
    def location(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"

    @classmethod
    def parse(cls, value: str) -> DsyncTarget:
        """`tcp:host:port` (IPv6 in brackets); ValueError saying what is wrong."""
        match = re.fullmatch(r"tcp:(\[[0-9A-Fa-f:.]+\]|[^:\[\]\s]+):(\d{1,5})", value)
        if match is None:
            raise ValueError("must be tcp:<host>:<port>")
        return cls(match.group(1).strip("[]"), int(match.group(2)))


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _command_params(action: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """A command's parameters as sent: `who` always lists connections one by one."""
    params = dict(params or {})
    if action == "who":
        params["separateConnections"] = True
    return params


def _retry_allowed(error: HostError, attempt: int, delay: float, deadline: Deadline) -> bool:
    """Only a temporary failure (exitCode 75) is retried, and only while the attempts
    last and the deadline leaves room for the retry itself, not only the pause before it."""
    tempfail = error.type is ErrorType.EXIT_CODE and error.code == TEMPFAIL
    return (tempfail and attempt < RETRY_MAX_ATTEMPTS
            and deadline.remaining() >= delay * 1.5)
