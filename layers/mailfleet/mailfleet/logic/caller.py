"""Who is asking, as the handlers learned it from the authorizer and the request."""

from __future__ import annotations

from dataclasses import dataclass

from mailfleet.models.tokens import Role


@dataclass(frozen=True)
class Caller:
    principal: str
    role: Role
    source_ip: str | None = None
    request_id: str | None = None

    @classmethod
    def system(cls, name: str) -> Caller:
        """Scheduled and internal work acts under its own name."""
        return cls(principal=f"system:{name}", role=Role.ADMIN)
