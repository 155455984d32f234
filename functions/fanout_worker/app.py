"""Runs a job: its action on every target host with bounded concurrency, each result
recorded. Invoked asynchronously by the API with {"job_id": ...}.

When the job would outlast this invocation, the worker stops starting hosts in time,
and invokes itself again to carry on; the next run skips hosts that have a result.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from mailfleet import aws
from mailfleet.logic.jobs import Jobs

logger = Logger()
tracer = Tracer()
metrics = Metrics()


class RunJob(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job_id: str


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = RunJob.model_validate(event)
    logger.append_keys(job_id=request.job_id)
    jobs = Jobs()

    def continue_later(job_id: str) -> None:
        logger.info("handing the rest of the job to a fresh invocation")
        aws.client("lambda").invoke(
            FunctionName=context.function_name,
            InvocationType="Event",
            Payload=json.dumps({"job_id": job_id}).encode(),
        )

    try:
        outcome = jobs.execute(
            request.job_id,
            remaining_ms=context.get_remaining_time_in_millis,
            continue_later=continue_later,
        )
    except Exception as exc:
        # The job must end with every host accounted for, even when we break.
        logger.exception("worker failed; closing the job")
        jobs.fail_job(request.job_id, f"the job worker failed: {type(exc).__name__}")
        raise
    for status, count in (outcome.get("counts") or {}).items():
        metrics.add_metric(
            name=f"HostResults{status.title().replace('_', '')}", unit=MetricUnit.Count, value=count
        )
    logger.info(
        "job done", extra={"status": outcome.get("status"), "counts": outcome.get("counts")}
    )
    return outcome
