"""One step of one account's cutover, called by the cutover state machine with
{"step": ..., "item": {...}}; also told by EventBridge when a cutover's execution failed
or was stopped, so the cutover still gets its final status.

Failures leave as RetryableHostError or PermanentHostError: the state machine's Retry
and Catch match on those class names.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from mailfleet.logic.cutover_steps import CutoverSteps
from mailfleet.logic.cutovers import Cutovers

logger = Logger()
tracer = Tracer()


class StepRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    step: str
    item: dict[str, Any]


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> Any:
    if event.get("detail-type") == "Step Functions Execution Status Change":
        outcome = Cutovers().execution_ended(event.get("detail") or {})
        logger.info("execution ended", extra={"outcome": outcome})
        return outcome
    request = StepRequest.model_validate(event)
    logger.append_keys(
        cutover_id=request.item.get("cutover_id"), step=request.step, n=request.item.get("n")
    )
    return CutoverSteps().run(request.step, request.item)
