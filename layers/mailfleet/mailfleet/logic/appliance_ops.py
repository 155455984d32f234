"""Long appliance operations (update, backup, settings, storage, certificates, reboot) as
the appliance-operation state machine: one child execution per host starts the
operation with `wait: false`, Wait states space the status polls until it ends or its
time is up, a backup is then downloaded to S3 (its sha256 checked on the way and by S3),
and the outcome becomes that host's result in an ordinary job.

A Lambda could not follow an hour-long update, and the fan-out worker would hold a
thread per host meanwhile; a state machine waits for nothing. The execution's history
holds only statuses: the job's parameters (certificates, packages) stay in the job item.
"""

from __future__ import annotations

import json
import time
from typing import Any

from mailfleet import aws
from mailfleet.config import ApplianceSettings
from mailfleet.drivers import KINDS, driver_class
from mailfleet.drivers.appliance import OPERATIONS, ApplianceDriver, Follow, Look, Seen
from mailfleet.drivers.appliance_admin.operations import timed_out
from mailfleet.drivers.base import Deadline, Driver
from mailfleet.errors import ErrorType, HostError
from mailfleet.logic import connect
from mailfleet.logic.job_paths import JobPath
from mailfleet.logic.job_records import JobRecords, count_failures
from mailfleet.models.common import now_iso, resolve_limit
from mailfleet.models.jobs import HostResult, JobStatus, ResultStatus
from mailfleet.redact import mask_values, redact
from mailfleet.store.blobs import S3BlobStore
from mailfleet.store.hosts import HostNotFound

PATH = "appliance-operation"
# One step call never waits longer than this on the appliance, whatever time is left.
STEP_CAP_SECONDS = 60.0
DOWNLOAD_CAP_SECONDS = 600.0
# A reboot is watched this long within one step (Start and each Poll), so a short
# absence is seen; the Start step watches too, or a reboot shorter than the Wait before
# the first Poll is never seen away (the job then timed out although it rebooted).
REBOOT_WATCH_SECONDS = 20.0


def is_long_operation(kind: str | None, action: str, params: dict[str, Any]) -> bool:
    """Whether a job runs as the state machine: an appliance's long action, unless the
    caller asked only to start it (`wait: false`)."""
    return (kind in KINDS and action in driver_class(kind).long_operations
            and action in OPERATIONS and params.get("wait") is not False)


class ApplianceOperations(JobPath):
    """The job path of long appliance operations: its start, and the state machine's
    steps (called through the maintenance function), the last of which closes the job."""

    system = PATH
    unstarted_reason = "could not start the appliance operation"
    unstarted_message = ("the job was recorded but its state machine could not be started; "
                         "it is marked FAILED")

    def __init__(self, records: JobRecords | None = None,
                 settings: ApplianceSettings | None = None) -> None:
        super().__init__(records)
        self.settings = settings or ApplianceSettings()
        self.store = self.records.store
        self.hosts = self.records.hosts

    def start(self, job: dict[str, Any], targets: list[str]) -> None:
        """One execution for the job (named after it), one child per host."""
        config = self.settings
        if not config.appliance_operation_state_machine_arn:
            raise RuntimeError("APPLIANCE_OPERATION_STATE_MACHINE_ARN is not configured")
        op = OPERATIONS[job["action"]]
        execution = {
            "job_id": job["job_id"],
            "hosts": targets,
            "max_concurrency": resolve_limit(job["max_concurrency"], len(targets), minimum=1),
            "poll_seconds": op.poll_seconds or config.appliance_poll_seconds,
        }
        arn = aws.client("stepfunctions").start_execution(
            stateMachineArn=config.appliance_operation_state_machine_arn,
            name=job["job_id"], input=json.dumps(execution))["executionArn"]
        self.store.mark_running(job["job_id"], now_iso(), PATH)
        self.store.set_fields(job["job_id"], execution_arn=arn)

    def step(self, name: str, state: dict[str, Any]) -> Any:
        handlers = {"start": self.start_host, "poll": self.poll, "download": self.download,
                    "record": self.record, "finish": self.finish}
        if name not in handlers:
            raise ValueError(f"unknown step {name!r}")
        return handlers[name](state)

    # ------------------------------------------------------------------ steps
    def start_host(self, state: dict[str, Any]) -> dict[str, Any]:
        """Start the operation on one host (`wait: false`), its status read before."""
        job = self.store.get(state["job_id"])
        op = OPERATIONS[job["action"]]
        now = time.time()
        out: dict[str, Any] = {"action": op.action, "started": now, "started_at": now_iso(),
                               "deadline": now + float(job["timeout_seconds"]), "polls": 0,
                               "attempts": 0}
        skip = self._skip_reason(job)
        if skip:
            return {**out, "phase": "skipped", "output": {"skipped": skip}}
        params = {**json.loads(job.get("run_params") or "{}"), "wait": False}
        driver = self._appliance(state["host"])
        deadline = self._deadline(out)
        try:
            seen, started = driver.start_operation(op.action, params, deadline)
            out["output"] = started
            look = driver.follow_operation(seen, deadline, seconds=self._watch(op.action))\
                if op.follow is Follow.REBOOT else Look(seen)
        except HostError as exc:
            return {**out, "phase": "failed", "error": exc.to_dict(),
                    "attempts": deadline.attempts}
        finally:
            driver.close()
        return self._after_look(op.action, {**out, "attempts": deadline.attempts}, look)

    def poll(self, state: dict[str, Any]) -> dict[str, Any]:
        op_state = dict(state["op"])
        op_state["polls"] = int(op_state.get("polls", 0)) + 1
        seen = Seen.model_validate(op_state["seen"])
        op = OPERATIONS[seen.action]
        took = float(op_state["deadline"]) - float(op_state["started"])
        if time.time() >= op_state["deadline"]:
            error = timed_out(op, seen, took)
            return {**op_state, "phase": "timed_out", "error": error.to_dict()}
        driver = self._appliance(state["host"])
        deadline = self._deadline(op_state)
        try:
            # A read-back compares with what was posted: the job item has it.
            params = self._run_params(state) if op.follow is Follow.READBACK else None
            look = driver.follow_operation(seen, deadline, params=params,
                                           seconds=self._watch(seen.action), timeout=took)
        except HostError as exc:
            return {**op_state, "phase": "failed", "error": exc.to_dict()}
        finally:
            driver.close()
        return self._after_look(seen.action, op_state, look)

    @staticmethod
    def _watch(action: str) -> float:
        """Seconds one step watches: a reboot's absence may be short; a status is read once."""
        return REBOOT_WATCH_SECONDS if OPERATIONS[action].follow is Follow.REBOOT else 0

    def _run_params(self, state: dict[str, Any]) -> dict[str, Any]:
        """The job's parameters, from the job item (never from the execution's history)."""
        job = self.store.get(state["job_id"])
        return {**json.loads(job.get("run_params") or "{}"), "wait": False}

    @staticmethod
    def _after_look(action: str, op_state: dict[str, Any], look: Look) -> dict[str, Any]:
        op_state = {**op_state, "seen": look.seen.model_dump(mode="json")}
        if look.output is not None:
            then = OPERATIONS[action].then
            return {**op_state, "phase": "download" if then else "succeeded",
                    "output": look.output}
        if look.error is not None:
            phase = "timed_out" if look.error.type is ErrorType.TIMEOUT else "failed"
            return {**op_state, "phase": phase, "error": look.error.to_dict()}
        return {**op_state, "phase": "running"}

    def download(self, state: dict[str, Any]) -> dict[str, Any]:
        op_state = dict(state["op"])
        op = OPERATIONS[op_state["action"]]
        driver = self._driver(state["host"])
        deadline = Deadline.after(min(DOWNLOAD_CAP_SECONDS,
                                      max(1.0, op_state["deadline"] - time.time())))
        try:
            fetched = driver.perform(op.then or "", {}, deadline)
        except HostError as exc:
            return {**op_state, "phase": "failed", "error": exc.to_dict()}
        finally:
            driver.close()
        output = {**(op_state.get("output") or {}), "download": fetched}
        return {**op_state, "phase": "succeeded", "output": output}

    def record(self, state: dict[str, Any]) -> dict[str, Any]:
        """The host's result, from the operation's last state or the step that broke."""
        op_state = state.get("op") or {}
        job_id, host_id = state["job_id"], state["host"]
        phase = op_state.get("phase")
        error = op_state.get("error")
        if state.get("error") is not None:
            phase, error = "failed", _step_error(state["error"])
        built = HostResult(
            host=host_id, attempts=int(op_state.get("attempts", 0)), error=error,
            status={"succeeded": ResultStatus.SUCCEEDED, "skipped": ResultStatus.SKIPPED,
                    "timed_out": ResultStatus.TIMED_OUT}.get(str(phase), ResultStatus.FAILED),
            output=op_state.get("output"))
        if op_state.get("started_at"):
            built.started_at, built.finished_at = op_state["started_at"], now_iso()
            built.duration_ms = int((time.time() - float(op_state["started"])) * 1000)
        result = self._without_secrets(host_id, op_state.get("action"), built.item())
        self.store.write_results(job_id, [result])
        if result["status"] == ResultStatus.SUCCEEDED.value and isinstance(result.get("output"),
                                                                          dict):
            item = self.hosts.get_item(host_id)
            self.records.follow_host_changes(item, result["output"], job_id)
        return {"host": host_id, "status": result["status"]}

    def finish(self, state: dict[str, Any]) -> dict[str, Any]:
        job = self.store.get(state["job_id"])
        if JobStatus(job["status"]).final:
            return {"job_id": job["job_id"], "status": job["status"]}
        stopped_by = "cancelled" if job.get("cancel_requested") else None
        return self.close(job, stopped_by=stopped_by)

    # ------------------------------------------------------------------ helpers
    def _without_secrets(self, host_id: str, action: str | None, result: dict[str, Any]
                         ) -> dict[str, Any]:
        """A result as it may be stored: the driver's schema redaction, then the host's
        own credential values masked (as the fan-out worker does)."""
        if result.get("output") is None and result.get("error") is None:
            return result
        try:
            driver = self._driver(host_id)
        except (HostError, HostNotFound):
            return {**result, "output": redact(result.get("output"))}
        try:
            out = dict(result)
            if out.get("output") is not None:
                out["output"] = driver.safe_output(action or "", out["output"])
            if isinstance(out.get("error"), dict):
                out["error"] = mask_values(out["error"], driver.credential_values())
            return out
        finally:
            driver.close()

    def _appliance(self, host_id: str) -> ApplianceDriver:
        driver = self._driver(host_id)
        if not isinstance(driver, ApplianceDriver):
            driver.close()
            raise HostError(ErrorType.UNSUPPORTED, f"host {host_id} is not an appliance")
        return driver

    def _driver(self, host_id: str) -> Driver:
        item = self.hosts.get_item(host_id)
        bucket = self.settings.backups_bucket
        return connect.driver_for(item, blobs=S3BlobStore(bucket) if bucket else None)

    @staticmethod
    def _deadline(op_state: dict[str, Any]) -> Deadline:
        left = float(op_state["deadline"]) - time.time()
        return Deadline.after(max(0.5, min(STEP_CAP_SECONDS, left)))

    def _skip_reason(self, job: dict[str, Any]) -> str | None:
        if self.store.status(job["job_id"])[1]:
            return "the job was cancelled before this host started"
        limit = resolve_limit(job.get("max_errors"), int(job["total"]))
        if limit is not None:
            results, _ = self.store.results(job["job_id"])
            if count_failures(results) >= limit:
                return "max_errors was reached before this host started"
        return None


def _step_error(caught: dict[str, Any]) -> dict[str, Any]:
    """A step that raised (caught by the state machine as {Error, Cause})."""
    cause = caught.get("Cause")
    message = ""
    try:
        message = json.loads(cause).get("errorMessage", "") if cause else ""
    except (ValueError, AttributeError):
        message = str(cause)[:300]
    return HostError(ErrorType.COMMAND, f"the operation step failed ({caught.get('Error')})"
                     + (f": {message[:300]}" if message else ""), retryable=True).to_dict()
