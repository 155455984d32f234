"""Scheduled maintenance, one function for every time-triggered task:

- an EventBridge "Scheduled Event" (the template's sweep rule), or {"task": "health-sweep",
  "job_id"} from POST /fleet/sweep (or with "kind"/"tags": a sweep of part of the fleet):
  probe the hosts, keep each one's health, publish per-kind metrics;
- {"task": "scheduled-job", ...} from EventBridge Scheduler (POST /schedules, and the
  template's nightly appliance backup): start that schedule's job;
- {"step": ..., "state": {...}} from the appliance-operation state machine;
- the fan-out worker's OnFailure destination record ({"requestContext", "requestPayload",
  "responsePayload"}) once every try of a job's worker failed: the job is closed FAILED.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError

from mailfleet.config import HealthSettings, JobSettings, ScheduleSettings
from mailfleet.logic.appliance_ops import ApplianceOperations
from mailfleet.logic.health import FleetHealth, emit_metrics
from mailfleet.logic.jobs import Jobs
from mailfleet.logic.schedules import TASK as SCHEDULED_JOB
from mailfleet.logic.schedules import Schedules

logger = Logger()
tracer = Tracer()
# Settings, read once per cold start and handed to every service this function makes.
JOBS = JobSettings()
SCHEDULES = ScheduleSettings()
HEALTH = HealthSettings()

# Scheduler delivers at least once: one job per run, whatever arrives twice.
_runs = IdempotencyConfig(event_key_jmespath="[schedule, execution_id]",
                          expires_after_seconds=24 * 3600)


@idempotent_function(data_keyword_argument="payload", config=_runs,
                     persistence_store=DynamoDBPersistenceLayer(
                         table_name=JOBS.tables.idempotency_table))
def _run_once(payload: dict[str, Any]) -> dict[str, Any]:
    return Schedules(settings=SCHEDULES, jobs=JOBS).run(payload)


def _sweep(job_id: str | None, kind: str | None = None,
           tags: dict[str, str] | None = None) -> dict[str, Any]:
    try:
        health = FleetHealth(records=Jobs(settings=JOBS).records, settings=HEALTH)
        report = health.sweep(job_id=job_id, kind=kind, tags=tags)
    except Exception as exc:
        if job_id:  # the sweep job must end, every host accounted for
            Jobs(settings=JOBS).fail_job(job_id, f"the sweep failed: {type(exc).__name__}")
        raise
    emit_metrics(report)
    summary = report.summary()
    logger.info("health sweep", extra={k: summary[k] for k in ("hosts", "counts", "elapsed_s")})
    return {**summary, "job_id": job_id}


def _worker_failed(record: dict[str, Any]) -> dict[str, Any]:
    """A job never stays PENDING because its worker crashed or timed out every try."""
    payload = record.get("requestPayload") or {}
    job_id = payload.get("job_id") if isinstance(payload, dict) else None
    error = (record.get("responsePayload") or {}).get("errorType") or "no answer"
    condition = (record.get("requestContext") or {}).get("condition", "failed")
    logger.error("job worker failed every try", extra={"job_id": job_id, "error": error,
                                                         "condition": condition})
    if not job_id:
        return {"closed": None}
    reason = f"the job worker failed every try ({condition}: {error})"
    if not Jobs(settings=JOBS).fail_job(str(job_id), reason):
        return {"closed": None, "job_id": job_id}  # the worker had closed it itself
    with single_metric(name="JobsClosedOnWorkerFailure", unit=MetricUnit.Count,
                       value=1) as metric:
        metric.add_dimension(name="service", value="mailfleet")
    return {"closed": job_id}


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> Any:
    if "requestContext" in event and "requestPayload" in event:
        return _worker_failed(event)
    if "step" in event:
        state = event.get("state") or {}
        logger.append_keys(step=event["step"], job_id=state.get("job_id"),
                           host=state.get("host"))
        operations = ApplianceOperations(Jobs(settings=JOBS).records, JOBS.appliance)
        return operations.step(str(event["step"]), state)
    if event.get("task") == SCHEDULED_JOB:
        logger.append_keys(schedule=event.get("schedule"),
                           execution_id=event.get("execution_id"))
        if str(event.get("execution_id", "<")).startswith("<"):
            # No run id to tell a second delivery by.
            return Schedules(settings=SCHEDULES, jobs=JOBS).run(event)
        _runs.register_lambda_context(context)
        return _run_once(payload=event)
    if event.get("task") == "health-sweep" or event.get("detail-type") == "Scheduled Event":
        if event.get("detail-type") == "Scheduled Event":
            # Destructive jobs nobody approved within the hour end as CANCELLED.
            try:
                expired = Jobs(settings=JOBS).expire_approvals()
            except ClientError:
                # The sweep matters more; the next one (or any read of the job) expires it.
                logger.warning("could not expire approvals this time")
                expired = 0
            if expired:
                logger.info("approvals expired", extra={"jobs": expired})
        return _sweep(event.get("job_id"), event.get("kind"), event.get("tags"))
    raise ValueError("not a maintenance event: expected a Scheduled Event, a task or a step")
