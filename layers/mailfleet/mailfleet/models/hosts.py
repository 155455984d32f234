"""Hosts: the inventory item, the API bodies that write it, and the credentials kept apart."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from mailfleet.models.common import Model

HOST_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
HostId = Annotated[str, StringConstraints(pattern=HOST_ID_PATTERN)]
TagKey = Annotated[str, StringConstraints(min_length=1, max_length=128)]
TagValue = Annotated[str, StringConstraints(max_length=256)]


class HostKind(StrEnum):
    DOVECOT = "dovecot"
    PYMAP = "pymap"
    PROXY = "proxy"
    APPLIANCE = "appliance"


def normalize_pin(pin: str) -> str:
    """A SHA-256 fingerprint as 64 lowercase hex digits (colons and case are optional)."""
    hexdigits = pin.replace(":", "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", hexdigits):
        raise ValueError("must be a SHA-256 fingerprint: 64 hex digits, colons optional")
    return hexdigits


class TlsOptions(Model):
    model_config = ConfigDict(extra="forbid")

    verify: bool = True
    ca_pem: str | None = Field(default=None, max_length=65536)
    pin_sha256: str | None = None

    @field_validator("pin_sha256")
    @classmethod
    def _pin(cls, value: str | None) -> str | None:
        return normalize_pin(value) if value else None

    @field_validator("ca_pem")
    @classmethod
    def _pem(cls, value: str | None) -> str | None:
        if value and "-----BEGIN CERTIFICATE-----" not in value:
            raise ValueError("must be one or more PEM certificates")
        return value or None


class Credentials(Model):
    """A host's secret fields. SecretStr keeps them out of reprs, logs and tracebacks."""

    model_config = ConfigDict(extra="forbid")

    api_key: SecretStr | None = None  # dovecot: X-Dovecot-API
    password: SecretStr | None = None  # dovecot: Basic doveadm:<password>
    token: SecretStr | None = None  # proxy, appliance, pymap

    def reveal(self) -> dict[str, str]:
        """The plain fields, only for writing the secret itself."""
        return {k: v.get_secret_value() for k, v in self if v is not None}



# Which credential fields each kind accepts: checked on POST /hosts and by the drivers.
CREDENTIAL_FIELDS: dict[HostKind, tuple[str, ...]] = {
    HostKind.DOVECOT: ("api_key", "password"),
    HostKind.PROXY: ("token",),
    HostKind.APPLIANCE: ("token",),
    HostKind.PYMAP: ("token",),
}

ENDPOINT_SCHEMES: dict[HostKind, tuple[str, ...]] = {
    HostKind.DOVECOT: ("http", "https"),
    HostKind.PROXY: ("https",),
    HostKind.APPLIANCE: ("https",),
    HostKind.PYMAP: ("https", "unix"),
}


def check_endpoint(kind: HostKind, endpoint: str) -> str:
    scheme, sep, rest = endpoint.partition("://")
    allowed = ENDPOINT_SCHEMES[kind]
    if not sep or scheme not in allowed:
        schemes = " or ".join(f"{s}://" for s in allowed)
        raise ValueError(f"a {kind} endpoint must start with {schemes}")
    if scheme == "unix":
        if not rest.startswith("/"):
            raise ValueError("a unix endpoint must name an absolute socket path")
        return endpoint
    if not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+(:\d{1,5})?/?", rest):
        raise ValueError("must be scheme://host:port with no path, query or user")
    return endpoint.rstrip("/")


class Host(Model):
    """A host as the inventory keeps it and the drivers receive it: no credentials inside."""

    model_config = ConfigDict(extra="ignore")

    id: HostId
    kind: HostKind
    endpoint: str
    tls: TlsOptions = Field(default_factory=TlsOptions)
    tags: dict[TagKey, TagValue] = Field(default_factory=dict)
    max_concurrency: int = Field(default=4, ge=1, le=256)
    maintenance: bool = False
    credentials_secret: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    health: dict[str, Any] | None = None


class HostView(Host):
    """A host as the API shows it: no credentials, with its last health sweep."""


class HostList(Model):
    hosts: list[HostView]
    next_token: str | None = None


class ActionView(Model):
    """One action a host accepts, with what the action policy says of it."""

    model_config = ConfigDict(populate_by_name=True)

    name: str
    description: str | None = None
    mutating: bool
    action_class: str = Field(alias="class", description="read, session, change, "
                              "destructive, or never (not allowed through jobs)")
    least_role: str | None = None
    policy: str = Field(description="the rule's reason")
    parameters: dict[str, Any] = Field(description="JSON schema of its params")


class HostActions(Model):
    """What a host accepts, from its driver (or, for Dovecot, the host's own command list)."""

    host: str
    kind: HostKind
    source: str = Field(description="driver, cache, host, or unavailable (see error)")
    actions: list[ActionView]
    error: dict[str, Any] | None = Field(
        default=None, description="why the host's own command list could not be read")


class HostCreate(Model):
    model_config = ConfigDict(extra="forbid")

    id: HostId
    kind: HostKind
    endpoint: str = Field(max_length=1024)
    credentials: Credentials | None = None
    credentials_secret: str | None = Field(default=None, min_length=1, max_length=2048)
    # A credentials_secret another host already uses: that host's id, said on purpose.
    shares_credentials_with: HostId | None = None
    tls: TlsOptions = Field(default_factory=TlsOptions)
    tags: dict[TagKey, TagValue] = Field(default_factory=dict, max_length=50)
    max_concurrency: int = Field(default=4, ge=1, le=256, strict=True)
    maintenance: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> HostCreate:
        check_endpoint(self.kind, self.endpoint)
        self.endpoint = self.endpoint.rstrip("/")
        if self.credentials is not None and self.credentials_secret is not None:
            raise ValueError("give either credentials or credentials_secret, not both")
        if self.credentials is None and self.credentials_secret is None:
            raise ValueError("credentials or credentials_secret is required")
        if self.shares_credentials_with is not None and self.credentials_secret is None:
            raise ValueError("shares_credentials_with goes with credentials_secret")
        if self.credentials is not None:
            check_credentials(self.kind, self.credentials)
        return self


class HostPatch(Model):
    model_config = ConfigDict(extra="forbid")

    endpoint: str | None = Field(default=None, max_length=1024)
    credentials: Credentials | None = None
    credentials_secret: str | None = Field(default=None, min_length=1, max_length=2048)
    shares_credentials_with: HostId | None = None
    tls: TlsOptions | None = None
    tags: dict[TagKey, TagValue] | None = Field(default=None, max_length=50)
    max_concurrency: int | None = Field(default=None, ge=1, le=256, strict=True)
    maintenance: bool | None = None


def check_credentials(kind: HostKind, credentials: Credentials) -> None:
    allowed = CREDENTIAL_FIELDS[kind]
    given = [name for name, value in credentials if value is not None]
    extra = [name for name in given if name not in allowed]
    if extra:
        raise ValueError(f"{kind} credentials take {' or '.join(allowed)}, not {', '.join(extra)}")
    if not given:
        raise ValueError(f"{kind} credentials need {' or '.join(allowed)}")


MAX_IMPORT_HOSTS = 1000


class OnConflict(StrEnum):
    FAIL = "fail"
    SKIP = "skip"
    REPLACE = "replace"


class InventoryImport(Model):
    """POST /inventory/import: each host is checked on its own (a bad one is listed in
    `failed` and never blocks the rest), so hosts are objects here, HostCreate later."""

    model_config = ConfigDict(extra="forbid")

    hosts: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_IMPORT_HOSTS,
        description="host bodies as for POST /hosts",
    )
    on_conflict: OnConflict = OnConflict.FAIL


class ImportFailure(Model):
    id: str | None = Field(description="the host's id as given (null when it has none)")
    index: int = Field(description="its position in `hosts`")
    field: str
    reason: str


class ImportOutcome(Model):
    created: list[str] = Field(default_factory=list)
    replaced: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    failed: list[ImportFailure] = Field(default_factory=list)
