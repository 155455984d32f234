"""The one interface every way of running a job implements: start it, stop it (cancel),
close it. One short class per path:

- `InProcessPath` (logic/jobs.py): one fan-out worker invocation runs every host;
- `DistributedJobs` (logic/distributed.py): a Step Functions Distributed Map over batches;
- `ApplianceOperations` (logic/appliance_ops.py): the appliance-operation state machine,
  one child execution per host following a long operation;
- `HealthSweepPath` (logic/health.py): the maintenance function probes every target.

What they all record the same way (skipped and failed hosts, the close, a runner that
never started) is in logic/job_records.py.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from mailfleet import aws
from mailfleet.logic.caller import Caller
from mailfleet.logic.job_records import JobRecords
from mailfleet.logic.problems import Unavailable

# A worker stops starting hosts when less than this (plus the job's timeout) is left.
HANDOVER_MARGIN_S = 10.0


class JobPath(ABC):
    """How one kind of job run is started, stopped and closed."""

    # The principal its closing is recorded under.
    system: ClassVar[str] = "fanout-worker"
    # Why a job never ran when the start fails (the exception's type is appended)...
    unstarted_reason: ClassVar[str] = "could not start the job worker"
    # ...and what the client is told (the job is recorded, and now FAILED).
    unstarted_message: ClassVar[str] = (
        "the job was recorded but its worker could not be started; it is marked FAILED")

    def __init__(self, records: JobRecords | None = None) -> None:
        self.records = records or JobRecords()

    @abstractmethod
    def start(self, job: dict[str, Any], targets: list[str]) -> None:
        """Start the runner of a recorded, PENDING job (raises if it could not)."""

    def stop(self, job_id: str) -> None:
        """After a cancel is recorded on the job item. By default the runner sees it
        there before it starts each host, and nothing more is needed."""
        return

    def close(self, job: dict[str, Any], *, stopped_by: str | None = None,
              counts: dict[str, int] | None = None) -> dict[str, Any]:
        """End the job once its runner is done: every target accounted for, final status
        and counts, one `job.end`."""
        return self.records.close(job, Caller.system(self.system), stopped_by=stopped_by,
                                  counts=counts)

    def launch(self, job: dict[str, Any], targets: list[str], caller: Caller) -> None:
        """Start the job or, if its runner cannot be started, end it FAILED (it must not
        stay PENDING forever) and raise Unavailable naming the job."""
        try:
            self.start(job, targets)
        except Exception as exc:
            self.records.fail_unstarted(
                job["job_id"], f"{self.unstarted_reason}: {type(exc).__name__}", caller)
            raise Unavailable(self.unstarted_message, extra={"job_id": job["job_id"]}) from None


def invoke_later(function: str | None, setting: str, payload: dict[str, Any]) -> None:
    """Hand a job to `function` as an asynchronous invocation (Lambda queues it and
    retries it); `setting` names the variable that should have named the function."""
    if not function:
        raise RuntimeError(f"{setting} is not configured")
    aws.client("lambda").invoke(FunctionName=function, InvocationType="Event",
                                Payload=json.dumps(payload).encode())


def out_of_time_check(remaining_ms: Callable[[], int] | None,
                      timeout_seconds: float) -> Callable[[], bool] | None:
    """For a worker with `remaining_ms` left: true once another host might not finish
    (its timeout and the handover margin) within this invocation."""
    if remaining_ms is None:
        return None

    def out_of_time() -> bool:
        return remaining_ms() / 1000 < timeout_seconds + HANDOVER_MARGIN_S

    return out_of_time
