"""API tokens and roles."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from mailfleet.models.common import Model
from mailfleet.models.hosts import HostKind, TagKey, TagValue

MAX_TOKEN_DAYS = 3650


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return {"viewer": 0, "operator": 1, "admin": 2}[self.value]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


class TokenScope(Model):
    """The hosts a token may see and act on: kind equal (if given) and every tag equal."""

    model_config = ConfigDict(extra="forbid")

    kind: HostKind | None = None
    tags: dict[TagKey, TagValue] = Field(default_factory=dict, max_length=50)

    @model_validator(mode="after")
    def _not_empty(self) -> TokenScope:
        if self.kind is None and not self.tags:
            raise ValueError("a scope needs a kind, tags or both")
        return self

    def admits(self, host: dict[str, Any]) -> bool:
        """Whether a host item (or view) is inside this scope."""
        if self.kind is not None and host.get("kind") != self.kind.value:
            return False
        tags = host.get("tags") or {}
        return all(tags.get(k) == v for k, v in self.tags.items())

    def narrow(
        self, kind: str | None, tags: dict[str, str] | None
    ) -> tuple[str | None, dict[str, str]] | None:
        """A kind-and-tags selection cut down to this scope; None when nothing can match."""
        if self.kind is not None:
            if kind is not None and kind != self.kind.value:
                return None
            kind = self.kind.value
        merged = dict(tags or {})
        for key, value in self.tags.items():
            if merged.setdefault(key, value) != value:
                return None
        return kind, merged


class TokenCreate(Model):
    model_config = ConfigDict(extra="forbid")

    role: Role
    name: str = Field(min_length=1, max_length=128, pattern=r"^[\w .@:/-]+$")
    scope: TokenScope | None = None
    expires_in_days: int | None = Field(default=None, ge=1, le=MAX_TOKEN_DAYS, strict=True)


class TokenView(Model):
    token_id: str
    role: Role
    name: str
    created_at: str
    created_by: str
    scope: TokenScope | None = None
    expires_at: str | None = None
    # The token that minted this one (None: the bootstrap admin): revoking it can cascade.
    created_by_token: str | None = None


class TokenCreated(TokenView):
    token: str = Field(description="Shown once; only its SHA-256 is stored")


class Principal(Model):
    principal: str
    role: Role
    token_id: str | None = None
    scope: TokenScope | None = None


class TokenList(Model):
    tokens: list[TokenView] = Field(description="never their values")
    next_token: str | None = None


class TokenBrief(Model):
    token_id: str | None = None
    name: str | None = None
    role: str | None = None
    created_at: str | None = None


class CreatedByToken(Model):
    tokens: list[TokenBrief]
    schedules: list[str]


class Revoked(Model):
    """DELETE /tokens/{id}?cascade=...: what the token had created, and what was done
    with it."""

    token_id: str
    revoked: bool
    cascade: str
    created: CreatedByToken
    revoked_tokens: list[str]
    paused_schedules: list[str]
