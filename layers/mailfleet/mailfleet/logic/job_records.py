"""What every job path records the same way, whatever runs the hosts (the in-process
worker, the Distributed Map, the appliance-operation state machine, the health sweep):
hosts skipped or failed without running, the job's close (final status, counts, one
`job.end`), a job whose runner never started, and the inventory kept true to what an
action changed on a host. Every target ends with exactly one result."""

from __future__ import annotations

from collections import Counter
from typing import Any

from mailfleet.errors import ErrorType, HostError
from mailfleet.logic.caller import Caller
from mailfleet.models.common import now_iso
from mailfleet.models.jobs import HostResult, JobStatus, ResultStatus
from mailfleet.store.audit import AuditLog, ChangeRefused
from mailfleet.store.hosts import HostStore
from mailfleet.store.jobs import JobStore


class JobRecords:
    def __init__(self, store: JobStore | None = None, hosts: HostStore | None = None,
                 audit: AuditLog | None = None) -> None:
        self.store = store or JobStore()
        self.hosts = hosts or HostStore()
        self.audit = audit or AuditLog()

    def skip(self, job_id: str, hosts: list[str], why: str) -> None:
        """Record SKIPPED for each of `hosts` (never started)."""
        self.store.write_results(job_id, [HostResult.skipped(h, why) for h in hosts])

    def fail(self, job_id: str, hosts: list[str], reason: str) -> None:
        """Record FAILED for each of `hosts` without a result (the worker running them broke)."""
        results, _ = self.store.results(job_id)
        recorded = {r["host"] for r in results}
        broke = HostError(ErrorType.COMMAND, reason, code="worker", retryable=True)
        self.store.write_results(
            job_id, [HostResult.failed(h, broke) for h in hosts if h not in recorded])

    def close(
        self,
        job: dict[str, Any],
        caller: Caller,
        *,
        stopped_by: str | None,
        counts: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        """End the job. `counts`: every target's result is recorded and these are their
        statuses (the worker that ran them all knows); else they are read back."""
        job_id = job["job_id"]
        if counts is None or sum(counts.values()) != len(job["targets"]):
            results, _ = self.store.results(job_id)
            recorded = {r["host"] for r in results}
            unaccounted = [h for h in job["targets"] if h not in recorded]
            if unaccounted:  # nothing may be left without a result
                self.skip(job_id, unaccounted, "not started")
                results, _ = self.store.results(job_id)
            counts = dict(Counter(r["status"] for r in results))
        status = final_status(counts, cancelled=stopped_by == "cancelled")
        try:
            self.audit.record(
                self.store.finish_change(job_id, status.value, counts, now_iso(),
                                         note=f"stopped: {stopped_by}" if stopped_by else None),
                actor=caller.principal,
                action="job.end",
                target=f"job:{job_id}",
                job_id=job_id,
                outcome=status.value,
                params={"counts": counts, "stopped_by": stopped_by},
            )
        except ChangeRefused:  # someone else closed it first (a Map's close and a cancel)
            return {"job_id": job_id, "status": self.store.status(job_id)[0], "counts": counts}
        return {"job_id": job_id, "status": status.value, "counts": counts}

    def fail_unstarted(self, job_id: str, reason: str, caller: Caller) -> None:
        """The job's runner could not be started: every target SKIPPED, the job FAILED (it
        must not stay PENDING forever)."""
        job = self.store.get(job_id)
        self.skip(job_id, job["targets"], reason)
        try:
            self.audit.record(
                self.store.finish_change(job_id, JobStatus.FAILED.value,
                                         {ResultStatus.SKIPPED.value: job["total"]}, now_iso(),
                                         note=reason),
                actor=caller.principal,
                action="job.end",
                target=f"job:{job_id}",
                job_id=job_id,
                outcome="FAILED",
                params={"reason": reason},
            )
        except ChangeRefused:
            pass  # already final (and recorded as such by whoever closed it)

    def follow_host_changes(self, item: dict[str, Any], output: Any, job_id: str) -> None:
        """Keep the inventory true to what an action changed on the host: a new
        certificate (appliance certs.set) means a new pin, or every later call fails TLS."""
        if not (isinstance(output, dict) and output.get("repin_required")):
            return
        tls = dict(item.get("tls") or {}, pin_sha256=output["pin_sha256"])
        try:
            self.audit.record(self.hosts.set_fields_change(item["id"], tls=tls),
                              actor=Caller.system("fanout-worker").principal,
                              action="host.repin", target=item["id"], job_id=job_id,
                              outcome="ok", params={"pin_sha256": output["pin_sha256"]})
        except ChangeRefused:
            pass  # the host was deleted meanwhile: nothing to pin


def count_failures(results: list[dict[str, Any]]) -> int:
    """How many of these results count against max_errors."""
    return sum(1 for r in results if ResultStatus(r["status"]).failed)


def final_status(counts: dict[str, int], *, cancelled: bool) -> JobStatus:
    if cancelled:
        return JobStatus.CANCELLED
    ok = counts.get(ResultStatus.SUCCEEDED.value, 0)
    total = sum(counts.values())
    if total and ok == total:
        return JobStatus.SUCCEEDED
    if ok == 0:
        return JobStatus.FAILED
    return JobStatus.PARTIAL
