"""Why the logic layer refuses a request, in its own words: a small hierarchy of domain
errors, never an HTTP status. The API function maps each kind to its status in one place
(functions/api/app.py); the scheduler and the workers handle them as they are."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FieldError:
    field: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


@dataclass
class Problem(Exception):
    """A request the logic layer refuses: a message fit for the client, the fields at
    fault (if any) and anything else the client needs (`extra`, e.g. the job's id)."""

    message: str
    errors: list[FieldError] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message}
        if self.errors:
            out["errors"] = [e.to_dict() for e in self.errors]
        out.update(self.extra)
        return out


class Invalid(Problem):
    """The request itself is wrong: `errors` name the fields and the reasons."""


class Unauthenticated(Problem):
    """No caller is known (a missing or unknown token)."""


class Forbidden(Problem):
    """The caller is known but may not do this (role, scope, creator rules)."""


class NotFound(Problem):
    """The thing asked for does not exist (or is not visible to this caller)."""


class Conflict(Problem):
    """The thing is not in a state that allows this (already final, in use, taken)."""


class Unavailable(Problem):
    """A service this needs could not be reached or is not configured; when a change was
    already recorded, `extra` says which (e.g. the job marked FAILED)."""


def invalid(field_name: str, reason: str, **extra: Any) -> Invalid:
    return Invalid(f"{field_name}: {reason}", [FieldError(field_name, reason)], extra)


def not_found(what: str, ident: str) -> NotFound:
    return NotFound(f"{what} {ident!r} not found")


def conflict(message: str, **extra: Any) -> Conflict:
    return Conflict(message, extra=extra)


def forbidden(message: str, **extra: Any) -> Forbidden:
    return Forbidden(message, extra=extra)
