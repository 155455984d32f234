"""One step of one account's cutover or migration, called by the cutover and migration
state machines with {"step": ..., "item": {...}} (a migration's plan says
`"kind": "migration"`); also told by EventBridge when an execution of either failed or
was stopped, so the cutover or migration still gets its final status.

Failures leave as RetryableHostError or PermanentHostError: the state machine's Retry
and Catch match on those class names.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from mailfleet.config import CutoverSettings, Tables
from mailfleet.logic.cutover_steps import CutoverSteps
from mailfleet.logic.cutovers import Cutovers
from mailfleet.logic.migration_steps import MigrationSteps
from mailfleet.logic.migrations import Migrations

logger = Logger()
tracer = Tracer()


class StepRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    step: str
    item: dict[str, Any]


# Settings, read once per cold start and handed to every service this function makes.
SETTINGS = CutoverSettings()
TABLES = Tables()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> Any:
    if event.get("detail-type") == "Step Functions Execution Status Change":
        detail = event.get("detail") or {}
        # Each finds only its own kind's item (None for the other's).
        outcome = (Cutovers(settings=SETTINGS, tables=TABLES).execution_ended(detail)
                   or Migrations(settings=SETTINGS, tables=TABLES).execution_ended(detail))
        logger.info("execution ended", extra={"outcome": outcome})
        return outcome
    request = StepRequest.model_validate(event)
    logger.append_keys(
        cutover_id=request.item.get("cutover_id"), step=request.step, n=request.item.get("n")
    )
    migration = (request.item.get("plan") or {}).get("kind") == "migration"
    steps = (MigrationSteps if migration else CutoverSteps)(tables=TABLES)
    return steps.run(request.step, request.item)
