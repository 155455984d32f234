"""Bearer tokens: minted with a public id, stored only as SHA-256, checked in constant time."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.utilities import parameters

from mailfleet.config import SecretSettings
from mailfleet.logic.caller import Caller
from mailfleet.models.common import now_iso
from mailfleet.models.tokens import (
    Principal,
    Role,
    TokenCreate,
    TokenCreated,
    TokenScope,
    TokenView,
)
from mailfleet.store.audit import AuditLog
from mailfleet.store.tokens import TokenStore

TOKEN_PREFIX = "mft"  # noqa: S105 - a public prefix, not a secret
BOOTSTRAP_PRINCIPAL = "bootstrap-admin"
# The bootstrap secret is re-read at most this often (rotating it takes effect within it).
ADMIN_SECRET_CACHE_SECONDS = 60


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def mint(request: TokenCreate, created_by: str, store: TokenStore | None = None, *,
         caller: Caller | None = None, audit: AuditLog | None = None,
         created_by_token: str | None = None) -> TokenCreated:
    """A new token, stored with its audit event in one write."""
    token_id = secrets.token_hex(8)
    token = f"{TOKEN_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
    expires_at = None
    if request.expires_in_days is not None:
        expires_at = (
            datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=request.expires_in_days)
        ).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    view = TokenView(
        token_id=token_id,
        role=request.role,
        name=request.name,
        created_at=now_iso(),
        created_by=created_by,
        scope=request.scope,
        expires_at=expires_at,
        created_by_token=created_by_token,
    )
    item = dict(view.model_dump(mode="json", exclude_none=True),
                token_sha256=sha256_hex(token))
    (audit or AuditLog()).record(
        (store or TokenStore()).put_change(item),
        actor=created_by,
        source_ip=caller.source_ip if caller else None,
        request_id=caller.request_id if caller else None,
        action="token.create",
        target=f"token:{token_id}",
        outcome="ok",
        params={
            "role": view.role.value,
            "name": view.name,
            "scope": view.scope.model_dump(mode="json") if view.scope else None,
            "expires_at": view.expires_at,
            "created_by_token": created_by_token,
        },
    )
    return TokenCreated(**view.model_dump(), token=token)


@dataclass
class Authenticator:
    """Decides who a bearer token belongs to. No caching of token items: a revoked
    token fails on its very next request."""

    store: TokenStore
    # Where the bootstrap admin token is (none: only minted tokens are known).
    settings: SecretSettings = field(default_factory=SecretSettings)

    def principal(self, authorization: str | None) -> Principal | None:
        token = _bearer(authorization)
        if token is None:
            return None
        if token.startswith(TOKEN_PREFIX + "_"):
            parts = token.split("_", 2)
            if len(parts) == 3:
                item = self.store.get(parts[1])
                if (
                    item
                    and hmac.compare_digest(item["token_sha256"], sha256_hex(token))
                    and not expired(item)
                ):
                    scope = item.get("scope")
                    return Principal(
                        principal=f"token:{item['name']}",
                        role=Role(item["role"]),
                        token_id=item["token_id"],
                        scope=TokenScope.model_validate(scope) if scope else None,
                    )
            return None
        admin = _bootstrap_admin_token(self.settings.admin_token_secret)
        if admin and hmac.compare_digest(sha256_hex(admin), sha256_hex(token)):
            return Principal(principal=BOOTSTRAP_PRINCIPAL, role=Role.ADMIN)
        return None


def expired(item: dict[str, Any]) -> bool:
    """Whether a token item's expiry (if it has one) has passed."""
    expires_at = item.get("expires_at")
    return bool(expires_at) and str(expires_at) <= now_iso()


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _bootstrap_admin_token(name: str | None) -> str | None:
    if not name:
        return None
    try:
        value = parameters.get_secret(name, max_age=ADMIN_SECRET_CACHE_SECONDS)
    except parameters.exceptions.GetParameterError:
        return None
    return value if isinstance(value, str) and value else None
