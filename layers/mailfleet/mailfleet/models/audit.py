"""Audit events (written independently) and what verifying them against the signed
digests found."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from mailfleet.models.common import Model


class AuditEvent(Model):
    event_id: str
    seq: int
    at: str
    actor: str
    source_ip: str | None = None
    action: str
    target: str | None = None
    params: dict[str, Any] | None = None
    outcome: str
    job_id: str | None = None
    cutover_id: str | None = None
    request_id: str | None = None
    # Events are no longer chained to each other: 64 zeros since the change (older events
    # keep their link). The digests chain instead; see docs/audit.md.
    prev_hash: str
    hash: str  # SHA-256 of the event's own content


class AuditPage(Model):
    events: list[AuditEvent]
    next_token: str | None = None


class AuditProblem(Model):
    """One thing verification found wrong, and where."""

    kind: Literal["edited", "deleted", "inserted", "digest"] = Field(
        description="edited: content differs from its hash or from the digest's record; "
        "deleted: in a digest, not in the table; inserted: in the table inside a sealed "
        "period but in no digest; digest: a digest is missing, unsigned or off the chain"
    )
    event_id: str | None = None
    seq: int | None = None
    at: str | None = None
    digest: int | None = Field(None, description="number of the digest concerned")
    detail: str


class AuditVerification(Model):
    ok: bool = Field(description="no tampering found in what was checked so far")
    checked: int = Field(description="events checked (sealed ones against their digest)")
    first_bad: str | None = Field(None, description="event_id (or digest:N) of the first problem")
    reason: str | None = None
    problems: list[AuditProblem] = Field(default_factory=list, description="at most 100")
    digests_checked: int = 0
    sealed_until: str | None = Field(
        None, description="events before this time are covered by signed digests")
    unsealed: int = Field(0, description="events in the range not yet sealed (their own "
                          "hashes were checked; deleting them cannot be detected yet)")
    sealing_behind: bool = Field(
        False, description="the newest digest is older than the sealing schedule allows")
    complete: bool = Field(True, description="false: call again with next_token")
    next_token: str | None = None
