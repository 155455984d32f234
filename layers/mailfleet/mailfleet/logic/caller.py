"""Who is asking, as the handlers learned it from the authorizer and the request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailfleet.logic.problems import forbidden, not_found
from mailfleet.models.tokens import Role, TokenScope


@dataclass(frozen=True)
class Caller:
    principal: str
    role: Role
    source_ip: str | None = None
    request_id: str | None = None
    # A scoped token sees and acts on only the hosts inside its scope.
    scope: TokenScope | None = None
    token_id: str | None = None  # the bearer token's id (None: bootstrap or system)

    def sees(self, host: dict[str, Any]) -> bool:
        return self.scope is None or self.scope.admits(host)

    def check_reads(self, host: dict[str, Any], host_id: str) -> None:
        """A host outside the caller's scope reads as missing (404)."""
        if not self.sees(host):
            raise not_found("host", host_id)

    def check_acts(self, host: dict[str, Any], host_id: str, field: str = "host") -> None:
        """Acting on a host outside the caller's scope is refused (403)."""
        if not self.sees(host):
            raise forbidden(f"{field}: {host_id!r} is outside this token's scope")

    @classmethod
    def system(cls, name: str, role: Role = Role.ADMIN) -> Caller:
        """Scheduled and internal work acts under its own name (schedules: with the least
        role their job needs)."""
        return cls(principal=f"system:{name}", role=role)
