"""Digests: what makes the independently written audit events tamper-evident.

The sealer (its own function, on a schedule) covers the events since the previous digest
up to a cutoff a grace period in the past. Each digest records its range of seqs, the
count, the last event and every event's (seq, event_id, hash), chains to the previous
digest by its hash, and is signed with a KMS asymmetric key only the sealer may use.
Anyone verifies with the public key. Digest items live in the audit table under their
own partition ("digest", keyed by the end of their range); a writer could put one there
but not sign it, and verification refuses it. docs/audit.md has the why.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import json
from typing import Any

from boto3.dynamodb.conditions import Key

from mailfleet import aws
from mailfleet.config import AuditSettings
from mailfleet.models.audit import AuditProblem, AuditVerification
from mailfleet.store.audit import (
    GENESIS,
    SEQ_PER_SECOND,
    AuditLog,
    Change,
    ChangeRefused,
    event_hash,
    seq_at,
    time_of,
)
from mailfleet.store.base import decode_state, encode_page, from_dynamo

DIGESTS = "digest"
ALGORITHM = "ECDSA_SHA_256"  # KMS key spec ECC_NIST_P256
MAX_EVENTS = 1000  # per digest: keeps the item far below DynamoDB's 400 KB
MAX_PROBLEMS = 100
PAGE_EVENTS = 2000  # events one verify request checks before it hands out a next_token
SEALER = "system:audit-sealer"
_SIGNED = ("number", "start_seq", "end_seq", "count", "last_event", "events_hash",
           "events", "prev_digest_hash", "sealed_at", "key_id", "algorithm")


# ---------------------------------------------------------------------- the rules
def events_text(entries: list[tuple[int, str, str]]) -> str:
    """A digest's event list, one "seq:event_id:hash" line per event in seq order: one
    string attribute (a list of lists is slow to read back, and larger)."""
    return "\n".join(f"{seq}:{event_id}:{digest}" for seq, event_id, digest in entries)


def entries(digest: dict[str, Any]) -> list[tuple[int, str, str]]:
    """The (seq, event_id, hash) entries a digest records."""
    found = []
    for line in (digest.get("events") or "").splitlines():
        seq, event_id, digest_ = line.split(":")
        found.append((int(seq), event_id, digest_))
    return found


def events_hash(text: str) -> str:
    """One hash over the period's event list (events_text)."""
    return hashlib.sha256(text.encode()).hexdigest()


def digest_hash(digest: dict[str, Any]) -> str:
    body = {k: digest.get(k) for k in _SIGNED}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def build_digest(*, number: int, start_seq: int, end_seq: int, events: list[dict[str, Any]],
                 prev_digest_hash: str, sealed_at: str, key_id: str) -> dict[str, Any]:
    """The unsigned digest of `events` (start_seq <= seq < end_seq, oldest first)."""
    text = events_text([(e["seq"], e["event_id"], e["hash"]) for e in events])
    last = events[-1] if events else None
    digest = {
        "number": number,
        "start_seq": start_seq,
        "end_seq": end_seq,
        "count": len(events),
        "last_event": {"seq": last["seq"], "event_id": last["event_id"], "hash": last["hash"]}
        if last else None,
        "events_hash": events_hash(text),
        "events": text,
        "prev_digest_hash": prev_digest_hash,
        "sealed_at": sealed_at,
        "key_id": key_id,
        "algorithm": ALGORITHM,
    }
    digest["digest_hash"] = digest_hash(digest)
    return digest


def check_link(prev: dict[str, Any] | None, digest: dict[str, Any]) -> list[AuditProblem]:
    """A digest follows `prev` (None: it must be the first) with no gap in numbers or seqs."""
    number = digest["number"]
    if prev is None:
        if number != 1 or digest["prev_digest_hash"] != GENESIS or digest["start_seq"] != 0:
            return [_digest_problem(number, "the digests before this one are missing")]
        return []
    found: list[AuditProblem] = []
    if number != prev["number"] + 1:
        found.append(_digest_problem(
            number, f"digests {prev['number'] + 1}..{number - 1} are missing"))
    if digest["prev_digest_hash"] != prev["digest_hash"]:
        found.append(_digest_problem(number, "does not chain to the digest before it"))
    if digest["start_seq"] != prev["end_seq"]:
        found.append(_digest_problem(
            number, f"covers from {time_of(digest['start_seq'])}, the digest before it ended "
            f"at {time_of(prev['end_seq'])}: events in between are in no digest"))
    return found


def check_digest(digest: dict[str, Any], public_key_der: bytes) -> list[AuditProblem]:
    """The digest is what its signature says, and is internally consistent."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    number = digest.get("number")
    recomputed = digest_hash(digest)
    if recomputed != digest.get("digest_hash"):
        return [_digest_problem(number, "content does not match its digest_hash")]
    try:
        key = load_der_public_key(public_key_der)
        key.verify(base64.b64decode(digest.get("signature") or ""),  # type: ignore[call-arg]
                   recomputed.encode(), ec.ECDSA(hashes.SHA256()))  # type: ignore[arg-type]
    except (InvalidSignature, ValueError, TypeError):
        return [_digest_problem(number, "signature is not valid for the audit signing key")]
    try:
        recorded = entries(digest)
    except ValueError:
        return [_digest_problem(number, "its event list cannot be read")]
    if (digest["count"] != len(recorded)
            or events_hash(digest.get("events") or "") != digest["events_hash"]
            or (recorded and digest["last_event"]["seq"] != recorded[-1][0])):
        return [_digest_problem(number, "its count, last event or event list disagree")]
    return []


def compare(digest: dict[str, Any], events: list[dict[str, Any]]) -> list[AuditProblem]:
    """The events the table holds for a digest's range against what the digest recorded."""
    number = digest["number"]
    recorded = {seq: (event_id, digest_) for seq, event_id, digest_ in entries(digest)}
    found: list[AuditProblem] = []
    seen: set[int] = set()
    for event in events:
        seq = event["seq"]
        seen.add(seq)
        where = {"event_id": event.get("event_id"), "seq": seq, "at": event.get("at"),
                 "digest": number}
        own = event_hash(event)
        if seq not in recorded:
            found.append(AuditProblem(kind="inserted", **where,
                                      detail="in a sealed period but in no digest"))
        elif own != event.get("hash"):
            found.append(AuditProblem(kind="edited", **where,
                                      detail="content does not match its own hash"))
        elif own != recorded[seq][1] or event.get("event_id") != recorded[seq][0]:
            found.append(AuditProblem(kind="edited", **where,
                                      detail="content and hash differ from the signed digest"))
    for seq, (event_id, _) in recorded.items():
        if seq not in seen:
            found.append(AuditProblem(kind="deleted", event_id=event_id, seq=seq,
                                      at=time_of(seq), digest=number,
                                      detail="recorded in the signed digest, gone from the table"))
    return sorted(found, key=lambda p: p.seq or 0)


def _digest_problem(number: int | None, detail: str) -> AuditProblem:
    return AuditProblem(kind="digest", digest=number, detail=f"digest {number}: {detail}")


# ---------------------------------------------------------------------- keys
@functools.cache
def public_key(key_id: str) -> bytes:
    """The signing key's public half (DER); verification needs nothing else."""
    return bytes(aws.client("kms").get_public_key(KeyId=key_id)["PublicKey"])


def _signing_key(key_id: str | None) -> str:
    if not key_id:
        raise RuntimeError("AUDIT_SIGNING_KEY is not set: the audit trail cannot be sealed")
    return key_id


class DigestStore:
    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self._table = aws.table(log.table_name)

    def latest(self) -> dict[str, Any] | None:
        page = self._table.query(KeyConditionExpression=Key("chain").eq(DIGESTS),
                                 ScanIndexForward=False, Limit=1, ConsistentRead=True)
        items = page.get("Items", [])
        return from_dynamo(items[0]) if items else None

    def before(self, end_seq: int) -> dict[str, Any] | None:
        """The digest whose range ends last before `end_seq`."""
        page = self._table.query(
            KeyConditionExpression=Key("chain").eq(DIGESTS) & Key("seq").lt(end_seq),
            ScanIndexForward=False, Limit=1, ConsistentRead=True)
        items = page.get("Items", [])
        return from_dynamo(items[0]) if items else None

    def after(self, seq: int, limit: int) -> list[dict[str, Any]]:
        """Digests whose range ends after `seq`, oldest first."""
        page = self._table.query(
            KeyConditionExpression=Key("chain").eq(DIGESTS) & Key("seq").gt(seq),
            ScanIndexForward=True, Limit=limit, ConsistentRead=True)
        return [from_dynamo(i) for i in page.get("Items", [])]


# ---------------------------------------------------------------------- sealing
class Sealer:
    """Covers every event older than the grace period with signed digests."""

    def __init__(self, log: AuditLog | None = None, key_id: str | None = None,
                 settings: AuditSettings | None = None) -> None:
        self.settings = settings or AuditSettings()
        self.log = log or AuditLog()
        self.digests = DigestStore(self.log)
        self.key_id = _signing_key(key_id or self.settings.audit_signing_key)

    def seal(self, *, now: datetime.datetime | None = None,
             max_digests: int = 50) -> list[dict[str, Any]]:
        """Write the digests due now; returns them. Safe to run twice at once: a digest
        slot taken by another sealer ends this run."""
        now = now or datetime.datetime.now(datetime.UTC)
        cutoff = seq_at((now - datetime.timedelta(
            seconds=self.settings.audit_seal_grace_seconds)).isoformat())
        # Whole seconds: digests end on round times, easy to read
        cutoff -= cutoff % SEQ_PER_SECOND
        written: list[dict[str, Any]] = []
        last = self.digests.latest()
        for _ in range(max_digests):
            start = last["end_seq"] if last else 0
            if start >= cutoff:
                break
            events = self.log.events_between(start, cutoff, limit=MAX_EVENTS + 1)
            end = events[MAX_EVENTS]["seq"] if len(events) > MAX_EVENTS else cutoff
            digest = build_digest(
                number=last["number"] + 1 if last else 1, start_seq=start, end_seq=end,
                events=events[:MAX_EVENTS],
                prev_digest_hash=last["digest_hash"] if last else GENESIS,
                sealed_at=now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), key_id=self.key_id)
            answer = aws.client("kms").sign(
                KeyId=self.key_id, Message=digest["digest_hash"].encode(),
                MessageType="RAW", SigningAlgorithm=ALGORITHM)
            digest["signature"] = base64.b64encode(answer["Signature"]).decode()
            try:
                # The digest and the event saying it was sealed: together or neither.
                self.log.record(
                    Change.put(self.log.table_name, dict(digest, chain=DIGESTS, seq=end),
                               condition="attribute_not_exists(seq)"),
                    actor=SEALER, action="audit.seal", target=f"digest:{digest['number']}",
                    outcome="ok",
                    params={"count": digest["count"], "from": time_of(start),
                            "to": time_of(end), "digest_hash": digest["digest_hash"]})
            except ChangeRefused:
                break  # another sealer wrote this slot
            written.append(digest)
            last = digest
        return written


# ---------------------------------------------------------------------- verifying
class Verifier:
    """Pages through the digests of a range: each signature, each link, each event."""

    def __init__(self, log: AuditLog, key_id: str | None = None,
                 settings: AuditSettings | None = None) -> None:
        self.settings = settings or AuditSettings()
        self.log = log
        self.digests = DigestStore(log)
        self.key_id = key_id or self.settings.audit_signing_key

    def run(self, *, since: str | None, until: str | None, next_token: str | None,
            page_events: int = PAGE_EVENTS) -> AuditVerification:
        since_seq = seq_at(since) if since else 0
        until_seq = seq_at(until) + 999 if until else None
        state = self._state(next_token)
        result = AuditVerification(ok=state["ok"], checked=state["checked"],
                                   first_bad=state.get("first_bad"), reason=state.get("reason"))
        prev: dict[str, Any] | None
        if state.get("after") is None:  # a first page: start at the digest holding `since`
            first = self.digests.after(since_seq, 1)
            if not first:  # nothing sealed from `since` on
                return self._tail(result, None, since_seq, until_seq)
            prev = self.digests.before(first[0]["seq"])
            after = prev["seq"] if prev else -1
        else:
            after = state["after"]
            prev = state.get("prev")
        key = public_key(self.key_id) if self.key_id else None
        this_page = 0
        while True:
            batch = self.digests.after(after, 4)
            for digest in batch:
                if until_seq is not None and digest["start_seq"] > until_seq:
                    return self._tail(result, prev, since_seq, until_seq)
                problems = check_link(prev, digest)
                if key is None:
                    problems.append(_digest_problem(digest["number"], "no signing key to "
                                                    "verify it with (AUDIT_SIGNING_KEY)"))
                else:
                    problems += check_digest(digest, key)
                events = self.log.events_between(digest["start_seq"], digest["end_seq"])
                if not problems or all(p.kind == "digest" and "missing" in p.detail
                                       for p in problems):
                    problems += compare(digest, events)
                self._add(result, problems)
                result.checked += len(events)
                this_page += len(events)
                result.digests_checked += 1
                prev, after = digest, digest["seq"]
                if this_page >= page_events:
                    result.complete = False
                    result.next_token = encode_page({
                        "after": after, "prev": _link_fields(prev), "ok": result.ok,
                        "checked": result.checked, "first_bad": result.first_bad,
                        "reason": result.reason})
                    result.sealed_until = time_of(prev["end_seq"])
                    return result
            if len(batch) < 4:
                return self._tail(result, prev, since_seq, until_seq)

    def _tail(self, result: AuditVerification, prev: dict[str, Any] | None, since_seq: int,
              until_seq: int | None) -> AuditVerification:
        """Events after the last digest: each one's own hash, and how many there are."""
        del prev  # the newest digest, not the last one checked, bounds what is sealed
        latest = self.digests.latest()
        sealed = latest["end_seq"] if latest else 0
        result.sealed_until = time_of(sealed) if latest else None
        start = max(sealed, since_seq)
        end = until_seq + 1 if until_seq is not None else 2**63
        tail = self.log.events_between(start, end, limit=PAGE_EVENTS) if start < end else []
        for event in tail:
            if event_hash(event) != event.get("hash"):
                self._add(result, [AuditProblem(kind="edited", event_id=event["event_id"],
                                                seq=event["seq"], at=event.get("at"),
                                                detail="content does not match its own hash "
                                                "(not sealed yet)")])
        result.checked += len(tail)
        result.unsealed = len(tail)
        if tail:
            oldest = datetime.datetime.fromisoformat(tail[0]["at"].replace("Z", "+00:00"))
            age = (datetime.datetime.now(datetime.UTC) - oldest).total_seconds()
            limit = (self.settings.audit_seal_grace_seconds
                     + 3 * self.settings.audit_seal_period_seconds)
            result.sealing_behind = age > limit
        return result

    @staticmethod
    def _add(result: AuditVerification, problems: list[AuditProblem]) -> None:
        if not problems:
            return
        if result.ok:
            first = problems[0]
            result.first_bad = first.event_id or f"digest:{first.digest}"
            result.reason = first.detail
        result.ok = False
        room = MAX_PROBLEMS - len(result.problems)
        result.problems.extend(problems[:max(room, 0)])

    @staticmethod
    def _state(token: str | None) -> dict[str, Any]:
        from mailfleet.store.base import BadPageToken

        if not token:
            return {"ok": True, "checked": 0}
        state = decode_state(token)
        prev = state.get("prev") if isinstance(state, dict) else None
        if not (isinstance(state, dict) and isinstance(state.get("after"), int)
                and isinstance(state.get("checked"), int) and isinstance(state.get("ok"), bool)
                and isinstance(prev, dict) and isinstance(prev.get("number"), int)
                and isinstance(prev.get("end_seq"), int)
                and isinstance(prev.get("digest_hash"), str)):
            raise BadPageToken("next_token is not one this API gave out")
        return state


def _link_fields(digest: dict[str, Any]) -> dict[str, Any]:
    """What the next page needs of the last digest to check the next one's link."""
    return {k: digest[k] for k in ("number", "digest_hash", "end_seq", "seq")}
