"""The Distributed Map path: a job too big, or too long, for one worker invocation runs as
a Step Functions Distributed Map over batches of its hosts, each batch run by the fan-out
worker with the same engine, drivers and result records as the in-process path, so
`GET /jobs/{id}` reads the same whatever ran the job.

The API writes the job's batch list to S3 (`jobs/<job id>/batches.json`, read by the
Map's ItemReader) and starts an execution named after the job. Across batches:
- `max_errors` is a conditional counter on the job item (`JobStore.add_failure`), read
  before a host starts (at most every REFRESH_SECONDS, and again after any failure);
  a failure is counted once, and not at all once the limit is reached;
- cancel stops the execution, and a closer waits until no batch can still be writing,
  then marks every host without a result SKIPPED and ends the job;
- per-host `max_concurrency`: a host is in one batch of a job, and a worker holds the
  process-wide HostSlots across every job it runs.
The Map's last step closes the job (final status, counts, `job.end`), also when the Map
fails, so a job is never left RUNNING.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from mailfleet import aws
from mailfleet.config import JobSettings
from mailfleet.fanout import GRACE_SECONDS, ErrorBudget, LocalErrorBudget
from mailfleet.logic.job_paths import JobPath, invoke_later, out_of_time_check
from mailfleet.models.common import now_iso, resolve_limit
from mailfleet.models.jobs import JobStatus, no_such_job
from mailfleet.store.jobs import RAN_PREFIX, JobNotFound, JobStore

if TYPE_CHECKING:
    from mailfleet.logic.jobs import Jobs

INPROCESS = "inprocess"
DISTRIBUTED = "distributed"
# One BatchWriteItem carries 25 results: batches are sized in multiples of it.
RESULTS_PER_WRITE = 25
# A batch's results reach the table in writes of 25, or at least this often (s).
BATCH_FLUSH_SECONDS = 5.0
# After a cancel or a failed Map, a batch still running can write for this long past
# its hosts' timeout (cancel seen within 0.5 s, the last flush, the write itself).
SETTLE_EXTRA_SECONDS = GRACE_SECONDS + 2.0
CANCELLED = "the job was cancelled before this host started"
# One worker holds a socket per host in flight, within Lambda's 1,024 descriptors (boto3's
# pools, the runtime and a hanging host's abandoned socket need the rest).
INPROCESS_MAX_CONCURRENCY = 500


class BatchHandedOver(Exception):
    """A batch ran out of time in its invocation: the Map runs it again (Retry), and the
    rerun skips hosts that have a result."""


def choose_path(total: int, timeout_seconds: float, concurrency: int,
                settings: JobSettings) -> str:
    """In-process while one worker can surely finish the job; the Distributed Map past the
    target threshold, or when the worst case (every wave of hosts timing out) would not
    fit one invocation."""
    fanout, limits = settings.fanout, settings.limits
    if not (fanout.fanout_state_machine_arn and fanout.jobs_bucket):
        return INPROCESS  # a stack without the Map (or a test without AWS)
    waves = -(-total // max(1, concurrency))
    too_many = total > limits.inprocess_max_targets
    too_long = timeout_seconds * waves > limits.inprocess_max_seconds
    too_wide = min(total, concurrency) > INPROCESS_MAX_CONCURRENCY
    return DISTRIBUTED if too_many or too_long or too_wide else INPROCESS


@dataclass(frozen=True)
class BatchPlan:
    batches: list[list[str]]
    batch_concurrency: int  # hosts in flight in one batch worker
    parallel_batches: int  # the Map's MaxConcurrency: their product is the job's cap


def plan_batches(targets: list[str], concurrency: int, timeout_seconds: float,
                 settings: JobSettings) -> BatchPlan:
    fanout = settings.fanout
    per_batch, parallel = split_concurrency(concurrency, fanout.fanout_batch_concurrency)
    # A batch must end within one invocation even if every wave of it times out.
    waves = max(1, int(settings.limits.inprocess_max_seconds // timeout_seconds))
    largest = max(1, min(fanout.fanout_batch_size, per_batch * waves))
    # A whole number of rounds of parallel batches, so the last round is not half empty...
    count = -(-len(targets) // largest)
    count = parallel * -(-count // parallel)
    size = -(-len(targets) // count)
    # ...and sizes in whole result writes, so no batch ends with a small write.
    if size > RESULTS_PER_WRITE:
        size = min(largest, RESULTS_PER_WRITE * -(-size // RESULTS_PER_WRITE))
    batches = [targets[i : i + size] for i in range(0, len(targets), size)]
    return BatchPlan(batches, per_batch, min(parallel, len(batches)))


def split_concurrency(concurrency: int, per_worker_max: int) -> tuple[int, int]:
    """(hosts in flight per batch worker, batch workers at once): as few workers as one
    worker's CPU allows, and a product as close to the job's cap as can be without
    passing it (100 at 40 a worker: 4 x 25, not 2 x 40 = 80 or 3 x 33 = 99)."""
    concurrency = max(1, concurrency)
    per_worker_max = max(1, min(per_worker_max, concurrency))
    fewest = -(-concurrency // per_worker_max)
    best = (concurrency // fewest, fewest)
    for parallel in range(fewest, min(concurrency, 2 * fewest) + 1):
        per = concurrency // parallel
        if per * parallel > best[0] * best[1]:
            best = (per, parallel)
        if per * parallel == concurrency:
            break
    return best


class SharedErrorBudget:
    """`max_errors` over every batch of a job, on the job item's conditional counter."""

    # How stale the counter may be when a host starts (a DynamoDB read each time).
    REFRESH_SECONDS = 0.25

    def __init__(self, store: JobStore, job_id: str, limit: int) -> None:
        self._store = store
        self._job_id = job_id
        self._limit = limit
        self._lock = threading.Lock()
        self._reached = False
        self._read_at = 0.0  # monotonic time of the last read; 0: read before next start

    def may_start(self) -> bool:
        with self._lock:
            if not self._reached and time.monotonic() - self._read_at >= self.REFRESH_SECONDS:
                self._read_at = time.monotonic()
                self._reached = self._store.error_count(self._job_id) >= self._limit
            return not self._reached

    def failed(self) -> None:
        with self._lock:
            if self._reached:
                return  # the limit only stops starts: counting past it buys nothing
        counted = self._store.add_failure(self._job_id, self._limit)
        with self._lock:
            if counted:
                self._read_at = 0.0  # this may have been the last one allowed
            else:
                self._reached = True


class DistributedJobs(JobPath):
    """Start, run (one batch at a time), cancel and close jobs on the Distributed Map.
    Its batches run hosts as the in-process worker does (Jobs.run_hosts)."""

    def __init__(self, jobs: Jobs) -> None:
        super().__init__(jobs.records)
        self.run_hosts = jobs.run_hosts
        self.store = jobs.store
        self.settings = jobs.settings

    # ------------------------------------------------------------------ API side
    def start(self, job: dict[str, Any], targets: list[str]) -> None:
        """Write the batch list and start the execution (named after the job)."""
        config = self.settings.fanout
        job_id = job["job_id"]
        concurrency = resolve_limit(job["max_concurrency"], len(targets), minimum=1) or 1
        plan = plan_batches(targets, concurrency, float(job["timeout_seconds"]), self.settings)
        key = f"jobs/{job_id}/batches.json"
        body = [{"index": i, "hosts": hosts} for i, hosts in enumerate(plan.batches)]
        aws.client("s3").put_object(
            Bucket=config.jobs_bucket,
            Key=key,
            Body=json.dumps(body, separators=(",", ":")).encode(),
            ContentType="application/json",
        )
        # RUNNING before the execution exists: its close may come very soon after.
        self.store.mark_running(job_id, now_iso(), DISTRIBUTED)
        aws.client("stepfunctions").start_execution(
            stateMachineArn=config.fanout_state_machine_arn,
            name=job_id,
            input=json.dumps(
                {
                    "job_id": job_id,
                    "bucket": config.jobs_bucket,
                    "key": key,
                    "batch_concurrency": plan.batch_concurrency,
                    "parallel_batches": plan.parallel_batches,
                }
            ),
        )

    def stop(self, job_id: str) -> None:
        """Cancel: stop the execution (no new batch starts) and have a worker close the job
        once the batches still running have seen the cancel."""
        try:
            aws.client("stepfunctions").stop_execution(
                executionArn=execution_arn(job_id, self.settings),
                error="JobCancelled",
                cause="the job was cancelled through the API",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ExecutionDoesNotExist":
                raise
        invoke_later(self.settings.fanout.fanout_function, "FANOUT_FUNCTION",
                     {"job_id": job_id, "close": {"reason": "cancelled"}})

    # ------------------------------------------------------------------ worker side
    def run_batch(
        self,
        job_id: str,
        index: int,
        hosts: list[str],
        batch_concurrency: int,
        *,
        attempt: int = 0,
        remaining_ms: Callable[[], int] | None = None,
    ) -> dict[str, Any]:
        """Run one batch of a job; its hosts' results are recorded as they finish."""
        try:
            job = self.store.get_for_run(job_id)
        except JobNotFound:  # a replayed or stray invocation: nothing to run or record
            return no_such_job(batch=index)
        if JobStatus(job["status"]).final:
            return {"batch": index, "skipped": "the job is over"}
        if job["status"] == JobStatus.AWAITING_APPROVAL:
            return {"batch": index, "skipped": "the job awaits approval"}  # runs nothing
        todo = hosts
        if attempt:  # a rerun: hosts with a result are not run again
            done = {r["host"] for r in self.store.results(job_id)[0]}
            todo = [h for h in hosts if h not in done]
        limit = resolve_limit(job.get("max_errors"), int(job["total"]))
        budget: ErrorBudget = (
            LocalErrorBudget(None) if limit is None
            else SharedErrorBudget(self.store, job_id, limit)
        )
        summary = self.run_hosts(
            job,
            todo,
            concurrency=batch_concurrency,
            budget=budget,
            out_of_time=out_of_time_check(remaining_ms, float(job["timeout_seconds"])),
            flush_interval=BATCH_FLUSH_SECONDS,
        )
        # Counted on the job item, so the close need not read every result back.
        self.store.add_counts(job_id, dict(summary.counts))
        if summary.stopped_by == "time":
            raise BatchHandedOver(f"batch {index}: out of time, the rest runs again")
        return {"batch": index, "counts": dict(summary.counts), "stopped_by": summary.stopped_by}

    def close_execution(
        self,
        job_id: str,
        *,
        reason: str | None = None,
        error: dict[str, Any] | None = None,
        remaining_ms: Callable[[], int] | None = None,
    ) -> dict[str, Any]:
        """End the job: every host without a result SKIPPED, final status and counts, one
        `job.end`. After a cancel or a failed Map, first wait until no batch can still be
        writing (a placeholder must not overwrite a real result)."""
        try:
            job = self.store.get(job_id)
        except JobNotFound:
            return no_such_job(job_id=job_id)
        if JobStatus(job["status"]).final:
            return {"job_id": job_id, "status": job["status"], "skipped": "already final"}
        if reason or error:
            settle = float(job["timeout_seconds"]) + SETTLE_EXTRA_SECONDS
            if remaining_ms is not None:  # leave time for the closing itself
                settle = min(settle, remaining_ms() / 1000 - 60)
            if self._wait_unless_final(job_id, settle):
                return {"job_id": job_id, "status": self.store.status(job_id)[0]}
            job = self.store.get(job_id)
        cancelled = bool(job.get("cancel_requested")) or reason == "cancelled"
        missing: list[str] = []
        if cancelled or error or reason:  # else every batch ran (close still checks)
            recorded = {r["host"] for r in self.store.results(job_id)[0]}
            missing = [h for h in job["targets"] if h not in recorded]
        if missing:
            if cancelled:
                why = CANCELLED
            else:
                detail = _describe(error) if error else f"execution {reason}" if reason else ""
                why = "the batch holding this host did not run" + (f" ({detail})" if detail else "")
            self.records.skip(job_id, missing, why)
        limit = resolve_limit(job.get("max_errors"), int(job["total"]))
        stopped_by = "cancelled" if cancelled else None
        if stopped_by is None and limit is not None and int(job.get("error_count", 0)) >= limit:
            stopped_by = "max_errors"
        # Every batch ran to its end: their counts (one per host) close the job; any
        # doubt (a batch that broke, a cancel) and close reads the results instead.
        ran = {k[len(RAN_PREFIX):]: int(v) for k, v in job.items() if k.startswith(RAN_PREFIX)}
        counts = ran if not (missing or cancelled or error or reason) else None
        return self.close(job, stopped_by=stopped_by, counts=counts)

    def _wait_unless_final(self, job_id: str, seconds: float) -> bool:
        end = time.monotonic() + max(0.0, seconds)
        while time.monotonic() < end:
            if JobStatus(self.store.status(job_id)[0]).final:
                return True
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        return False


def execution_arn(job_id: str, settings: JobSettings) -> str:
    """The job's execution: named after the job, on the fan-out state machine."""
    machine = settings.fanout.fanout_state_machine_arn or ""
    return machine.replace(":stateMachine:", ":execution:", 1) + f":{job_id}"


def _describe(error: dict[str, Any]) -> str:
    text = str(error.get("Error") or "error")
    cause = str(error.get("Cause") or "")
    return f"{text}: {cause[:200]}" if cause else text
