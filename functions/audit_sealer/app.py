"""Seals the audit trail on a schedule (the template's AuditSeal rule): signed digests of
every event older than the grace period, each chained to the one before. The only function
that may use the signing key, and it may not change events (docs/audit.md)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from mailfleet.config import AuditSettings, Tables
from mailfleet.store.audit import AuditLog
from mailfleet.store.audit_digests import Sealer

logger = Logger()
tracer = Tracer()
# Settings, read once per cold start and handed to every service this function makes.
SETTINGS = AuditSettings()
TABLES = Tables()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    digests = Sealer(AuditLog(TABLES.audit_table), settings=SETTINGS).seal()
    summary = {
        "sealed": len(digests),
        "events": sum(d["count"] for d in digests),
        "last_digest": digests[-1]["number"] if digests else None,
    }
    logger.info("audit sealed", extra=summary)
    return summary
