"""Audit events: append-only, hash-chained."""

from __future__ import annotations

from typing import Any

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
    prev_hash: str
    hash: str


class AuditVerification(Model):
    ok: bool
    checked: int
    first_bad: str | None = None
    reason: str | None = None
