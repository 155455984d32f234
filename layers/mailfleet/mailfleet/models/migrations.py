"""Migrations: accounts moved with their mail from one Dovecot backend to another, then
their route flipped on every director or proxy (shared/API.md, "Migrations")."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from mailfleet.drivers.dovecot import DsyncTarget
from mailfleet.models.common import CountOrPercent, Model
from mailfleet.models.cutovers import (
    MAX_ACCOUNTS,
    MAX_DELAY_SECONDS,
    AccountMoveView,
    CutoverStatus,
    Destination,
    HostAddress,
    HostSelection,
    Strategy,
    account_key,
    is_ip,
)
from mailfleet.models.hosts import HostId

# A doveadm user name: no wildcards (kick takes a mask: `*` would end everyone's
# sessions), no spaces or control characters.
MigrationAccount = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=255,
                      pattern=r"^[^\s*?%\x00-\x1f\x7f]+$"),
]
DSYNC_PORT = 2425  # Dovecot's usual doveadm_port
# A copy that has not finished after this long fails the account (still on the source).
DEFAULT_COPY_TIMEOUT_SECONDS = 6 * 3600


def check_dsync_endpoint(value: str | None) -> str | None:
    if value is not None:
        DsyncTarget.parse(value)
    return value


class DirectorRouting(Model):
    model_config = ConfigDict(extra="forbid")

    strategy: Literal["director"]
    directors: HostSelection
    backend_address: Destination = Field(
        description="the destination backend's IP as the directors list it")

    @field_validator("backend_address")
    @classmethod
    def _ip(cls, value: str) -> str:
        if not is_ip(value):
            raise ValueError("a backend IP address as listed by directorStatus")
        return value


class ProxyRouting(Model):
    model_config = ConfigDict(extra="forbid")

    strategy: Literal["proxy"]
    proxies: HostSelection
    destination: Destination = Field(description="the proxy destination name of the backend")


class MigrationRequest(Model):
    model_config = ConfigDict(extra="forbid")

    accounts: list[MigrationAccount] = Field(min_length=1, max_length=MAX_ACCOUNTS)
    source: HostId
    destination: HostId
    dsync_endpoint: str | None = Field(
        default=None, description="tcp:host:port where the source reaches the destination's "
        "doveadm listener; the host must be the destination's own address")
    source_dsync_endpoint: str | None = Field(
        default=None, description="tcp:host:port of the source's doveadm listener, for a "
        "rollback's copy back; default: the source's address, dsync_endpoint's port")
    routing: Annotated[DirectorRouting | ProxyRouting, Field(discriminator="strategy")]
    delay_seconds: int = Field(default=10, ge=0, le=MAX_DELAY_SECONDS, strict=True)
    max_concurrency: CountOrPercent = 4
    tolerated_failure_percentage: float = Field(default=0.0, ge=0, le=100)
    copy_timeout_seconds: int = Field(default=DEFAULT_COPY_TIMEOUT_SECONDS, ge=60,
                                      le=7 * 86400, strict=True)
    dry_run: bool = False

    @field_validator("dsync_endpoint", "source_dsync_endpoint")
    @classmethod
    def _tcp(cls, value: str | None) -> str | None:
        return check_dsync_endpoint(value)

    @field_validator("accounts")
    @classmethod
    def _unique(cls, accounts: list[str]) -> list[str]:
        seen: set[str] = set()
        twice = [a for a in accounts if account_key(a) in seen or seen.add(account_key(a))]
        if twice:
            shown = ", ".join(repr(a) for a in twice[:10])
            raise ValueError(f"each account once (case-insensitive); repeated: {shown}")
        return accounts

    @field_validator("max_concurrency")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if value == 0:
            raise ValueError("must be at least 1 (or a percentage)")
        return value

    @model_validator(mode="after")
    def _two_backends(self) -> MigrationRequest:
        if self.source == self.destination:
            raise ValueError("destination: must be another host than source")
        return self

    @property
    def strategy(self) -> Strategy:
        return Strategy(self.routing.strategy)


class MigrationAccepted(Model):
    migration_id: str
    status: CutoverStatus
    total: int
    dry_run: bool = False


class MigrationPlan(MigrationAccepted):
    """A dry run's answer: what would be copied and flipped, nobody contacted."""

    max_concurrency: int | str
    source: HostAddress
    destination: HostAddress
    dsync_endpoint: str
    source_dsync_endpoint: str
    routing: dict[str, Any] = Field(description="as given, with each router's address")
    left_out_in_maintenance: list[str] | None = None


class MigrationView(AccountMoveView):
    migration_id: str
    phase: str = Field(default="migration",
                       description="migration, or rollback once one is asked")
    source: str
    destination: str
    dsync_endpoint: str
    source_dsync_endpoint: str
    routing: dict[str, Any]
    copy_timeout_seconds: int


class MigrationList(Model):
    migrations: list[MigrationView]
    next_token: str | None = None
