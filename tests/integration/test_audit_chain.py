"""The audit trail against the deployed template in moto: concurrent writers never wait
on each other or lose events; a change and its event land together or not at all; the
signed digests find every kind of tampering, including the two that beat the old chain."""

from __future__ import annotations

import datetime
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mailfleet import aws
from mailfleet.config import AuditSettings, Tables
from mailfleet.logic.caller import Caller
from mailfleet.logic.hosts import Inventory
from mailfleet.logic.problems import Conflict, NotFound, Unavailable
from mailfleet.models.hosts import HostCreate
from mailfleet.models.tokens import Role
from mailfleet.store import audit as audit_store
from mailfleet.store.audit import CHAIN, AuditLog, AuditNotWritten, Change, ChangeRefused
from mailfleet.store.audit_digests import DIGESTS, Sealer, Verifier
from mailfleet.store.base import from_dynamo, to_dynamo

ADMIN = Caller(principal="tester", role=Role.ADMIN)


@pytest.fixture()
def audit(local_api: Any) -> AuditLog:
    local_api.ensure_deployed()
    return AuditLog()


def _seal() -> list[dict[str, Any]]:
    """Seal everything written before the last whole second (the deployed grace is five
    minutes: the test waits for a fresh second instead, so that no write is in flight)."""
    began = time.time()
    time.sleep(math.ceil(began) - began + 0.05)
    now = datetime.datetime.now(datetime.UTC)
    grace = AuditSettings().audit_seal_grace_seconds
    return Sealer().seal(now=now + datetime.timedelta(seconds=grace))


def _sealed_events(audit: AuditLog, n: int, tag: str) -> list[Any]:
    events = [audit.append(actor="tester", action="test.seal", target=tag, outcome="ok",
                           params={"i": i, "ratio": i / 2}) for i in range(n)]
    _seal()
    return events


def _table() -> Any:
    return aws.table(Tables().audit_table)


@pytest.fixture()
def restore_audit_items() -> Iterator[list[dict[str, Any]]]:
    """Items a test tampers with, put back as they were afterwards (the stack is shared)."""
    originals: list[dict[str, Any]] = []
    extra: list[dict[str, Any]] = []
    yield originals
    table = _table()
    for item in originals:
        if item.get("_inserted"):
            extra.append(item)
            continue
        table.put_item(Item=item)
    for item in extra:
        table.delete_item(Key={"chain": item["chain"], "seq": item["seq"]})


# ---------------------------------------------------------------------- writers
def test_sixteen_concurrent_writers_lose_nothing(audit: AuditLog) -> None:
    tag = uuid.uuid4().hex
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        log = AuditLog()  # one per "Lambda container"
        try:
            for i in range(10):
                log.append(actor=f"writer-{n}", action="test.append", target=tag,
                           outcome="ok", params={"i": i, "ratio": i / 2, "pct": 100.0})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    events, _ = AuditLog().query(host=tag, limit=1000)
    assert len(events) == 160
    assert len({e.seq for e in events}) == 160
    assert all(e.prev_hash == audit_store.UNCHAINED for e in events)
    assert Verifier(audit).run(since=None, until=None, next_token=None).ok


def test_a_seq_taken_by_another_event_is_retried_with_a_fresh_one(
    audit: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = audit.append(actor="tester", action="test.collide", outcome="ok")
    real = audit_store.stamp
    calls = iter([(taken.seq, taken.at)])
    monkeypatch.setattr(audit_store, "stamp", lambda: next(calls, None) or real())
    event = audit.append(actor="tester", action="test.collide", outcome="ok")
    assert event.seq != taken.seq and event.seq > taken.seq


# ---------------------------------------------------------------------- change + event
def _host(host_id: str) -> HostCreate:
    return HostCreate.model_validate({
        "id": host_id, "kind": "proxy", "endpoint": "https://127.0.0.1:9",
        "credentials": {"token": "audit-test-token"}, "tags": {"t": "audit"},
    })


def _events(target: str) -> list[Any]:
    return AuditLog().query(host=target, limit=100)[0]


def test_change_refused_leaves_no_event(audit: AuditLog) -> None:
    token_id = uuid.uuid4().hex
    tokens = Tables().tokens_table
    item = {"token_id": token_id, "name": "t", "role": "viewer"}
    audit.record(Change.put(tokens, item, condition="attribute_not_exists(token_id)"),
                 actor="tester", action="test.token", target=token_id, outcome="ok")
    with pytest.raises(ChangeRefused):
        audit.record(Change.put(tokens, item, condition="attribute_not_exists(token_id)"),
                     actor="tester", action="test.token", target=token_id, outcome="ok")
    assert len(_events(token_id)) == 1  # the refused second write left no event


def test_a_change_that_fails_leaves_no_event(audit: AuditLog) -> None:
    """The change side breaks (an item DynamoDB refuses): no event either."""
    target = uuid.uuid4().hex
    too_big = {"token_id": target, "blob": "x" * 420_000}
    with pytest.raises(ClientError):
        audit.record(Change.put(Tables().tokens_table, too_big), actor="tester",
                     action="test.token", target=target, outcome="ok")
    assert _events(target) == []
    got = aws.table(Tables().tokens_table).get_item(Key={"token_id": target})
    assert "Item" not in got


def test_an_event_that_cannot_be_written_leaves_no_change(
    audit: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event side breaks (its seq always taken): the host is not created."""
    taken = audit.append(actor="tester", action="test.collide", outcome="ok")
    monkeypatch.setattr(audit_store, "stamp", lambda: (taken.seq, taken.at))
    host_id = f"audit-{uuid.uuid4().hex[:8]}"
    with pytest.raises(AuditNotWritten):
        Inventory().register(_host(host_id), ADMIN)
    monkeypatch.undo()
    assert "Item" not in aws.table(Tables().hosts_table).get_item(Key={"id": host_id})
    assert _events(host_id) == []


def test_event_too_large_leaves_no_change(audit: AuditLog) -> None:
    """The event side breaks on the server (an item over 400 KB): no token either."""
    token_id = uuid.uuid4().hex
    with pytest.raises(ClientError):
        audit.record(
            Change.put(Tables().tokens_table, {"token_id": token_id, "role": "viewer"}),
            actor="tester", action="test.token", target=token_id, outcome="ok",
            params={"note": "y" * 420_000})
    assert "Item" not in aws.table(Tables().tokens_table).get_item(Key={"token_id": token_id})
    assert _events(token_id) == []


def test_many_changes_each_with_its_own_event(audit: AuditLog) -> None:
    """record_each (bulk writes, e.g. an inventory import): one event per change that
    happened, none for the one refused, in shared transactions."""
    tokens = Tables().tokens_table
    taken = uuid.uuid4().hex
    audit.record(Change.put(tokens, {"token_id": taken, "role": "viewer"}),
                 actor="tester", action="test.bulk", target=taken, outcome="ok")
    ids = [uuid.uuid4().hex for _ in range(120)] + [taken]
    entries = [([Change.put(tokens, {"token_id": i, "role": "viewer"},
                            condition="attribute_not_exists(token_id)")],
                {"actor": "tester", "action": "test.bulk", "target": i, "outcome": "ok"})
               for i in ids]
    results = audit.record_each(entries)
    assert [type(r).__name__ for r in results] == ["AuditEvent"] * 120 + ["ChangeRefused"]
    events, _ = AuditLog().query(action="test.bulk", limit=1000)
    per_target = Counter(e.target for e in events)
    assert all(per_target[i] == 1 for i in ids)  # the taken one: only its first event


def test_host_writes_each_carry_one_event(audit: AuditLog) -> None:
    host_id = f"audit-{uuid.uuid4().hex[:8]}"
    inventory = Inventory()
    inventory.register(_host(host_id), ADMIN)
    with pytest.raises(Conflict):
        inventory.register(_host(host_id), ADMIN)
    from mailfleet.models.hosts import HostPatch

    inventory.update(host_id, HostPatch.model_validate({"tags": {"t": "changed"}}), ADMIN)
    inventory.delete(host_id, ADMIN)
    with pytest.raises(NotFound):
        inventory.delete(host_id, ADMIN)
    actions = sorted(e.action for e in _events(host_id))
    assert actions == ["host.create", "host.delete", "host.update"]


def test_secret_failure_after_create_is_rolled_back_on_the_record(
    audit: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Secrets Manager is outside the transaction: host + event first, then the secret;
    if the secret fails, the host goes again with its own event."""
    from mailfleet.store import secrets

    def broken(*_: Any, **__: Any) -> str:
        raise RuntimeError("secrets manager unavailable")

    monkeypatch.setattr(secrets, "create_for_host", broken)
    host_id = f"audit-{uuid.uuid4().hex[:8]}"
    body = HostCreate.model_validate({"id": host_id, "kind": "proxy",
                                      "endpoint": "https://127.0.0.1:9",
                                      "credentials": {"token": "s3cret-token-value"}})
    with pytest.raises(RuntimeError):
        Inventory().register(body, ADMIN)
    assert "Item" not in aws.table(Tables().hosts_table).get_item(Key={"id": host_id})
    events = sorted((e.action, e.outcome) for e in _events(host_id))
    assert events == [("host.create", "ok"), ("host.delete", "rolled_back")]
    assert "s3cret" not in str([e.params for e in _events(host_id)])


# ---------------------------------------------------------------------- sealing
def test_sealing_is_audited_and_chained(audit: AuditLog) -> None:
    _sealed_events(audit, 3, uuid.uuid4().hex)
    latest = _table().query(
        KeyConditionExpression="#c = :d", ExpressionAttributeNames={"#c": "chain"},
        ExpressionAttributeValues={":d": DIGESTS}, ScanIndexForward=False, Limit=2)["Items"]
    digest = from_dynamo(latest[0])
    seals, _ = audit.query(action="audit.seal", limit=5)
    assert any(e.target == f"digest:{digest['number']}" for e in seals)
    if len(latest) == 2:
        assert digest["prev_digest_hash"] == latest[1]["digest_hash"]
    result = Verifier(audit).run(since=None, until=None, next_token=None)
    assert result.ok, result.problems
    assert result.digests_checked >= 1 and result.sealed_until is not None
    assert result.unsealed >= 1  # at least the newest seal event itself


def _tamper_target(audit: AuditLog) -> tuple[list[Any], dict[str, Any]]:
    events = _sealed_events(audit, 4, uuid.uuid4().hex)
    original = _table().get_item(Key={"chain": CHAIN, "seq": events[1].seq})["Item"]
    return events, original


def _verify_from(events: list[Any]) -> Any:
    return Verifier(AuditLog()).run(since=events[0].at, until=None, next_token=None)


def test_an_edited_event_is_found(audit: AuditLog, restore_audit_items: list[Any]) -> None:
    events, original = _tamper_target(audit)
    restore_audit_items.append(original)
    _table().put_item(Item=dict(original, outcome="forged"))
    result = _verify_from(events)
    assert not result.ok and result.first_bad == events[1].event_id
    assert result.problems[0].kind == "edited" and result.problems[0].seq == events[1].seq


def test_an_edit_with_its_hash_recomputed_is_found(
    audit: AuditLog, restore_audit_items: list[Any]
) -> None:
    """The attack the old chain missed: edit and recompute the hash (later hashes need
    no recomputing now; the signed digest still holds the original)."""
    events, original = _tamper_target(audit)
    restore_audit_items.append(original)
    forged = from_dynamo(original) | {"actor": "someone-else"}
    forged["hash"] = audit_store.event_hash(forged)
    _table().put_item(Item=to_dynamo(forged))
    result = _verify_from(events)
    assert not result.ok and result.first_bad == events[1].event_id
    assert "signed digest" in result.problems[0].detail


def test_deleting_the_newest_sealed_events_is_found(
    audit: AuditLog, restore_audit_items: list[Any]
) -> None:
    """The other attack the old chain missed: drop the newest events."""
    events = _sealed_events(audit, 3, uuid.uuid4().hex)
    for event in events[1:]:
        key = {"chain": CHAIN, "seq": event.seq}
        restore_audit_items.append(_table().get_item(Key=key)["Item"])
        _table().delete_item(Key=key)
    result = _verify_from(events)
    assert not result.ok
    deleted = {p.event_id for p in result.problems if p.kind == "deleted"}
    assert deleted == {e.event_id for e in events[1:]}


def test_an_inserted_event_is_found(audit: AuditLog, restore_audit_items: list[Any]) -> None:
    events, original = _tamper_target(audit)
    fake = from_dynamo(original) | {"seq": events[1].seq + 1, "event_id": uuid.uuid4().hex,
                                    "action": "host.delete"}
    fake["hash"] = audit_store.event_hash(fake)
    restore_audit_items.append(fake | {"_inserted": True})
    _table().put_item(Item=to_dynamo(fake))
    result = _verify_from(events)
    assert not result.ok and result.first_bad == fake["event_id"]
    assert result.problems[0].kind == "inserted"


def test_a_forged_digest_is_found(audit: AuditLog, restore_audit_items: list[Any]) -> None:
    """Someone who can write the table but not use the key rewrites a digest to match
    their edit: its signature no longer holds."""
    events, _ = _tamper_target(audit)
    digest = from_dynamo(_table().query(
        KeyConditionExpression="#c = :d", ExpressionAttributeNames={"#c": "chain"},
        ExpressionAttributeValues={":d": DIGESTS}, ScanIndexForward=False, Limit=1,
    )["Items"][0])
    restore_audit_items.append(_table().get_item(
        Key={"chain": DIGESTS, "seq": digest["seq"]})["Item"])
    from mailfleet.store.audit_digests import digest_hash, entries, events_hash, events_text

    kept = [e for e in entries(digest) if e[1] != events[1].event_id]
    digest["events"] = events_text(kept)
    digest["count"] = len(kept)
    digest["events_hash"] = events_hash(digest["events"])
    digest["digest_hash"] = digest_hash(digest)
    _table().put_item(Item=to_dynamo(digest))
    result = _verify_from(events)
    assert not result.ok and result.first_bad == f"digest:{digest['number']}"
    assert "signature" in (result.reason or "")


def test_verification_pages_through_long_histories(audit: AuditLog) -> None:
    _sealed_events(audit, 30, uuid.uuid4().hex)
    verifier = Verifier(audit)
    page = verifier.run(since=None, until=None, next_token=None, page_events=10)
    pages, checked = 1, page.checked
    while page.next_token:
        assert not page.complete
        page = verifier.run(since=None, until=None, next_token=page.next_token,
                            page_events=10)
        pages += 1
        assert page.checked >= checked
        checked = page.checked
        assert pages < 1000
    assert page.ok and page.complete and pages >= 2


def test_the_ticker_fires_the_sealer_in_the_local_run(local_api: Any) -> None:
    """The template's AuditSeal rule runs the sealer function (as `make run` does), which
    seals up to its real grace: whatever it wrote, the trail verifies."""
    from mailfleet_local import lambda_bridge
    from mailfleet_local.ticker import Ticker

    local_api.ensure_deployed()
    seal = next(s.name for s in local_api.deployment.schedules
                if s.logical_id == "AuditSealerFunctionAuditSeal")
    fired = Ticker(local_api.aws).fire(seal)
    assert fired.result == {"status_code": 202}
    assert lambda_bridge.drain(60)
    result = Verifier(AuditLog()).run(since=None, until=None, next_token=None)
    assert result.ok, result.problems
    assert result.sealed_until is not None and result.digests_checked >= 1


def test_a_job_whose_worker_cannot_start_is_closed_on_the_record(
    audit: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker invoke (like a StartExecution) is outside the transaction: the job and
    job.start first, then the invoke; when it fails, the job is closed FAILED together
    with job.end. Never a running job without its start, nor a start left open."""
    from mailfleet.logic import jobs as jobs_module
    from mailfleet.models.jobs import JobRequest

    host_id = f"audit-{uuid.uuid4().hex[:8]}"
    Inventory().register(_host(host_id), ADMIN)
    from mailfleet import aws

    real = aws.client

    class NoLambda:
        def invoke(self, **_: Any) -> Any:
            raise ConnectionError("lambda unreachable")

    monkeypatch.setattr(aws, "client",
                        lambda name: NoLambda() if name == "lambda" else real(name))
    request = JobRequest.model_validate({"action": "destinations.list",
                                         "targets": {"hosts": [host_id]}})
    with pytest.raises(Unavailable) as refused:
        jobs_module.Jobs().submit(request, ADMIN)
    monkeypatch.undo()
    job_id = refused.value.extra["job_id"]
    assert jobs_module.Jobs().store.get(job_id)["status"] == "FAILED"
    events = AuditLog().query(job_id=job_id, limit=10, newest_first=False)[0]
    assert [(e.action, e.outcome) for e in events] == [("job.start", "ok"),
                                                        ("job.end", "FAILED")]


def test_a_crafted_verify_token_is_a_422_not_a_500(local_api: Any) -> None:
    import base64
    import json

    local_api.ensure_deployed()
    for state in ({"after": 1, "checked": 0, "ok": True, "prev": "x"}, [1], {"after": "a"}):
        token = base64.urlsafe_b64encode(json.dumps(state).encode()).decode().rstrip("=")
        answer = local_api.request("GET", "/audit/verify", params={"next_token": token})
        assert answer.status_code == 422, answer.text
        assert "next_token" in answer.text
