"""Cutovers: accounts moved from one destination to another on every proxy (or director)."""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from mailfleet.models.common import Concurrency, Model
from mailfleet.models.hosts import HostId, TagKey, TagValue

MAX_ACCOUNTS = 10_000
# A day of held-back logins is beyond any sensible cutover (the proxy's own cap, too).
MAX_DELAY_SECONDS = 86_400

# As the proxy takes them in a query string: no control characters.
Account = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=1024, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]
Destination = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]


class Strategy(StrEnum):
    PROXY = "proxy"  # Stalwart migration proxies: mappings
    DIRECTOR = "director"  # Dovecot directors: directorMove / directorKick


class CutoverStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    ROLLED_BACK = "ROLLED_BACK"  # after POST /cutovers/{id}/rollback put every account back

    @property
    def final(self) -> bool:
        return self not in (CutoverStatus.PENDING, CutoverStatus.RUNNING)


class AccountStatus(StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    DONE = "DONE"
    ROLLED_BACK = "ROLLED_BACK"
    FAILED = "FAILED"  # a step failed and the rollback did not complete either
    SKIPPED = "SKIPPED"  # never started: the cutover was halted or over its failure budget

    @property
    def final(self) -> bool:
        return self not in (AccountStatus.PENDING, AccountStatus.IN_PROGRESS)


class HostSelection(Model):
    """Explicit host ids, or tags (hosts in maintenance are left out of a tag match)."""

    model_config = ConfigDict(extra="forbid")

    hosts: list[HostId] | None = Field(default=None, min_length=1, max_length=1000)
    tags: dict[TagKey, TagValue] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_way(self) -> HostSelection:
        if (self.hosts is None) == (self.tags is None):
            raise ValueError("give either hosts or tags")
        if self.hosts is not None:
            self.hosts = list(dict.fromkeys(self.hosts))
        return self


class CutoverRequest(Model):
    model_config = ConfigDict(extra="forbid")

    accounts: list[Account] = Field(min_length=1, max_length=MAX_ACCOUNTS)
    destination: Destination
    proxies: HostSelection
    backends: HostSelection | None = None
    delay_seconds: int = Field(default=10, ge=0, le=MAX_DELAY_SECONDS, strict=True)
    strategy: Strategy = Strategy.PROXY
    max_concurrency: Concurrency = 10
    tolerated_failure_percentage: float = Field(default=0.0, ge=0, le=100, strict=True)
    dry_run: bool = False
    # Director strategy: a backend address drained once the accounts are moved
    # (directorUpdate vhostCount 0, then directorFlush on every director).
    drain: Destination | None = None

    @field_validator("accounts")
    @classmethod
    def _unique(cls, accounts: list[str]) -> list[str]:
        # Proxies lowercase identifiers: two spellings of one account would race each other.
        seen: dict[str, str] = {}
        twice = []
        for account in accounts:
            key = account_key(account)
            if key in seen:
                twice.append(account)
            seen.setdefault(key, account)
        if twice:
            shown = ", ".join(repr(a) for a in twice[:10])
            raise ValueError(f"each account once (case-insensitive); repeated: {shown}")
        return accounts

    @model_validator(mode="after")
    def _strategy_fits(self) -> CutoverRequest:
        if self.strategy == Strategy.DIRECTOR:
            for name, value in (("destination", self.destination), ("drain", self.drain)):
                if value is not None and not is_ip(value):
                    raise ValueError(
                        f"{name}: with strategy director, a backend IP address as listed by "
                        "directorStatus"
                    )
        elif self.drain is not None:
            raise ValueError("drain: only with strategy director")
        return self


def account_key(account: str) -> str:
    """The form accounts are compared and locked in (proxies lowercase identifiers)."""
    return account.strip().lower()


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class CutoverAccepted(Model):
    cutover_id: str
    status: CutoverStatus
    total: int
    dry_run: bool = False


class HostAddress(Model):
    host: str
    endpoint: str


class CutoverPlan(CutoverAccepted):
    """A dry run's answer: what would be switched, nobody contacted."""

    max_concurrency: int | str
    proxies: list[HostAddress]
    backends: list[HostAddress]
    left_out_in_maintenance: list[str] | None = None


class StepRecord(Model):
    step: str
    outcome: str  # ok, retrying (a retry follows), failed
    at: str
    duration_ms: int | None = None
    hosts: dict[str, Any] | None = None
    mailboxes: dict[str, dict[str, int | None]] | None = Field(
        default=None, description="migrations: messages per mailbox on the source and the "
        "destination, as a copy or verify saw them")


class AccountView(Model):
    account: str
    status: AccountStatus
    previous: dict[str, Any] | None = Field(
        default=None, description="what Remember saw on each host, by host id"
    )
    error: dict[str, Any] | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    started_at: str | None = None
    finished_at: str | None = None


class AccountMoveView(Model):
    """What a cutover and a migration both show (each adds its id, where the accounts go
    and how): progress per account, who started it and when, and why it stopped."""

    status: CutoverStatus
    counts: dict[str, int]
    total: int
    delay_seconds: int
    max_concurrency: int
    tolerated_failure_percentage: float
    dry_run: bool = False
    created_by: str
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    error: dict[str, Any] | None = None
    halted: str | None = Field(default=None, description="why no further account started")
    left_out_in_maintenance: list[str] | None = None
    rollbacks: int | None = None
    rollback_requested_by: str | None = None
    rollback_requested_at: str | None = None
    accounts: list[AccountView] | None = None
    next_token: str | None = None


class CutoverView(AccountMoveView):
    cutover_id: str
    phase: str = Field(default="cutover", description="cutover, or rollback once one is asked")
    destination: str
    strategy: Strategy
    proxies: list[str]
    backends: list[str] = Field(default_factory=list)
    drain: str | None = None


class CutoverList(Model):
    cutovers: list[CutoverView]
    next_token: str | None = None
