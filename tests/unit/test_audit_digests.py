"""The digest rules, without AWS: what a digest records, how it chains, and what
comparing it with the table finds (edited, deleted, inserted, re-hashed)."""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailfleet.store.audit import GENESIS, event_hash, seq_at, time_of
from mailfleet.store.audit_digests import (
    build_digest,
    check_digest,
    check_link,
    compare,
    digest_hash,
    entries,
)

KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC = KEY.public_key().public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)


def _event(seq: int, **fields: Any) -> dict[str, Any]:
    event = {"event_id": f"e{seq}", "seq": seq, "at": time_of(seq), "actor": "a",
             "action": "host.create", "outcome": "ok", "prev_hash": GENESIS} | fields
    event["hash"] = event_hash(event)
    return event


def _signed(number: int, start: int, end: int, events: list[dict[str, Any]],
            prev: str = GENESIS) -> dict[str, Any]:
    digest = build_digest(number=number, start_seq=start, end_seq=end, events=events,
                          prev_digest_hash=prev, sealed_at="2026-01-01T00:00:00Z", key_id="k")
    signature = KEY.sign(digest["digest_hash"].encode(), ec.ECDSA(hashes.SHA256()))
    return digest | {"signature": base64.b64encode(signature).decode()}


EVENTS = [_event(s) for s in (10, 20, 30)]


def test_a_digest_records_count_last_event_and_every_event() -> None:
    digest = _signed(1, 0, 100, EVENTS)
    assert digest["count"] == 3
    assert digest["last_event"] == {"seq": 30, "event_id": "e30", "hash": EVENTS[-1]["hash"]}
    assert [e[0] for e in entries(digest)] == [10, 20, 30]
    assert check_digest(digest, PUBLIC) == []
    assert compare(digest, EVENTS) == []


def test_digests_chain_without_gaps() -> None:
    first = _signed(1, 0, 100, EVENTS)
    second = _signed(2, 100, 200, [], prev=first["digest_hash"])
    assert check_link(None, first) == [] and check_link(first, second) == []
    third = _signed(3, 250, 300, [], prev=second["digest_hash"])
    assert "in no digest" in check_link(second, third)[0].detail
    skipped = _signed(4, 200, 300, [], prev="f" * 64)
    details = " ".join(p.detail for p in check_link(second, skipped))
    assert "3..3 are missing" in details and "does not chain" in details
    assert "before this one are missing" in check_link(None, second)[0].detail


def test_a_digest_changed_without_the_key_fails_its_signature() -> None:
    digest = _signed(1, 0, 100, EVENTS)
    forged = dict(digest, events="\n".join(digest["events"].splitlines()[:2]), count=2)
    forged["digest_hash"] = digest_hash(forged)
    assert "signature" in check_digest(forged, PUBLIC)[0].detail
    assert "digest_hash" in check_digest(dict(digest, count=2), PUBLIC)[0].detail
    other = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert "signature" in check_digest(digest, other)[0].detail


def test_compare_names_what_changed_and_where() -> None:
    digest = _signed(7, 0, 100, EVENTS)
    edited = dict(EVENTS[0], outcome="forged")  # hash left as it was
    rehashed = dict(EVENTS[1], actor="mallory")
    rehashed["hash"] = event_hash(rehashed)  # and recomputed
    inserted = _event(25)
    found = compare(digest, [edited, rehashed, inserted])
    assert [(p.kind, p.seq, p.digest) for p in found] == [
        ("edited", 10, 7), ("edited", 20, 7), ("inserted", 25, 7), ("deleted", 30, 7)]
    assert "own hash" in found[0].detail and "signed digest" in found[1].detail
    assert found[3].event_id == "e30"


def test_seq_and_time_agree() -> None:
    seq = seq_at("2026-11-27T10:00:00.123456Z")
    assert time_of(seq + 999) == "2026-11-27T10:00:00.123456Z"
    assert seq_at("2026-11-27T10:00:00+00:00") < seq


def test_a_stalled_sealer_is_reported(monkeypatch: Any) -> None:
    """Unsealed events older than grace + 3 periods: the sealer is not running, or the
    newest digests were deleted. Said as sealing_behind, with the count unsealed."""
    import datetime

    from mailfleet.models.audit import AuditVerification
    from mailfleet.store.audit_digests import Verifier

    old = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)).isoformat()
    fresh = datetime.datetime.now(datetime.UTC).isoformat()

    class Log:
        table_name = "audit"

        def __init__(self, at: str) -> None:
            self.events = [_event(seq_at(at), at=at)]

        def events_between(self, *_: Any, **__: Any) -> list[dict[str, Any]]:
            return self.events

    for at, behind in ((old, True), (fresh, False)):
        verifier = Verifier(Log(at), key_id="k")  # type: ignore[arg-type]
        monkeypatch.setattr(verifier.digests, "latest", lambda: None)
        result = verifier._tail(AuditVerification(ok=True, checked=0), None, 0, None)
        assert (result.unsealed, result.sealing_behind, result.ok) == (1, behind, True)
