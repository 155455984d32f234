"""Fleet health: every host not in maintenance probed the cheapest way its kind allows,
all in parallel through the fan-out engine, the outcome kept on the host item.

A probe is "up" when the host answered its driver's `health_probe`, the cheapest call of
its kind (proxy `/healthz`, appliance `/health`, a light doveadm command, pymap `Ping`);
the driver's `health_details` add what that kind can tell (proxy destinations marked
down, appliance version) without making the host down when only they fail. `since` is
when the host last changed between up and down.

Scheduled sweeps only update the hosts (every five minutes, jobs would bury the
operators' own); a sweep asked for with POST /fleet/sweep is recorded as a job with
action `health.sweep`, one result per host, so GET /jobs/{id} follows it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from mailfleet.config import HealthSettings
from mailfleet.drivers.base import Deadline, Driver
from mailfleet.errors import ErrorType, HostError
from mailfleet.fanout import run
from mailfleet.logic import connect
from mailfleet.logic.caller import Caller
from mailfleet.logic.job_paths import JobPath, invoke_later
from mailfleet.logic.job_records import JobRecords
from mailfleet.logic.problems import conflict, forbidden, invalid
from mailfleet.models.common import now_iso
from mailfleet.models.hosts import Host, HostKind
from mailfleet.models.jobs import HostResult, JobStatus, ResultStatus
from mailfleet.store.hosts import HostNotFound, HostStore
from mailfleet.store.jobs import BatchedResults

SWEEP_ACTION = "health.sweep"
RECORD_WAIT_SECONDS = 30.0  # for the last results to be written once every probe ended
UP, DOWN, UNKNOWN = "up", "down", "unknown"

# Errors that still prove the host answered (a doveadm command outside
# doveadm_allowed_commands, say): up, with the error kept.
_ANSWERED = (ErrorType.EXIT_CODE, ErrorType.COMMAND, ErrorType.UNSUPPORTED,
             ErrorType.INVALID_PARAMS)


def _answered(error: HostError) -> bool:
    return error.type in _ANSWERED or (error.type is ErrorType.AUTH
                                       and error.code == "unAuthorized")


def probe(driver: Driver, deadline: Deadline, previous: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    """Probe one host; returns what the sweep keeps of an up host, raises HostError when
    the host is down (the engine records it as that host's failure). `previous` is the
    host's last health."""
    out: dict[str, Any] = {"version": None, "last_error": None}
    started = time.monotonic()
    try:
        answer = driver.perform(driver.health_probe.action, driver.health_probe.params, deadline)
    except HostError as exc:
        if not _answered(exc):
            raise
        answer, out["last_error"] = None, exc.to_dict()
    out["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
    refused_at = _refused_since(previous, driver.host)
    if refused_at is not None:
        # A proxy locks a controller out after a few refused tokens: one refusal is
        # enough to know, until the host's credentials change.
        out["auth_refused_at"] = refused_at
        out["last_error"] = HostError(
            ErrorType(previous["last_error"]["type"]),  # type: ignore[index]
            f"not asked again: the proxy refused our token at {refused_at}; asked again "
            "once the host's credentials change (PATCH /hosts)", code="not_asked").to_dict()
        return out
    try:
        out.update(driver.health_details(answer, deadline))
    except HostError as exc:  # the host is up; what we could not learn is said
        out["last_error"] = exc.to_dict()
        if driver.locks_out_on_refusal and exc.type in (ErrorType.AUTH, ErrorType.LOCKED_OUT):
            out["auth_refused_at"] = now_iso()
    return out


def _refused_since(previous: dict[str, Any] | None, host: Host) -> str | None:
    """When a proxy last refused our token, if nobody changed the host since."""
    refused_at = (previous or {}).get("auth_refused_at")
    changed_at = host.updated_at or host.created_at or ""
    if refused_at and (previous or {}).get("last_error") and refused_at > changed_at:
        return str(refused_at)
    return None


def health_record(result: dict[str, Any], previous: dict[str, Any] | None,
                  swept_at: str) -> dict[str, Any]:
    """What a host item keeps from one engine result (see fanout.run)."""
    up = result["status"] == ResultStatus.SUCCEEDED.value
    output = result.get("output") if up else None
    record: dict[str, Any] = {
        "status": UP if up else DOWN,
        "latency_ms": (output or {}).get("latency_ms", result.get("duration_ms")),
        "version": (output or {}).get("version"),
        "last_error": (output or {}).get("last_error") if up else result.get("error"),
        "swept_at": swept_at,
    }
    if previous and previous.get("status") == record["status"] and previous.get("since"):
        record["since"] = previous["since"]
    else:
        record["since"] = swept_at
    if output and "destinations_down" in output:
        record["destinations"] = output.get("destinations")
        record["destinations_down"] = output["destinations_down"]
    if output and output.get("auth_refused_at"):
        record["auth_refused_at"] = output["auth_refused_at"]
    if record["version"] is None and previous and previous.get("version"):
        record["version"] = previous["version"]  # a down host keeps the last one seen
    return record


@dataclass
class SweepReport:
    swept_at: str
    elapsed_s: float
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # host id -> health
    kinds: dict[str, str] = field(default_factory=dict)  # host id -> kind

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, Counter[str]] = defaultdict(Counter)
        for host_id, record in self.records.items():
            out[self.kinds[host_id]][record["status"]] += 1
        return {kind: {UP: c[UP], DOWN: c[DOWN]} for kind, c in sorted(out.items())}

    def summary(self) -> dict[str, Any]:
        down = sorted(h for h, r in self.records.items() if r["status"] == DOWN)
        return {"swept_at": self.swept_at, "elapsed_s": round(self.elapsed_s, 3),
                "hosts": len(self.records), "counts": self.counts(), "down": down}


class _HealthSink:
    """Keeps each result on its host as it arrives (and in the job, for a sweep job)."""

    def __init__(self, hosts: HostStore, items: dict[str, dict[str, Any]], swept_at: str,
                 job_results: BatchedResults | None) -> None:
        self._hosts = hosts
        self._items = items
        self._swept_at = swept_at
        self._job_results = job_results
        self._done = threading.Condition()
        self.records: dict[str, dict[str, Any]] = {}

    def record(self, result: dict[str, Any]) -> None:
        host_id = result["host"]
        health = health_record(result, self._items[host_id].get("health"), self._swept_at)
        try:
            self._hosts.set_fields(host_id, health=health)
        except HostNotFound:
            pass  # removed while we probed it: nothing to keep
        if self._job_results is not None:
            self._job_results.record(result)
        with self._done:
            self.records[host_id] = health
            self._done.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        """The engine may return while its last results are still being recorded (it
        counts a host done before its result is written): wait for all of them."""
        with self._done:
            return self._done.wait_for(lambda: len(self.records) >= count, timeout)


class HealthSweepPath(JobPath):
    """The job path of a sweep asked for through the API: the maintenance function probes
    every target (FleetHealth.sweep), then closes the job."""

    system = "health-sweep"
    unstarted_reason = "could not start the sweep"
    unstarted_message = "the sweep was recorded but could not be started; it is marked FAILED"

    def __init__(self, records: JobRecords | None = None,
                 settings: HealthSettings | None = None) -> None:
        super().__init__(records)
        self.settings = settings or HealthSettings()

    def start(self, job: dict[str, Any], targets: list[str]) -> None:
        invoke_later(self.settings.maintenance_function, "MAINTENANCE_FUNCTION",
                     {"task": "health-sweep", "job_id": job["job_id"]})


class FleetHealth:
    def __init__(self, hosts: HostStore | None = None,
                 records: JobRecords | None = None,
                 settings: HealthSettings | None = None) -> None:
        self.settings = settings or HealthSettings()
        self.hosts = hosts or (records.hosts if records is not None else HostStore())
        self._records = records

    @property
    def path(self) -> HealthSweepPath:
        """Read only by sweeps recorded as jobs (the scheduled ones touch no job)."""
        if self._records is None:
            self._records = JobRecords(hosts=self.hosts)
        return HealthSweepPath(self._records, self.settings)

    # ------------------------------------------------------------------ sweeping
    def targets(self, kind: str | None = None, tags: dict[str, str] | None = None
                ) -> list[dict[str, Any]]:
        """The hosts a sweep probes: every one not in maintenance, or those of a kind and
        tags (a sweep of one site, say)."""
        items, _ = self.hosts.list(kind=kind, tags=tags or {}, include_maintenance=False)
        return items

    def sweep(self, *, job_id: str | None = None, kind: str | None = None,
              tags: dict[str, str] | None = None, concurrency: int | None = None,
              timeout_seconds: float | None = None) -> SweepReport:
        """Probe the hosts not in maintenance (all, or of `kind` and `tags`), or the
        targets of sweep job `job_id`."""
        job = None
        store = self.path.records.store if job_id is not None else None  # a recorded sweep
        if store is not None and job_id is not None:
            job = store.get(job_id)
            if JobStatus(job["status"]).final:
                raise conflict(f"sweep job {job_id} has already ended")
            store.mark_running(job_id, now_iso(), job.get("path", "maintenance"))
            found = self.hosts.get_many(job["targets"])
            items = [found[h] for h in job["targets"] if h in found]
        else:
            items = self.targets(kind, tags)
        by_id = {item["id"]: item for item in items}
        swept_at = now_iso()
        job_results = BatchedResults(store, job_id) if store and job_id else None
        sink = _HealthSink(self.hosts, by_id, swept_at, job_results)

        def perform(host: Host, deadline: Deadline) -> Any:
            driver = connect.driver_for(by_id[host.id])
            try:
                return probe(driver, deadline, by_id[host.id].get("health"))
            finally:
                driver.close()

        config = self.settings
        try:
            summary = run(
                [Host.model_validate(i) for i in sorted(items, key=lambda i: i["id"])],
                perform, sink,
                concurrency=concurrency or config.health_sweep_concurrency,
                timeout_seconds=timeout_seconds or config.health_probe_timeout,
            )
            sink.wait_for(len(items), RECORD_WAIT_SECONDS)
        finally:
            if job_results is not None:
                job_results.close()
        if store is not None and job is not None:
            missing = [h for h in job["targets"] if h not in by_id]
            if missing:  # removed from the inventory since the sweep was asked for
                store.write_results(job["job_id"], [_gone(h) for h in missing])
            self.path.close(job)
        return SweepReport(swept_at, summary.elapsed_s, dict(sink.records),
                           {i["id"]: i["kind"] for i in items})

    def submit(self, caller: Caller, kind: str | None = None,
               tags: dict[str, str] | None = None) -> dict[str, Any]:
        """POST /fleet/sweep: record the sweep as a job and start it in the background.
        A scoped caller sweeps only hosts in its scope."""
        if caller.scope is not None:
            narrowed = caller.scope.narrow(kind, tags)
            if narrowed is None:
                raise forbidden("kind and tags: outside this token's scope")
            kind, tags = narrowed
        items = self.targets(kind, tags)
        if not items:
            raise invalid("tags" if tags else "hosts",
                          "no host outside maintenance to sweep"
                          + (f" matches kind {kind} and tags {tags}" if kind or tags else ""))
        targets = sorted(i["id"] for i in items)
        config = self.settings
        job_id = uuid.uuid4().hex
        job = {
            "job_id": job_id, "action": SWEEP_ACTION, "params": {},
            "status": JobStatus.PENDING.value, "total": len(targets),
            "created_by": caller.principal, "created_at": now_iso(),
            "max_concurrency": config.health_sweep_concurrency,
            "timeout_seconds": config.health_probe_timeout, "dry_run": False,
            "path": "maintenance",
        }
        # The job and its event together; the sweep is started after (a failed start
        # closes the job, with its own event).
        path = self.path
        path.records.audit.record(
            path.records.store.create_change(job, targets),
            actor=caller.principal, source_ip=caller.source_ip, request_id=caller.request_id,
            action="job.start", target=f"job:{job_id}", job_id=job_id, outcome="ok",
            params={"action": SWEEP_ACTION, "total": len(targets), "kind": kind,
                    "tags": tags or None})
        path.launch(job, targets, caller)
        return {"job_id": job_id, "status": JobStatus.PENDING.value, "total": len(targets)}

    # ------------------------------------------------------------------ reading
    def fleet(self, caller: Caller | None = None) -> dict[str, Any]:
        """GET /fleet/health: the last sweep's view of every host (a scoped caller's: of
        every host in its scope).

        Hosts in maintenance, and hosts never swept, are `unknown`: nobody asked them."""
        items, _ = self.hosts.list()
        if caller is not None:
            items = [i for i in items if caller.sees(i)]
        counts: dict[str, Counter[str]] = {k.value: Counter() for k in HostKind}
        down: list[str] = []
        destinations_down: list[dict[str, str]] = []
        maintenance: list[str] = []
        swept_at: str | None = None
        for item in sorted(items, key=lambda i: i["id"]):
            health = item.get("health") or {}
            if item.get("maintenance"):
                maintenance.append(item["id"])
            status = health.get("status") if not item.get("maintenance") else None
            if status not in (UP, DOWN):
                status = UNKNOWN
            counts[item["kind"]][status] += 1
            if status == DOWN:
                down.append(item["id"])
            if status == UP:
                destinations_down += [{"host": item["id"], "destination": d}
                                      for d in health.get("destinations_down") or []]
            if health.get("swept_at") and (swept_at is None or health["swept_at"] > swept_at):
                swept_at = health["swept_at"]
        return {
            "counts": {kind: {UP: c[UP], DOWN: c[DOWN], UNKNOWN: c[UNKNOWN]}
                       for kind, c in counts.items()},
            "down": down,
            "destinations_down": destinations_down,
            "maintenance": maintenance,
            "swept_at": swept_at,
        }


def _gone(host_id: str) -> dict[str, Any]:
    return HostResult.skipped(host_id, "host was removed from the inventory").item()


def emit_metrics(report: SweepReport) -> None:
    """Per kind: HostsUp, HostsDown and each probe's latency; fleet-wide HostsDown and
    DestinationsDown (what the template's alarm watches), as CloudWatch EMF lines."""
    latencies: dict[str, list[float]] = defaultdict(list)
    for host_id, record in report.records.items():
        if record["status"] == UP and record.get("latency_ms") is not None:
            latencies[report.kinds[host_id]].append(float(record["latency_ms"]))
    counts = report.counts()
    for kind, count in counts.items():
        # One blob per kind: a Metrics object holds one set of dimensions at a time.
        metrics = EphemeralMetrics()
        metrics.add_dimension("kind", kind)
        metrics.add_metric("HostsUp", MetricUnit.Count, count[UP])
        metrics.add_metric("HostsDown", MetricUnit.Count, count[DOWN])
        for value in latencies.get(kind, []):
            metrics.add_metric("ProbeLatency", MetricUnit.Milliseconds, value)
        metrics.flush_metrics()
    fleet = EphemeralMetrics()
    fleet.add_metric("HostsDown", MetricUnit.Count, sum(c[DOWN] for c in counts.values()))
    fleet.add_metric("HostsUp", MetricUnit.Count, sum(c[UP] for c in counts.values()))
    fleet.add_metric("DestinationsDown", MetricUnit.Count, sum(
        len(r.get("destinations_down") or []) for r in report.records.values()))
    fleet.flush_metrics()
