"""The Distributed Map path end to end under moto, through the public API: 1,200 simulated
doveadm hosts (bench/fleet.py, one process on 127.0.0.1), jobs submitted and read through
the API front, batches run by the real fan-out worker from moto's Step Functions
interpreter. Hosts are written straight into the inventory table (fast); jobs are not."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from bench.fleet import COMMANDS_FILE, FleetProcess
from mailfleet import aws
from mailfleet.config import FanoutSettings, JobLimits, JobSettings, SecretSettings, Tables
from mailfleet.logic import distributed
from mailfleet.logic.connect import pack_commands
from mailfleet.store.jobs import JobStore
from tests.fixtures.stack import function_environment
from tests.waiting import wait_until

HOSTS = 1200
API_KEY = "sim-fleet-doveadm-key"


@pytest.fixture(scope="module", autouse=True)
def map_past_500() -> Iterator[None]:
    """1,200 hosts would run in-process under the default threshold (2,000): these tests
    are about the Map, so it takes every job above 500 here (the functions share this
    process's environment)."""
    with function_environment({"INPROCESS_MAX_TARGETS": "500"}):
        yield


@pytest.fixture(scope="module")
def fleet(local_api: Any) -> Iterator[dict[str, Any]]:
    """1,200 hosts of one simulated fleet in the inventory, targeted by id. They are in
    maintenance so that the other tests' health sweeps (which probe every host not in
    maintenance) neither reach them nor wait on them, and they leave with the module."""
    local_api.ensure_deployed()
    with FleetProcess(HOSTS, latency=0.02, api_key=API_KEY, max_seconds=600) as sim:
        tag = f"sim-{uuid.uuid4().hex[:8]}"
        secret = f"{SecretSettings().host_secrets_prefix}{tag}"
        aws.client("secretsmanager").create_secret(
            Name=secret, SecretString=json.dumps({"api_key": API_KEY})
        )
        # As a first job would leave them: each host's command list cached in its item.
        commands = {"fetched_at": int(time.time()),
                    "commands_gz": pack_commands(json.loads(COMMANDS_FILE.read_text()))}
        ids = [f"{tag}-{i:04d}" for i in range(HOSTS)]
        with aws.table(Tables().hosts_table).batch_writer() as batch:
            for i, host_id in enumerate(ids):
                batch.put_item(Item={
                    "id": host_id, "kind": "dovecot", "endpoint": sim.endpoint(i),
                    "tls": {"verify": True}, "tags": {"fleet": tag}, "max_concurrency": 2,
                    "maintenance": True, "credentials_secret": secret,
                    "doveadm_commands": commands,
                })
        try:
            yield {"sim": sim, "tag": tag, "ids": ids}
        finally:
            with aws.table(Tables().hosts_table).batch_writer() as batch:
                for host_id in ids:
                    batch.delete_item(Key={"id": host_id})


def submit(local_api: Any, fleet: dict[str, Any], **body: Any) -> dict[str, Any]:
    fleet["sim"].reset()
    job = {"action": "who", "targets": {"hosts": fleet["ids"]}, **body}
    answer = local_api.request("POST", "/jobs", json=job)
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert accepted["total"] == HOSTS and accepted["path"] == distributed.DISTRIBUTED
    return accepted


def wait_final(local_api: Any, job_id: str, timeout: float = 90) -> dict[str, Any]:
    # The store's status is cheap to poll; the API read below is the check.
    wait_until(lambda: JobStore().status(job_id)[0] not in ("PENDING", "RUNNING"), timeout,
               interval=0.25, what=f"job {job_id} final")
    view = local_api.request("GET", f"/jobs/{job_id}")
    assert view.status_code == 200, view.text
    return view.json()


def test_hosts_removed_before_the_worker_reads_them_fail_and_the_rest_run(
        local_api: Any, fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker reads its hosts 100 at a time while the first ones run (read-ahead):
    hosts deleted between the job's acceptance and that read, in two different chunks,
    get one FAILED result each and are not contacted; every other host runs once."""
    from mailfleet.logic import jobs as jobs_module
    from mailfleet.logic.caller import Caller
    from mailfleet.models.jobs import JobRequest

    ids = fleet["ids"][:350]  # in-process (under 500 here): four chunks of reads
    removed = [ids[150], ids[340]]
    # Accepted, but its worker not launched yet: the hosts go away in between.
    monkeypatch.setattr(jobs_module.InProcessPath, "start", lambda self, job, targets: None)
    request = JobRequest.model_validate({"action": "who", "targets": {"hosts": ids},
                                         "max_concurrency": 50})
    answer, _ = jobs_module.Jobs().submit(request, Caller.system("test"))
    assert answer["path"] == "inprocess"
    table = aws.table(Tables().hosts_table)
    kept = [table.get_item(Key={"id": h}, ConsistentRead=True)["Item"] for h in removed]
    fleet["sim"].reset()
    try:
        for host_id in removed:
            table.delete_item(Key={"id": host_id})
        jobs_module.Jobs().execute(answer["job_id"])
    finally:
        for item in kept:
            table.put_item(Item=item)
    view = jobs_module.Jobs().view(answer["job_id"])
    assert view["counts"] == {"SUCCEEDED": 348, "FAILED": 2}
    by_host = {r["host"]: r for r in view["results"]}
    assert sorted(by_host) == sorted(ids)
    for host_id in removed:
        assert by_host[host_id]["status"] == "FAILED"
        assert by_host[host_id]["error"]["message"] == "host was removed from the inventory"
    seen = fleet["sim"].stats()
    assert seen["posts"] == 348 and seen["posts_per_host_max"] == 1


def test_a_worker_out_of_time_hands_over_and_the_next_runs_only_the_rest(
        local_api: Any, fleet: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process path: a worker whose invocation runs out of time stops starting hosts
    and hands over; the next invocation reads what was recorded and runs only the hosts
    without a result, and the job closes with every host counted once."""
    from mailfleet.logic import jobs as jobs_module
    from mailfleet.logic.caller import Caller
    from mailfleet.models.jobs import JobRequest

    ids = fleet["ids"][:300]
    monkeypatch.setattr(jobs_module.InProcessPath, "start", lambda self, job, targets: None)
    request = JobRequest.model_validate({"action": "who", "targets": {"hosts": ids},
                                         "max_concurrency": 20, "timeout_seconds": 5})
    answer, _ = jobs_module.Jobs().submit(request, Caller.system("test"))
    job_id = answer["job_id"]
    fleet["sim"].reset()
    asked = 0

    def remaining_ms() -> int:
        """Plenty for the first 120 starts, then less than one host's timeout."""
        nonlocal asked
        asked += 1
        return 600_000 if asked <= 120 else 1_000

    handed: list[str] = []
    first = jobs_module.Jobs().execute(job_id, remaining_ms=remaining_ms,
                                       continue_later=handed.append)
    assert first == {"job_id": job_id, "status": "RUNNING", "handed_over": True}
    assert handed == [job_id]
    done_first = len(JobStore().results(job_id)[0])
    assert 100 <= done_first < len(ids)
    second = jobs_module.Jobs().execute(job_id, remaining_ms=lambda: 600_000,
                                        continue_later=handed.append)
    assert second["status"] == "SUCCEEDED" and handed == [job_id]
    view = jobs_module.Jobs().view(job_id)
    assert view["counts"] == {"SUCCEEDED": len(ids)}
    assert sorted(r["host"] for r in view["results"]) == sorted(ids)
    seen = fleet["sim"].stats()
    assert seen["posts"] == len(ids) and seen["posts_per_host_max"] == 1


def audit_actions(local_api: Any, job_id: str) -> list[str]:
    events = local_api.request("GET", "/audit", params={"job_id": job_id, "limit": 100})
    return sorted(e["action"] for e in events.json()["events"])


def test_every_host_gets_exactly_one_recorded_result(local_api: Any,
                                                     fleet: dict[str, Any]) -> None:
    accepted = submit(local_api, fleet, max_concurrency=100)
    done = wait_final(local_api, accepted["job_id"])
    assert done["status"] == "SUCCEEDED", done.get("note")
    assert done["path"] == distributed.DISTRIBUTED
    assert done["counts"] == {"SUCCEEDED": HOSTS}
    results = done["results"]
    assert sorted(r["host"] for r in results) == fleet["ids"]
    assert all(r["attempts"] == 1 and r["output"] == [] for r in results)
    seen = fleet["sim"].stats()
    # Each host was asked once (no batch ran twice), never over its own cap.
    assert seen["posts"] == HOSTS and seen["posts_per_host_max"] == 1
    assert seen["peak_per_host"] <= 2
    # The Map ran to its end and closed the job once.
    execution = aws.client("stepfunctions").describe_execution(
        executionArn=distributed.execution_arn(accepted["job_id"], JobSettings()))
    assert execution["status"] == "SUCCEEDED"
    assert audit_actions(local_api, accepted["job_id"]) == ["job.end", "job.start"]


def test_max_errors_stops_new_hosts_across_batches(local_api: Any,
                                                   fleet: dict[str, Any]) -> None:
    fleet["sim"].configure(failure_rate=1.0)  # every host fails its command
    try:
        accepted = submit(local_api, fleet, max_concurrency=40, max_errors=25)
        done = wait_final(local_api, accepted["job_id"])
    finally:
        fleet["sim"].configure(failure_rate=0.0)
    counts = done["counts"]
    # Four batch workers of ten hosts each run at once: at most those in flight when the
    # shared counter reached 25 fail on top of it; every other host is skipped unasked.
    assert 25 <= counts["FAILED"] <= 25 + 40, counts
    assert counts["FAILED"] + counts["SKIPPED"] == HOSTS
    assert done["status"] == "FAILED" and done["note"] == "stopped: max_errors"
    skipped = [r for r in done["results"] if r["status"] == "SKIPPED"]
    assert all("max_errors" in r["output"]["skipped"] for r in skipped)
    assert fleet["sim"].stats()["posts"] == counts["FAILED"]
    # The counter stops at the limit: failures past it are not counted, once or again.
    assert JobStore().error_count(accepted["job_id"]) == 25
    failed = [r for r in done["results"] if r["status"] == "FAILED"]
    assert {r["error"]["code"] for r in failed} == {68}


def test_cancel_mid_run_stops_the_execution_and_skips_the_rest(
    local_api: Any, fleet: dict[str, Any]
) -> None:
    fleet["sim"].configure(latency=0.4)
    try:
        accepted = submit(local_api, fleet, max_concurrency=40, timeout_seconds=2)
        job_id = accepted["job_id"]
        end = time.monotonic() + 30
        while fleet["sim"].stats()["posts"] < 80 and time.monotonic() < end:
            time.sleep(0.1)
        cancel = local_api.request("POST", f"/jobs/{job_id}/cancel")
        assert cancel.status_code == 202 and cancel.json()["cancel_requested"] is True
        done = wait_final(local_api, job_id)
    finally:
        fleet["sim"].configure(latency=0.02)
    assert done["status"] == "CANCELLED"
    counts = Counter(r["status"] for r in done["results"])
    late = [r for r in done["results"] if r["status"] not in ("SUCCEEDED", "SKIPPED")]
    assert set(counts) == {"SUCCEEDED", "SKIPPED"} and sum(counts.values()) == HOSTS, late[:3]
    # Cancelled early: most hosts were never asked, and every host asked has its answer.
    assert 80 <= counts["SUCCEEDED"] < HOSTS // 2
    assert fleet["sim"].stats()["posts"] == counts["SUCCEEDED"]
    skipped = [r for r in done["results"] if r["status"] == "SKIPPED"]
    assert all("cancelled" in r["output"]["skipped"] for r in skipped)
    execution = aws.client("stepfunctions").describe_execution(
        executionArn=distributed.execution_arn(job_id, JobSettings()))
    assert execution["status"] == "ABORTED"
    assert audit_actions(local_api, job_id) == ["job.cancel", "job.end", "job.start"]


def test_worker_events_for_an_unknown_job_are_harmless(local_api: Any) -> None:
    from tests.integration.test_events_replay import invoke, load

    for sample in ("run-batch.json", "close-job.json", "execution-aborted.json"):
        outcome = invoke(local_api, "FanoutWorkerFunction", load(f"fanout_worker/{sample}"))
        assert outcome["status"] == "UNKNOWN", (sample, outcome)


# ---------------------------------------------------------------- planning, no AWS


def _job_settings(max_targets: int = 500) -> JobSettings:
    return JobSettings(
        fanout=FanoutSettings(fanout_state_machine_arn="arn:aws:states:us-east-1:1:stateMachine:m",
                              jobs_bucket="bucket", fanout_batch_size=1000,
                              fanout_batch_concurrency=40),
        limits=JobLimits(inprocess_max_targets=max_targets, inprocess_max_seconds=600))


@pytest.fixture
def config() -> JobSettings:
    return _job_settings()


def test_the_path_follows_target_count_and_worst_case_time(config: JobSettings) -> None:
    assert distributed.choose_path(500, 30, 50, config) == distributed.INPROCESS
    assert distributed.choose_path(501, 30, 50, config) == distributed.DISTRIBUTED
    # 200 hosts, 10 at a time, each allowed 60 s: 20 waves could take 1,200 s.
    assert distributed.choose_path(200, 60, 10, config) == distributed.DISTRIBUTED
    assert distributed.choose_path(200, 60, 100, config) == distributed.INPROCESS


def test_the_map_runs_as_many_hosts_at_once_as_the_job_asks(config: JobSettings) -> None:
    # 100 at up to 40 a worker: 4 workers of 25 (not 2 x 40 = 80 in flight).
    plan = distributed.plan_batches([f"h{i}" for i in range(1000)], 100, 30, config)
    assert (plan.batch_concurrency, plan.parallel_batches) == (25, 4)
    for wanted in (1, 7, 40, 100, 120, 1000):
        per, parallel = distributed.split_concurrency(wanted, 40)
        assert per <= 40 and per * parallel == wanted



def test_a_job_wider_than_one_workers_sockets_takes_the_map() -> None:
    config = _job_settings(max_targets=2000)
    assert distributed.choose_path(1500, 30, 100, config) == distributed.INPROCESS
    assert distributed.choose_path(1500, 30, 600, config) == distributed.DISTRIBUTED
    assert distributed.choose_path(400, 30, 1000, config) == distributed.INPROCESS  # 400 at most


@pytest.mark.parametrize(
    ("targets", "concurrency", "timeout"),
    [(1200, 100, 30), (10_000, 100, 30), (1000, 7, 30), (100, 100, 30), (5000, 50, 300)],
)
def test_batches_cover_every_host_once_within_the_job_cap(
    config: JobSettings, targets: int, concurrency: int, timeout: float
) -> None:
    ids = [f"h{i}" for i in range(targets)]
    plan = distributed.plan_batches(ids, concurrency, timeout, config)
    assert [h for batch in plan.batches for h in batch] == ids
    assert plan.batch_concurrency * plan.parallel_batches <= concurrency
    sizes = [len(b) for b in plan.batches]
    # Whole result writes (25) except the last batch, and each batch fits one invocation
    # even if every wave of it times out.
    assert all(s % 25 == 0 for s in sizes[:-1]) or max(sizes) < 25
    waves = -(-max(sizes) // plan.batch_concurrency)
    assert waves * timeout <= 600


class CountingStore:
    def __init__(self) -> None:
        self.count = 0
        self.reads = 0

    def error_count(self, job_id: str) -> int:
        self.reads += 1
        return self.count

    def add_failure(self, job_id: str, limit: int) -> bool:
        if self.count >= limit:
            return False
        self.count += 1
        return True


def test_shared_budget_counts_each_failure_once_and_stops_at_the_limit() -> None:
    store = CountingStore()
    other = distributed.SharedErrorBudget(store, "j", 3)  # type: ignore[arg-type]
    mine = distributed.SharedErrorBudget(store, "j", 3)  # type: ignore[arg-type]
    assert mine.may_start() and other.may_start()
    mine.failed()
    other.failed()
    other.failed()  # the third: the limit
    assert store.count == 3
    assert not other.may_start()  # read again at once after its own failure
    # The other batch sees it within REFRESH_SECONDS, and never counts past the limit.
    wait_until(lambda: not mine.may_start(), 10 * distributed.SharedErrorBudget.REFRESH_SECONDS,
               what="the other batch's failures seen")
    mine.failed()
    assert store.count == 3
