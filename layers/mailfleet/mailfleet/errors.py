"""The one error type every driver raises, and the shared taxonomy of host faults.

A host fault never escapes as an exception from the engine: it becomes that host's
result, carrying `type`, `code`, `message` and `retryable` exactly as the API shows them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorType(StrEnum):
    CONNECTION = "connection"  # refused, reset, closed without a response, DNS
    TIMEOUT = "timeout"  # no answer within the per-host deadline
    TLS = "tls"  # handshake, verification or pin mismatch: nothing was sent
    AUTH = "auth"  # credentials refused: never retried (proxies lock callers out)
    LOCKED_OUT = "locked_out"  # the host refuses us for a while after failed logins
    EXIT_CODE = "exitCode"  # doveadm command failure, with the doveadm exit code
    COMMAND = "command"  # any other command failure reported by the host
    INVALID_PARAMS = "invalid_params"  # rejected before or by the host as malformed
    UNSUPPORTED = "unsupported"  # the host does not offer this action (or not now)
    CREDENTIALS = "credentials"  # our side: the host's secret is missing or malformed


class HostError(Exception):
    """A failure of one action on one host, in the shared taxonomy.

    The message must never contain a credential: drivers build it from status codes,
    response bodies and their own words, never from request URLs or headers.
    """

    def __init__(
        self,
        type: ErrorType | str,
        message: str,
        *,
        code: int | str | None = None,
        retryable: bool = False,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.type = ErrorType(type)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": str(self.type),
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.details:
            out["details"] = self.details
        return out

    def __repr__(self) -> str:
        return f"HostError({self.type!s}, code={self.code!r}, {self.message!r})"


class InvalidParams(HostError):
    """Parameters that fail the action's model; raised before any host is contacted."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(ErrorType.INVALID_PARAMS, message, code=field)
        self.field = field


class Unsupported(HostError):
    def __init__(self, message: str) -> None:
        super().__init__(ErrorType.UNSUPPORTED, message)
