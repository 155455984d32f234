"""The small interface every driver implements.

A driver is built for one host with its credentials, lists the actions that host accepts
(with a pydantic model for the parameters) and performs one action, returning JSON-able
output or raising HostError. It never retries an authentication failure.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from mailfleet.drivers.policy import Decision, Rule, decide
from mailfleet.errors import ErrorType, HostError, InvalidParams, Unsupported
from mailfleet.models.common import Model
from mailfleet.models.hosts import Credentials, Host
from mailfleet.redact import mask_values, redact


class NoParams(Model):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ActionSpec:
    """One action a host accepts. `mutating` actions change the host (audited as such)."""

    name: str
    description: str
    params: type[BaseModel] = NoParams
    mutating: bool = False
    # For hosts that describe their own commands (doveadm), a ready JSON schema.
    schema: dict[str, Any] | None = None
    # The action policy's rule (class, least role, why); None: refused as unclassified.
    rule: Rule | None = None

    def parameters_schema(self) -> dict[str, Any]:
        return self.schema if self.schema is not None else self.params.model_json_schema()

    def describe(self) -> dict[str, Any]:
        rule = self.rule
        return {
            "name": self.name,
            "description": self.description,
            "mutating": self.mutating,
            "class": rule.action_class.value if rule else "never",
            "least_role": rule.least_role.value if rule and rule.least_role else None,
            "policy": rule.reason if rule else "not in the action policy: refused",
            "parameters": self.parameters_schema(),
        }


@dataclass
class Deadline:
    """The time left for one host's action; every wait and request is bounded by it."""

    at: float
    seconds: float = 0.0
    attempts: int = 0  # wire attempts of the action itself, reported in the host's result

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def timeout(self, cap: float | None = None) -> float:
        """Seconds the next wait may take; raises a timeout error once none are left."""
        left = self.remaining()
        if left <= 0:
            raise HostError(ErrorType.TIMEOUT, f"no answer within {self.seconds:g} s")
        return min(left, cap) if cap is not None else left

    def attempt(self) -> int:
        """Count one more try of the action (drivers call it before each send)."""
        self.attempts += 1
        return self.attempts

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, min(seconds, self.remaining())))


class CredentialKeeper(Protocol):
    """Writes a host's credentials back (token rotation). Implemented over Secrets Manager
    staging labels: the new value is saved as pending before the host is told, and
    promoted only once the host accepted it."""

    def stage_pending(self, credentials: Credentials) -> None: ...

    def promote_pending(self) -> None: ...

    def discard_pending(self) -> None: ...


class Upload(Protocol):
    """A download on its way into the blob store, a chunk at a time (never whole in memory)."""

    def write(self, chunk: bytes) -> None: ...

    def finish(self) -> str: ...

    def abort(self) -> None: ...


class BlobStore(Protocol):
    """Where large inputs come from and downloads go (S3 in AWS, moto's S3 locally)."""

    def get(self, uri: str) -> bytes: ...

    def put(
        self, name: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> str: ...

    def upload(self, name: str, content_type: str, sha256: str | None = None) -> Upload: ...


class HostRole(StrEnum):
    """What a host of a kind can be in a cutover or a migration."""

    PROXY = "proxy"  # routes an account by a mapping it keeps (set, invalidate, kick)
    DIRECTOR = "director"  # a Dovecot director: moves users between backends
    BACKEND = "backend"  # holds the mail: its sessions are kicked, dsync copies it


@dataclass(frozen=True)
class HealthProbe:
    """A kind's cheapest call: its answer alone says whether the host is up."""

    action: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class DriverContext:
    """What a driver may use besides its host: where to keep rotated credentials, where
    to put large downloads, and a hook to report progress of long operations."""

    keeper: CredentialKeeper | None = None
    blobs: BlobStore | None = None
    progress: Callable[[dict[str, Any]], None] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class Driver(ABC):
    kind: ClassVar[str]
    # True for drivers with `async def perform_async(action, params, deadline)`: the
    # fan-out then runs their hosts in one event loop instead of a thread each.
    has_async_perform: ClassVar[bool] = False
    # The action policy: a rule for every action of this kind (drivers/policy.py).
    policy_rules: ClassVar[dict[str, Rule]] = {}

    # -- capabilities: what the rest of the system asks instead of checking `kind` ------
    # How a health sweep probes a host of this kind (health_details adds what it can tell).
    health_probe: ClassVar[HealthProbe]
    # True when the host says which actions it accepts (doveadm's command list): the list
    # is fetched from the host (fetch_commands) and cached in the inventory; otherwise the
    # actions are static_actions() and checking parameters asks nobody.
    describes_own_actions: ClassVar[bool] = False
    # True when the host locks a controller out after a few refused credentials: a health
    # sweep then stops asking until the host's credentials change.
    locks_out_on_refusal: ClassVar[bool] = False
    # What a host of this kind can be in cutovers and migrations.
    roles: ClassVar[frozenset[HostRole]] = frozenset()
    # Actions that run as a long operation of their own (followed by a state machine).
    long_operations: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self, host: Host, credentials: Credentials, context: DriverContext | None = None
    ) -> None:
        self.host = host
        self.credentials = credentials
        self.context = context or DriverContext()

    @classmethod
    @abstractmethod
    def static_actions(cls) -> dict[str, ActionSpec]:
        """The actions every host of this kind accepts (dovecot: none known up front)."""

    def actions(self, deadline: Deadline | None = None) -> dict[str, ActionSpec]:
        """The actions this host accepts; may ask the host (dovecot)."""
        return self.static_actions()

    def prepare(self, action: str, params: dict[str, Any]) -> Any:
        """Checked params as `perform_async` takes them, made once for every host of a job
        that shares them (a driver may serialize its request here); as they are by default."""
        return params

    def validate(
        self, action: str, params: dict[str, Any], deadline: Deadline | None = None
    ) -> dict[str, Any]:
        """Check `params` against the action's model; returns them normalized."""
        spec = self.actions(deadline).get(action)
        if spec is None:
            raise Unsupported(f"{self.kind} host {self.host.id} has no action {action!r}")
        return validate_params(spec, params)

    @abstractmethod
    def perform(self, action: str, params: dict[str, Any], deadline: Deadline) -> Any:
        """Run one action; `params` were validated. Returns JSON-able output."""

    # -- capabilities that do something (defaults for kinds without them) --------------

    def health_details(self, answer: Any, deadline: Deadline) -> dict[str, Any]:
        """What an up host can tell besides being up (its version, say), from the probe's
        answer or one more call; a HostError here leaves the host up."""
        return {}

    def fetch_commands(self, deadline: Deadline) -> list[dict[str, Any]]:
        """Ask the host for its command list (describes_own_actions kinds only)."""
        raise Unsupported(f"a {self.kind} host keeps no command list")

    @classmethod
    def actions_from_commands(cls, commands: Sequence[Mapping[str, Any]]) -> dict[str, ActionSpec]:
        """The actions a host with this command list accepts (static kinds: their own)."""
        return cls.static_actions()

    @classmethod
    def validate_against_commands(
        cls, commands: Sequence[Mapping[str, Any]], action: str, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Check `params` against a host's command list, without asking the host."""
        spec = cls.actions_from_commands(commands).get(action)
        if spec is None:
            raise Unsupported(f"{cls.kind} hosts have no action {action!r}")
        return validate_params(spec, dict(params))

    def end_sessions(self, account: str, deadline: Deadline) -> Any:
        """End an account's live sessions on this host (cutovers and migrations kick)."""
        raise Unsupported(f"a {self.kind} host cannot end an account's sessions")

    # -- the security side: policy and redaction, all without contacting the host --------

    @classmethod
    def classify(cls, action: str, params: dict[str, Any] | None) -> Decision:
        """The action's class and least role with these parameters (never: refused)."""
        return decide(cls.kind, cls.policy_rules, action)

    @classmethod
    def redact_params(cls, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """Parameters as they may be stored, audited and shown (secrets masked)."""
        out: dict[str, Any] = redact(params)
        return out

    @classmethod
    def redact_output(cls, action: str, output: Any) -> Any:
        """An action's output as it may be stored: every field its schema says is a secret
        masked. Kinds whose outputs carry secret fields override this."""
        return redact(output)

    def safe_output(self, action: str, output: Any) -> Any:
        """The output by schema, then the second net: any value equal to (or holding) one
        of this host's credentials is masked."""
        redacted = self.redact_output(action, output)
        if not redacted and isinstance(redacted, list | dict | str):
            return redacted  # most outputs of a fan-out: no credential to look for
        return mask_values(redacted, self.credential_values())

    def credential_values(self) -> list[str]:
        return list(self.credentials.reveal().values())

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the driver holds (sockets, event loops)."""


def validate_params(spec: ActionSpec, params: dict[str, Any]) -> dict[str, Any]:
    try:
        model = spec.params.model_validate(params or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidParams(f"{spec.name}: {reasons}", field=where) from None
    return model.model_dump(mode="json", exclude_none=True)


def require_secret(credentials: Credentials, *names: str) -> dict[str, str]:
    """The first present field among `names`, as {name: value}; a credentials error if none."""
    for name in names:
        value = getattr(credentials, name)
        if value is not None:
            return {name: value.get_secret_value()}
    raise HostError(ErrorType.CREDENTIALS, f"the host's secret has no {' or '.join(names)}")
