"""Cutovers end to end: the API (POST /cutovers ...), the cutover state machine run by
moto's real Step Functions interpreter (deployed from template.yaml), the cutover step
function, and proxy doubles (or a real Dovecot director) on loopback.

Wait states and Retry back-off are made instant (lambda_bridge.instant_waits), so retries
cost nothing but their requests.
"""

from __future__ import annotations

import imaplib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mailfleet.store.cutovers import CutoverStore
from mailfleet_local import lambda_bridge
from mailfleet_local.peers.proxy import ProxyDouble
from tests.fixtures.stack import LocalApi, shared_local_api
from tests.waiting import wait_until

FINAL = ("SUCCEEDED", "PARTIAL", "FAILED", "CANCELLED", "ROLLED_BACK")
PROXY_STEPS = ["remember", "hold_logins", "switch", "invalidate", "kick", "verify"]
MakeDouble = Callable[..., ProxyDouble]


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def api() -> LocalApi:
    api = shared_local_api()
    api.ensure_deployed()
    return api


@pytest.fixture(autouse=True)
def instant() -> Iterator[None]:
    with lambda_bridge.instant_waits():
        yield


class Fleet:
    """Proxy doubles registered in the inventory under fresh ids, and fresh accounts."""

    def __init__(self, api: LocalApi, make: MakeDouble, count: int = 3, **options: Any) -> None:
        self.tag = uuid.uuid4().hex[:8]
        options.setdefault("destinations", ("legacy", "stalwart"))
        self.doubles = [make(**options) for _ in range(count)]
        self.ids = [f"px-{self.tag}-{i}" for i in range(count)]
        for host_id, double in zip(self.ids, self.doubles, strict=True):
            register_proxy(api, host_id, double, tags={"fleet": self.tag})

    def accounts(self, count: int) -> list[str]:
        return [f"user{i:03d}@{self.tag}.example" for i in range(count)]

    def body(self, accounts: list[str], **extra: Any) -> dict[str, Any]:
        return {
            "accounts": accounts,
            "destination": "stalwart",
            "proxies": {"hosts": self.ids},
            **extra,
        }


def register_proxy(
    api: LocalApi, host_id: str, double: ProxyDouble, tags: dict[str, str]
) -> None:
    register(api, {
        "id": host_id,
        "kind": "proxy",
        "endpoint": double.endpoint,
        "credentials": {"token": double.token},
        "tls": {"pin_sha256": double.fingerprint_sha256},
        "tags": tags,
    })


def register(api: LocalApi, host: dict[str, Any]) -> None:
    answer = api.request("POST", "/hosts", json=host)
    assert answer.status_code == 201, answer.text


def start(api: LocalApi, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    answer = api.request("POST", "/cutovers", json=body, headers=headers)
    assert answer.status_code == 202, answer.text
    return answer.json()


def wait_final(api: LocalApi, cutover_id: str, timeout: float = 180) -> dict[str, Any]:
    """Poll lightly (one account per look) until final, then fetch every account."""
    def final() -> bool:
        answer = api.request("GET", f"/cutovers/{cutover_id}", params={"accounts_limit": 1})
        assert answer.status_code == 200, answer.text
        return answer.json()["status"] in FINAL

    wait_until(final, timeout, interval=0.25, what=f"cutover {cutover_id} final")
    answer = api.request("GET", f"/cutovers/{cutover_id}", params={"accounts_limit": 10000})
    assert answer.status_code == 200, answer.text
    return answer.json()


def by_account(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["account"]: a for a in view["accounts"]}


def puts_for(double: ProxyDouble, account: str) -> int:
    return sum(1 for r in double.requests_to("/mappings", "PUT")
               if r.query.get("identifier") == account)


# ---------------------------------------------------------------------- 3 proxies, 50 accounts
class StepEvents:
    """Records the history events of Distributed Map children: moto keeps them in a
    throw-away manager; on AWS they are each child execution's own history."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
            distributed_iteration_component as component,
        )
        from moto.stepfunctions.parser.asl.eval.event.event_manager import EventManager

        self.managers: list[Any] = []
        managers = self.managers

        class Recording(EventManager):  # type: ignore[misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                managers.append(self)

        monkeypatch.setattr(component, "EventManager", Recording)

    def types(self) -> list[str]:
        return [str(e["type"]) for m in self.managers for e in m._history_event_list]


@pytest.fixture(scope="module")
def big_cutover(api: LocalApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        dict[str, Any]]:
    """50 accounts on 3 proxies: half mapped to legacy, half on the default route, each
    with live sessions on every proxy."""
    doubles: list[ProxyDouble] = []

    def make(**options: Any) -> ProxyDouble:
        doubles.append(ProxyDouble(**options).start())
        return doubles[-1]

    monkeypatch = pytest.MonkeyPatch()
    events = StepEvents(monkeypatch)
    fleet = Fleet(api, make)
    accounts = fleet.accounts(50)
    mapped = set(accounts[::2])
    for double in fleet.doubles:
        for account in accounts:
            if account in mapped:
                double.set_mapping(account, "legacy")
            double.seed_sessions(account, 2)
    started = time.monotonic()
    with lambda_bridge.instant_waits():
        accepted = start(api, fleet.body(accounts, delay_seconds=7, max_concurrency=10))
        view = wait_final(api, accepted["cutover_id"])
    took = time.monotonic() - started
    monkeypatch.undo()
    yield {"fleet": fleet, "accounts": accounts, "mapped": mapped, "view": view,
           "took": took, "events": events.types(), "accepted": accepted}
    for double in doubles:
        double.stop()


def test_fifty_accounts_on_three_proxies(api: LocalApi, big_cutover: dict[str, Any]) -> None:
    fleet, accounts, view = big_cutover["fleet"], big_cutover["accounts"], big_cutover["view"]
    assert big_cutover["accepted"]["total"] == 50
    assert view["status"] == "SUCCEEDED", view.get("error")
    assert view["counts"] == {"DONE": 50}
    records = by_account(view)
    for double, host_id in zip(fleet.doubles, fleet.ids, strict=True):
        for account in accounts:
            # Every proxy resolves every account to the destination, sessions kicked,
            # new logins held back as asked.
            assert double.mapping_of(account) == "stalwart"
            assert double.route_of(account) == "stalwart"
            assert double.sessions_of(account) == 0
            delay = double.delay_of(account)
            assert delay is not None and delay.seconds == 7
            # The per-account record agrees with what the proxy had.
            previous = records[account]["previous"][host_id]
            assert previous == {"destination": "legacy",
                                "mapped": account in big_cutover["mapped"]}
    for account in accounts:
        record = records[account]
        assert record["status"] == "DONE" and record["error"] is None
        assert [s["step"] for s in record["steps"]] == PROXY_STEPS
        assert all(s["outcome"] == "ok" for s in record["steps"])
        kick = next(s for s in record["steps"] if s["step"] == "kick")
        assert all(kick["hosts"][h] == {"kicked": 2} for h in fleet.ids)


def test_the_audit_trail_shows_each_step(api: LocalApi, big_cutover: dict[str, Any]) -> None:
    cutover_id = big_cutover["view"]["cutover_id"]
    answer = api.request("GET", "/audit", params={"cutover_id": cutover_id, "limit": 1000})
    assert answer.status_code == 200, answer.text
    events = answer.json()["events"]
    actions: dict[str, list[str]] = {}
    for event in events:
        actions.setdefault(event["target"], []).append(event["action"])
        assert event["cutover_id"] == cutover_id
    assert actions[f"cutover:{cutover_id}"].count("cutover.start") == 1
    assert actions[f"cutover:{cutover_id}"].count("cutover.end") == 1
    for account in big_cutover["accounts"]:
        # One event per step; the last one also says the account is DONE.
        assert sorted(actions[f"account:{account}"]) == sorted(f"cutover.{s}" for s in PROXY_STEPS)
    verified = [e for e in events if e["action"] == "cutover.verify"]
    assert {e["params"]["account_status"] for e in verified} == {"DONE"}
    text = str(events)
    for double in big_cutover["fleet"].doubles:
        assert double.token not in text


def test_figures(big_cutover: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """Time per account and Step Functions state transitions per account (printed)."""
    view, events = big_cutover["view"], big_cutover["events"]
    entered = [t for t in events if t.endswith("StateEntered")]
    per_account = len(entered) / len(big_cutover["accounts"])
    assert per_account == 8  # Begin, Route, Remember, HoldLogins, Switch, Invalidate, Kick, Verify
    latencies = [_seconds(r["finished_at"]) - _seconds(r["started_at"])
                 for r in view["accounts"]]
    with capsys.disabled():
        print(
            f"\ncutover figures: 50 accounts x 3 proxies, max_concurrency 10: "
            f"{big_cutover['took']:.2f} s wall, "
            f"{big_cutover['took'] / 50 * 1000:.0f} ms/account throughput, "
            f"{sum(latencies) / len(latencies) * 1000:.0f} ms per account, Begin to DONE "
            f"(max {max(latencies) * 1000:.0f} ms); "
            f"{per_account:g} state transitions per account (+4 per cutover: Preflight, "
            f"Accounts, DrainRequested, Finish)"
        )


def _seconds(stamp: str) -> float:
    import datetime

    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def test_rollback_of_the_finished_cutover(api: LocalApi, big_cutover: dict[str, Any]) -> None:
    fleet, cutover_id = big_cutover["fleet"], big_cutover["view"]["cutover_id"]
    answer = api.request("POST", f"/cutovers/{cutover_id}/rollback")
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"cutover_id": cutover_id, "status": "RUNNING", "total": 50}
    view = wait_final(api, cutover_id)
    assert view["status"] == "ROLLED_BACK", view.get("error")
    assert view["counts"] == {"ROLLED_BACK": 50}
    for double in fleet.doubles:
        for account in big_cutover["accounts"]:
            expected = "legacy" if account in big_cutover["mapped"] else None
            assert double.mapping_of(account) == expected
            assert double.route_of(account) == "legacy"
    for record in view["accounts"]:
        assert record["error"] is None
        assert [s["step"] for s in record["steps"]] == [*PROXY_STEPS, "rollback"]
    again = api.request("POST", f"/cutovers/{cutover_id}/rollback")
    assert again.status_code == 409


# ---------------------------------------------------------------------- faults
def test_put_failing_for_one_account_rolls_only_that_account_back(
    api: LocalApi, proxy_double: MakeDouble
) -> None:
    fleet = Fleet(api, proxy_double)
    accounts = fleet.accounts(20)
    mapped_victim, unmapped_victim = accounts[10], accounts[11]
    for double in fleet.doubles:
        for account in accounts:
            if account != unmapped_victim:
                double.set_mapping(account, "legacy")
    # The second proxy's store keeps failing these two upserts.
    for victim in (mapped_victim, unmapped_victim):
        fleet.doubles[1].inject("PUT", "/mappings", 500, "upsert failed\n", times=None,
                                identifier=victim)
    accepted = start(api, fleet.body(accounts, tolerated_failure_percentage=10))
    view = wait_final(api, accepted["cutover_id"])
    assert view["status"] == "PARTIAL"
    assert view["counts"] == {"DONE": 18, "ROLLED_BACK": 2}
    records = by_account(view)
    for victim in (mapped_victim, unmapped_victim):
        record = records[victim]
        assert record["status"] == "ROLLED_BACK"
        assert record["error"]["step"] == "switch"
        failure = record["error"]["hosts"][fleet.ids[1]]
        assert failure["message"] == "the proxy failed: upsert failed"
        # Retried with back-off (1 + 3 attempts), then rolled back.
        assert puts_for(fleet.doubles[1], victim) == 4
        assert [s["outcome"] for s in record["steps"] if s["step"] == "switch"] == [
            "retrying"] * 4
    for double in fleet.doubles:
        # Back where it was: the mapped one on legacy, the unmapped one's mapping deleted.
        assert double.mapping_of(mapped_victim) == "legacy"
        assert double.mapping_of(unmapped_victim) is None
        assert double.route_of(unmapped_victim) == "legacy"  # the default destination
        for account in accounts:
            if account not in (mapped_victim, unmapped_victim):
                assert double.mapping_of(account) == "stalwart"
    deletes = [r for r in fleet.doubles[0].requests_to("/mappings", "DELETE")
               if r.query.get("identifier") == unmapped_victim]
    assert len(deletes) == 1


def test_a_read_only_mapping_store_is_detected_not_retried(
    api: LocalApi, proxy_double: MakeDouble
) -> None:
    fleet = Fleet(api, proxy_double, count=2)
    read_only = proxy_double(read_only=True, mappings={})
    host_id = f"px-{fleet.tag}-ro"
    register_proxy(api, host_id, read_only, tags={"fleet": fleet.tag})
    accounts = fleet.accounts(20)
    body = fleet.body(accounts, max_concurrency=2)
    body["proxies"] = {"tags": {"fleet": fleet.tag}}
    view = wait_final(api, start(api, body)["cutover_id"])
    assert view["status"] == "FAILED"
    assert "read-only" in view["halted"]
    rolled_back = [a for a in view["accounts"] if a["status"] == "ROLLED_BACK"]
    assert 1 <= len(rolled_back) <= 2  # those already under way when it was found
    assert view["counts"]["SKIPPED"] == len(accounts) - len(rolled_back)
    for record in rolled_back:
        assert "read-only" in record["error"]["hosts"][host_id]["message"]
        assert puts_for(read_only, record["account"]) == 1  # a 501 is never retried
    for double in [*fleet.doubles, read_only]:
        for account in accounts:
            assert double.mapping_of(account) is None


def test_a_proxy_that_dies_halfway(api: LocalApi, proxy_double: MakeDouble) -> None:
    fleet = Fleet(api, proxy_double)
    accounts = fleet.accounts(50)
    for double in fleet.doubles:
        for account in accounts:
            double.set_mapping(account, "legacy")
    victim = fleet.doubles[2]
    stop = threading.Event()

    def kill_after_twenty_switches() -> None:
        while not stop.is_set():
            if len(victim.requests_to("/mappings", "PUT")) >= 20:
                victim.die()
                return
            time.sleep(0.002)

    killer = threading.Thread(target=kill_after_twenty_switches, daemon=True)
    killer.start()
    try:
        view = wait_final(api, start(api, fleet.body(accounts, max_concurrency=1))["cutover_id"])
    finally:
        stop.set()
        killer.join()
    assert view["status"] == "PARTIAL"
    records = view["accounts"]
    done = [r for r in records if r["status"] == "DONE"]
    failed = [r for r in records if r["status"] == "FAILED"]
    skipped = [r for r in records if r["status"] == "SKIPPED"]
    assert 19 <= len(done) <= 20
    # The one in flight: put back on the live proxies, the dead one could not be told.
    assert len(failed) == 1 and len(done) + len(failed) + len(skipped) == 50
    assert "connection refused" in str(failed[0]["error"]["rollback"])
    assert "more than the tolerated 0%" in skipped[0]["error"]["message"]
    for record in records:
        account = record["account"]
        for double in fleet.doubles[:2]:
            assert double.mapping_of(account) == (
                "stalwart" if record["status"] == "DONE" else "legacy")
    victim.revive()


def test_refused_credentials_halt_the_cutover_before_a_lockout(
    api: LocalApi, proxy_double: MakeDouble
) -> None:
    fleet = Fleet(api, proxy_double, count=2)
    locked = proxy_double(lockout_threshold=3)
    host_id = f"px-{fleet.tag}-badtoken"
    register(api, {"id": host_id, "kind": "proxy", "endpoint": locked.endpoint,
                   "credentials": {"token": "w" * 40},  # not the proxy's token
                   "tls": {"pin_sha256": locked.fingerprint_sha256}})
    accounts = fleet.accounts(10)
    body = fleet.body(accounts, max_concurrency=3, tolerated_failure_percentage=100)
    body["proxies"]["hosts"].append(host_id)
    view = wait_final(api, start(api, body)["cutover_id"])
    # Found by the preflight, before any account was touched: one failed login, no more.
    assert view["status"] == "FAILED"
    assert "refused the token" in view["error"]["message"]
    assert "refused our credentials" in view["halted"]
    assert view["counts"] == {"SKIPPED": len(accounts)}
    assert locked.failed_auths() == 1 and not locked.locked_out()
    for double in fleet.doubles:
        assert all(double.mapping_of(a) is None for a in accounts)


def test_409_for_an_account_already_in_a_running_cutover(
    api: LocalApi, proxy_double: MakeDouble
) -> None:
    fleet = Fleet(api, proxy_double, latency=0.05)
    accounts = fleet.accounts(6)
    first = start(api, fleet.body(accounts[:4], max_concurrency=1),
                  **{"Idempotency-Key": f"k-{fleet.tag}"})
    clash = api.request("POST", "/cutovers", json=fleet.body(accounts[3:5]))
    assert clash.status_code == 409, clash.text
    assert clash.json()["conflicts"] == [
        {"account": accounts[3], "cutover_id": first["cutover_id"]}]
    # The same Idempotency-Key and body: the first answer, nothing new started.
    again = api.request("POST", "/cutovers", json=fleet.body(accounts[:4], max_concurrency=1),
                        headers={"Idempotency-Key": f"k-{fleet.tag}"})
    assert again.status_code == 202 and again.json() == first
    other = api.request("POST", "/cutovers", json=fleet.body(accounts[:1]),
                        headers={"Idempotency-Key": f"k-{fleet.tag}"})
    assert other.status_code == 409
    # Accounts of no running cutover go ahead meanwhile.
    separate = start(api, fleet.body(accounts[5:6]))
    assert wait_final(api, first["cutover_id"])["status"] == "SUCCEEDED"
    assert wait_final(api, separate["cutover_id"])["status"] == "SUCCEEDED"
    # Once the first is over, its accounts are free again.
    later = start(api, fleet.body(accounts[3:5], destination="legacy"))
    assert wait_final(api, later["cutover_id"])["status"] == "SUCCEEDED"


def test_a_stopped_execution_still_gets_a_final_status(
    api: LocalApi, proxy_double: MakeDouble
) -> None:
    fleet = Fleet(api, proxy_double, latency=0.05)
    accounts = fleet.accounts(8)
    accepted = start(api, fleet.body(accounts, max_concurrency=1))
    cutover_id = accepted["cutover_id"]
    sfn = api.aws.client("stepfunctions")
    arn = _execution_arn(api, cutover_id)
    wait_until(lambda: any(d.mapping_of(accounts[0]) for d in fleet.doubles), 30,
               interval=0.01, what="the first account mapped")
    sfn.stop_execution(executionArn=arn, error="operator", cause="stopped by the test")
    described = wait_until(lambda: (lambda d: d if d["status"] != "RUNNING" else None)(
        sfn.describe_execution(executionArn=arn)), 30, interval=0.01, what="the stop")
    assert described["status"] == "ABORTED"
    # What EventBridge delivers to the step function on AWS: the status is written then,
    # without anybody asking for the cutover.
    event = {
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "detail": {k: v for k, v in described.items() if isinstance(v, str)},
    }
    step_function = api.deployment.functions["CutoverStepFunction"].name
    outcome = lambda_bridge.invoke_local(step_function, event)
    assert outcome["status"] == "CANCELLED"
    assert CutoverStore().get(cutover_id)["status"] == "CANCELLED"
    view = api.request("GET", f"/cutovers/{cutover_id}").json()
    assert view["status"] == "CANCELLED"
    assert view["error"]["code"] == "ABORTED"
    statuses = {a["status"] for a in view["accounts"]}
    assert statuses <= {"DONE", "FAILED", "SKIPPED"}
    assert "SKIPPED" in statuses
    # Its accounts are free for the next cutover.
    time.sleep(0.5)  # steps already under way when it stopped
    after = start(api, fleet.body(accounts))
    assert wait_final(api, after["cutover_id"])["status"] == "SUCCEEDED"


def _execution_arn(api: LocalApi, cutover_id: str) -> str:
    return CutoverStore().get(cutover_id)["execution_arn"]


# ---------------------------------------------------------------------- the API's edges
def test_dry_run_contacts_nobody_and_locks_nothing(
    api: LocalApi, proxy_double: MakeDouble
) -> None:
    fleet = Fleet(api, proxy_double, count=2)
    accounts = fleet.accounts(3)
    answer = api.request("POST", "/cutovers", json=fleet.body(accounts, dry_run=True))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["dry_run"] is True and body["total"] == 3
    assert [p["host"] for p in body["proxies"]] == fleet.ids
    assert all(d.requests_log == [] for d in fleet.doubles)
    real = start(api, fleet.body(accounts))
    assert wait_final(api, real["cutover_id"])["status"] == "SUCCEEDED"


def test_invalid_requests_name_the_field(api: LocalApi, proxy_double: MakeDouble) -> None:
    fleet = Fleet(api, proxy_double, count=1)
    accounts = fleet.accounts(2)
    cases = {
        "accounts": fleet.body([accounts[0], accounts[0].upper()]),
        "proxies.hosts": fleet.body(accounts, proxies={"hosts": ["no-such-host"]}),
        "destination": fleet.body(accounts, strategy="director"),
        "delay_seconds": fleet.body(accounts, delay_seconds=-1),
    }
    for field, body in cases.items():
        answer = api.request("POST", "/cutovers", json=body)
        assert answer.status_code == 422, (field, answer.text)
        assert field in answer.text
    assert api.request("GET", "/cutovers/nope").status_code == 404
    assert api.request("POST", "/cutovers/nope/rollback").status_code == 404


def test_list_by_status(api: LocalApi, big_cutover: dict[str, Any]) -> None:
    cutover_id = big_cutover["view"]["cutover_id"]
    status = api.request("GET", f"/cutovers/{cutover_id}").json()["status"]
    answer = api.request("GET", "/cutovers", params={"status": status, "limit": 100})
    assert answer.status_code == 200
    listed = answer.json()["cutovers"]
    assert cutover_id in [c["cutover_id"] for c in listed]
    assert all(c["status"] == status for c in listed)
    assert not listed[0].get("accounts")


# ---------------------------------------------------------------------- director strategy
@pytest.mark.dovecot
def test_director_strategy_with_a_real_director(
    api: LocalApi, dovecot_factory: Callable[..., Any]
) -> None:
    from tests.fixtures.dovecot import host_body

    backend = dovecot_factory()
    director = dovecot_factory(director=True, director_backends=["127.0.0.1", "127.0.0.2"],
                               director_backend_port=backend.imap_port)
    tag = uuid.uuid4().hex[:8]
    ids = {}
    for name, instance in (("director", director), ("backend", backend)):
        ids[name] = f"{name}-{tag}"
        register(api, host_body(instance, ids[name]))
    session = backend.imap("alice")  # a live session on the old backend
    body = {
        "accounts": ["alice", "bob"],
        "destination": "127.0.0.2",
        "strategy": "director",
        "proxies": {"hosts": [ids["director"]]},
        "backends": {"hosts": [ids["backend"]]},
        "drain": "127.0.0.1",
    }
    view = wait_final(api, start(api, body)["cutover_id"])
    assert view["status"] == "SUCCEEDED", view
    for account in ("alice", "bob"):
        assert director.call("directorStatus", {"user": account})[0]["status"] == "127.0.0.2"
    records = by_account(view)
    assert [s["step"] for s in records["alice"]["steps"]] == [
        "remember", "director_move", "director_kick", "verify"]
    assert records["alice"]["previous"][ids["director"]] == {"host": "127.0.0.1",
                                                              "mapped": False}
    with pytest.raises((imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError)):
        session.noop()  # kicked off the old backend
    drained = {r["mail server ip"]: r for r in director.call("directorStatus")}
    assert drained["127.0.0.1"]["vhosts"] == "0"

    answer = api.request("POST", f"/cutovers/{view['cutover_id']}/rollback")
    assert answer.status_code == 202, answer.text
    view = wait_final(api, view["cutover_id"])
    assert view["status"] == "ROLLED_BACK", view
    for account in ("alice", "bob"):
        assert director.call("directorStatus", {"user": account})[0]["status"] == "127.0.0.1"
    restored = {r["mail server ip"]: r for r in director.call("directorStatus")}
    assert restored["127.0.0.1"]["vhosts"] == "100"
