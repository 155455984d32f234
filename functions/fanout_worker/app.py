"""Runs a job: its action on every target host with bounded concurrency, each result
recorded. Invoked asynchronously by the API with {"job_id": ...}.

When the job would outlast this invocation, the worker stops starting hosts in time,
and invokes itself again to carry on; the next run skips hosts that have a result.

On the Distributed Map path (logic/distributed.py) the same function runs one batch
({"job_id", "batch": {"index", "hosts"}, "batch_concurrency", "attempt"}), and closes the
job ({"job_id", "close": {...}}: from the Map's last step, after a cancel, or from the
EventBridge rule when an execution fails, times out or is stopped).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from mailfleet.config import JobSettings
from mailfleet.logic.distributed import BatchHandedOver, DistributedJobs
from mailfleet.logic.job_paths import invoke_later
from mailfleet.logic.jobs import Jobs

logger = Logger()
tracer = Tracer()
metrics = Metrics()


class RunJob(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job_id: str


class Batch(BaseModel):
    index: int
    hosts: list[str]


class RunBatch(RunJob):
    batch: Batch
    batch_concurrency: int = 10
    attempt: int = 0


class CloseJob(RunJob):
    close: dict[str, Any]


class ExecutionEnded(BaseModel):
    """EventBridge's "Step Functions Execution Status Change": executions are named after
    their job."""

    model_config = ConfigDict(extra="ignore")

    detail: dict[str, Any]


# Settings, read once per cold start and handed to every service this function makes.
SETTINGS = JobSettings()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "batch" in event:
        return run_batch(RunBatch.model_validate(event), context)
    if "close" in event:
        return close_job(CloseJob.model_validate(event), context)
    if "detail" in event:
        ended = ExecutionEnded.model_validate(event).detail
        close = {"reason": str(ended.get("status", "ended")).lower()}
        return close_job(CloseJob(job_id=str(ended["name"]), close=close), context)
    request = RunJob.model_validate(event)
    logger.append_keys(job_id=request.job_id)
    jobs = Jobs(settings=SETTINGS)

    def continue_later(job_id: str) -> None:
        logger.info("handing the rest of the job to a fresh invocation")
        invoke_later(context.function_name, "the function's own name", {"job_id": job_id})

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
    count_results(outcome.get("counts") or {})
    logger.info(
        "job done", extra={"status": outcome.get("status"), "counts": outcome.get("counts")}
    )
    return outcome


def count_results(counts: dict[str, int]) -> None:
    for status, count in counts.items():
        metrics.add_metric(
            name=f"HostResults{status.title().replace('_', '')}", unit=MetricUnit.Count, value=count
        )


def run_batch(request: RunBatch, context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(job_id=request.job_id, batch=request.batch.index)
    jobs = Jobs(settings=SETTINGS)
    try:
        outcome = DistributedJobs(jobs).run_batch(
            request.job_id,
            request.batch.index,
            request.batch.hosts,
            request.batch_concurrency,
            attempt=request.attempt,
            remaining_ms=context.get_remaining_time_in_millis,
        )
        count_results(outcome.get("counts") or {})  # per batch: they add up to the job
        return outcome
    except BatchHandedOver:
        raise  # the Map runs the batch again
    except Exception as exc:
        # Every host of the batch must end with a result, even when we break.
        logger.exception("batch failed; recording its hosts as failed")
        jobs.records.fail(request.job_id, request.batch.hosts,
                          f"the batch worker failed: {type(exc).__name__}")
        return {"batch": request.batch.index, "failed": type(exc).__name__}


def close_job(request: CloseJob, context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(job_id=request.job_id)
    error = request.close.get("error") or None
    outcome = DistributedJobs(Jobs(settings=SETTINGS)).close_execution(
        request.job_id,
        reason=request.close.get("reason"),
        error=error if isinstance(error, dict) else None,
        remaining_ms=context.get_remaining_time_in_millis,
    )
    metrics.add_metric(name="DistributedJobsClosed", unit=MetricUnit.Count, value=1)
    logger.info("job closed", extra={"status": outcome.get("status")})
    return outcome
