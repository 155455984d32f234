"""The audit trail: concurrent writers never fork the chain; tampering and gaps are found."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from mailfleet import aws
from mailfleet.store.audit import CHAIN, AuditLog, event_hash
from mailfleet.store.base import from_dynamo


def test_concurrent_appends_make_one_unbroken_chain(local_api: Any) -> None:
    local_api.ensure_deployed()
    tag = uuid.uuid4().hex
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        log = AuditLog()  # one per "Lambda container", each with its own cached head
        try:
            for i in range(10):
                log.append(actor=f"writer-{n}", action="test.append", target=tag,
                           outcome="ok", params={"i": i, "ratio": i / 2, "pct": 100.0})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    events, _ = AuditLog().query(host=tag, limit=1000)
    assert len(events) == 60
    seqs = sorted(e.seq for e in events)
    assert len(set(seqs)) == 60  # no two events claimed one place in the chain
    assert AuditLog().verify().ok


def test_tampering_and_deletion_are_detected(local_api: Any) -> None:
    local_api.ensure_deployed()
    log = AuditLog()
    first = log.append(actor="tester", action="test.tamper", target="t", outcome="ok")
    second = log.append(actor="tester", action="test.tamper", target="t", outcome="ok")
    log.append(actor="tester", action="test.tamper", target="t", outcome="ok")
    table = aws.table(local_api.deployment.resources["AuditTable"].ref)
    key = {"chain": CHAIN, "seq": second.seq}
    original = table.get_item(Key=key)["Item"]
    try:
        table.put_item(Item=dict(original, outcome="forged"))
        result = log.verify(since=first.at)
        assert not result.ok and result.first_bad == second.event_id
        assert "hash" in (result.reason or "")

        table.delete_item(Key=key)
        result = log.verify(since=first.at)
        assert not result.ok and "missing" in (result.reason or "")
    finally:
        table.put_item(Item=original)
    assert log.verify(since=first.at).ok
    assert event_hash(from_dynamo(original)) == original["hash"]
