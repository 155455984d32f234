"""Client-facing failures of the logic layer; the API turns them into 4xx answers."""

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
    message: str
    status: int = 400
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


def invalid(field_name: str, reason: str) -> Problem:
    return Problem(f"{field_name}: {reason}", 422, [FieldError(field_name, reason)])


def not_found(what: str, ident: str) -> Problem:
    return Problem(f"{what} {ident!r} not found", 404)


def conflict(message: str, **extra: Any) -> Problem:
    return Problem(message, 409, extra=extra)


def forbidden(message: str) -> Problem:
    return Problem(message, 403)
