"""API tokens and roles."""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field

from mailfleet.models.common import Model


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return {"viewer": 0, "operator": 1, "admin": 2}[self.value]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


class TokenCreate(Model):
    model_config = ConfigDict(extra="forbid")

    role: Role
    name: str = Field(min_length=1, max_length=128, pattern=r"^[\w .@:/-]+$")


class TokenView(Model):
    token_id: str
    role: Role
    name: str
    created_at: str
    created_by: str


class TokenCreated(TokenView):
    token: str = Field(description="Shown once; only its SHA-256 is stored")


class Principal(Model):
    principal: str
    role: Role
    token_id: str | None = None
