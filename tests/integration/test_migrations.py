"""Migrations end to end: the API (POST /migrations ...), the migration state machine run by
moto's real Step Functions interpreter (deployed from template.yaml), the step function,
two real Dovecot backends on their own loopback addresses (127.0.0.2, 127.0.0.3: the
director tells them apart by IP, so they share one IMAP port and one dsync port) with one
doveadm password, a real Dovecot director in front of them, and the proxy double for the
proxy strategy. Mail is appended and read over IMAP; dsync does the copies for real.

Wait states and Retry back-off are instant (lambda_bridge.instant_waits): a copy that is
still running is polled again at once, and each poll waits on the user's dsync lock.
"""

from __future__ import annotations

import imaplib
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mailfleet.logic.migration_steps import MigrationSteps
from mailfleet_local import lambda_bridge
from mailfleet_local.peers.dovecot import DovecotInstance, free_port_on
from mailfleet_local.peers.proxy import ProxyDouble
from tests.fixtures.dovecot import host_body
from tests.fixtures.stack import LocalApi, shared_local_api
from tests.waiting import wait_until

pytestmark = pytest.mark.dovecot

FINAL = ("SUCCEEDED", "PARTIAL", "FAILED", "CANCELLED", "ROLLED_BACK")
SOURCE_IP, DESTINATION_IP = "127.0.0.2", "127.0.0.3"
USERS = {f"user{i}": f"pw{i}-{secrets.token_hex(3)}" for i in range(1, 11)}
DIRECTOR_STEPS = ["remember", "pre_copy", "kick", "final_sync", "verify", "flip",
                  "kick_again", "confirm"]
PROXY_STEPS = ["remember", "pre_copy", "hold_logins", "kick", "final_sync", "verify", "flip",
               "invalidate", "kick_again", "confirm"]


class Backends:
    """Source and destination backends, a director in front, all in the inventory."""

    def __init__(self, api: LocalApi, source: DovecotInstance, destination: DovecotInstance,
                 director: DovecotInstance) -> None:
        self.source, self.destination, self.director = source, destination, director
        self.tag = uuid.uuid4().hex[:8]
        self.ids = {name: f"{name}-{self.tag}" for name in ("source", "destination", "director")}
        for name, instance in (("source", source), ("destination", destination),
                               ("director", director)):
            answer = api.request("POST", "/hosts", json=host_body(
                instance, self.ids[name], tags={"migration-test": self.tag}))
            assert answer.status_code == 201, answer.text

    def body(self, accounts: list[str], **extra: Any) -> dict[str, Any]:
        return {
            "accounts": accounts,
            "source": self.ids["source"],
            "destination": self.ids["destination"],
            "dsync_endpoint": self.destination.dsync_endpoint,
            "routing": {"strategy": "director", "directors": {"hosts": [self.ids["director"]]},
                        "backend_address": DESTINATION_IP},
            **extra,
        }

    def routed_to(self, user: str) -> str:
        return str(self.director.call("directorStatus", {"user": user})[0]["status"])


@pytest.fixture(scope="module")
def api() -> LocalApi:
    api = shared_local_api()
    api.ensure_deployed()
    return api


@pytest.fixture(autouse=True)
def instant() -> Iterator[None]:
    with lambda_bridge.instant_waits():
        yield


@pytest.fixture(scope="module")
def backends(api: LocalApi, _dovecot_reaper: list[DovecotInstance]) -> Iterator[Backends]:
    from mailfleet_local.peers.dovecot import dovecot_available

    if dovecot_available():
        pytest.skip(dovecot_available())
    password = secrets.token_urlsafe(18)
    imap_port = free_port_on(SOURCE_IP, DESTINATION_IP)
    dsync_port = free_port_on(SOURCE_IP, DESTINATION_IP)
    made = []
    try:
        for address in (SOURCE_IP, DESTINATION_IP):
            made.append(DovecotInstance(
                users=USERS, address=address, imap_port=imap_port, dsync=True,
                dsync_port=dsync_port, doveadm_password=password).start())
        made.append(DovecotInstance(
            users=USERS, director=True, director_backends=[SOURCE_IP, DESTINATION_IP],
            director_backend_port=imap_port).start())
        yield Backends(api, *made)
    finally:
        _dovecot_reaper.extend(made)
        for instance in made:
            instance.terminate()


# ---------------------------------------------------------------------- helpers
def start(api: LocalApi, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    answer = api.request("POST", "/migrations", json=body, headers=headers)
    assert answer.status_code == 202, answer.text
    return answer.json()


def wait_final(api: LocalApi, migration_id: str, timeout: float = 240) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        answer = api.request("GET", f"/migrations/{migration_id}")
        assert answer.status_code == 200, answer.text
        view = answer.json()
        return view if view["status"] in FINAL else None

    return wait_until(final, timeout, interval=0.25, what=f"migration {migration_id} final")


def imap_to(host: str, port: int, user: str) -> imaplib.IMAP4:
    conn = imaplib.IMAP4(host, port, timeout=10)
    conn.login(user, USERS[user])
    return conn


def append(conn: imaplib.IMAP4, subject: str, mailbox: str = "INBOX") -> None:
    message = f"From: test@example.org\r\nSubject: {subject}\r\n\r\n{subject} body\r\n"
    status, _ = conn.append(mailbox, None, None, message.encode())
    assert status == "OK"


def subjects(instance: DovecotInstance, user: str, mailbox: str = "INBOX") -> list[str]:
    """Every message's subject in a mailbox, read over IMAP straight from the backend."""
    conn = imap_to(instance.address, instance.imap_port, user)
    try:
        conn.select(mailbox, readonly=True)
        _, data = conn.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    finally:
        conn.logout()
    found = []
    for part in data:
        if isinstance(part, tuple):
            found.append(part[1].decode().split(":", 1)[1].strip())
    return sorted(found)


def counts(instance: DovecotInstance, user: str) -> dict[str, int]:
    rows = instance.call("mailboxStatus", {"user": user, "field": ["messages"],
                                           "mailboxMask": ["*"]})
    return {r["mailbox"]: int(r["messages"]) for r in rows}


def steps_of(view: dict[str, Any], account: str) -> list[dict[str, Any]]:
    return next(a for a in view["accounts"] if a["account"] == account)["steps"]


class Appender:
    """A mail client appending through the director until its session is kicked."""

    def __init__(self, backends: Backends, user: str) -> None:
        self.conn = imap_to("127.0.0.1", backends.director.imap_port, user)
        self.appended: list[str] = []
        self.kicked = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(user,), daemon=True)

    def start(self) -> Appender:
        self._thread.start()
        return self

    def _run(self, user: str) -> None:
        n = 0
        while not self._stop.is_set() and n < 2000:
            subject = f"during-{n}"
            try:
                append(self.conn, subject)
            except (imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError):
                self.kicked.set()
                return
            self.appended.append(subject)
            n += 1
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


# ---------------------------------------------------------------------- director strategy
@pytest.fixture(scope="module")
def moved(api: LocalApi, backends: Backends) -> dict[str, Any]:
    """user1 moved from 127.0.0.2 to 127.0.0.3 behind the director, with mail appended
    before (INBOX and Archive) and during the move by a client that stays logged in."""
    user = "user1"
    backends.director.call("directorMove", {"user": user, "host": SOURCE_IP})
    before = imap_to("127.0.0.1", backends.director.imap_port, user)
    before.create("Archive")
    for i in range(100):
        append(before, f"before-{i}")
    for i in range(5):
        append(before, f"archived-{i}", "Archive")
    before.logout()
    appender = Appender(backends, user).start()
    wait_until(lambda: len(appender.appended) >= 5, 30, what="mail appended before the move")
    accepted = start(api, backends.body([user]))
    view = wait_final(api, accepted["migration_id"])
    appender.stop()
    return {"user": user, "view": view, "accepted": accepted, "appender": appender}


def test_mail_before_and_during_the_move_is_on_the_destination(
        backends: Backends, moved: dict[str, Any]) -> None:
    user, view, appender = moved["user"], moved["view"], moved["appender"]
    assert moved["accepted"]["total"] == 1
    assert view["status"] == "SUCCEEDED", view
    assert view["counts"] == {"DONE": 1}
    assert backends.routed_to(user) == DESTINATION_IP
    # The client was kicked (its session ended), after appending during the copy.
    assert appender.kicked.is_set()
    assert len(appender.appended) >= 1
    expected = {f"before-{i}" for i in range(100)} | set(appender.appended)
    arrived = subjects(backends.destination, user)
    # Everything the client was told was saved, and at most the append the kick cut off
    # (saved on the source, its OK never reached the client): the source's mail, exactly.
    assert expected <= set(arrived)
    assert set(arrived) - expected <= {f"during-{len(appender.appended)}"}
    assert arrived == subjects(backends.source, user)
    assert subjects(backends.destination, user, "Archive") == sorted(
        f"archived-{i}" for i in range(5))
    assert counts(backends.destination, user) == counts(backends.source, user) == {
        "INBOX": len(arrived), "Archive": 5}
    # A new login through the director now lands on the destination.
    after = imap_to("127.0.0.1", backends.director.imap_port, user)
    append(after, "after-the-move")
    after.logout()
    assert "after-the-move" in subjects(backends.destination, user)
    assert "after-the-move" not in subjects(backends.source, user)


def test_steps_and_counts_are_recorded(backends: Backends, moved: dict[str, Any]) -> None:
    steps = steps_of(moved["view"], moved["user"])
    finished = [s["step"] for s in steps if s["outcome"] == "ok"]
    assert finished == DIRECTOR_STEPS
    assert all(s["outcome"] in ("ok", "running") for s in steps)
    verify = next(s for s in steps if s["step"] == "verify")
    inbox = verify["mailboxes"]["INBOX"]
    assert inbox["source"] == inbox["destination"] >= 100 + len(moved["appender"].appended)
    assert verify["mailboxes"]["Archive"] == {"source": 5, "destination": 5}
    copy = next(s for s in steps if s["step"] == "pre_copy" and s["outcome"] == "ok")
    assert copy["hosts"][backends.ids["source"]]["to"] == backends.destination.dsync_endpoint
    previous = next(a for a in moved["view"]["accounts"])["previous"]
    assert previous[backends.ids["director"]] == {"host": SOURCE_IP, "mapped": True}


def test_the_audit_trail_has_every_step(api: LocalApi, moved: dict[str, Any],
                                        backends: Backends) -> None:
    migration_id = moved["view"]["migration_id"]
    answer = api.request("GET", "/audit", params={"cutover_id": migration_id, "limit": 1000})
    assert answer.status_code == 200, answer.text
    events = answer.json()["events"]
    actions = [e["action"] for e in events]
    assert actions.count("migration.start") == 1 and actions.count("migration.end") == 1
    for step in DIRECTOR_STEPS:
        assert f"migration.{step}" in actions
    text = str(events)
    for instance in (backends.source, backends.destination, backends.director):
        assert instance.api_key not in text and instance.password not in text


def test_rollback_brings_mail_received_after_the_flip_back(
        api: LocalApi, backends: Backends, moved: dict[str, Any]) -> None:
    user, migration_id = moved["user"], moved["view"]["migration_id"]
    conn = imap_to("127.0.0.1", backends.director.imap_port, user)
    for i in range(7):
        append(conn, f"after-flip-{i}")
    # Deleted on the destination after the flip: gone from the source too once back.
    conn.select("INBOX")
    _, found = conn.search(None, "SUBJECT", "before-0")
    conn.store(found[0].split()[0], "+FLAGS", "\\Deleted")
    conn.expunge()
    conn.logout()
    answer = api.request("POST", f"/migrations/{migration_id}/rollback")
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"migration_id": migration_id, "status": "RUNNING", "total": 1}
    view = wait_final(api, migration_id)
    assert view["status"] == "ROLLED_BACK", view
    assert backends.routed_to(user) == SOURCE_IP
    on_source = subjects(backends.source, user)
    assert {f"after-flip-{i}" for i in range(7)} <= set(on_source)
    assert "before-0" not in on_source
    assert on_source == subjects(backends.destination, user)
    steps = [s["step"] for s in steps_of(view, user) if s["outcome"] == "ok"]
    assert steps[len(DIRECTOR_STEPS):] == ["copy_back", "kick_back", "final_copy_back",
                                           "verify_back", "put_route_back"]
    assert api.request("POST", f"/migrations/{migration_id}/rollback").status_code == 409


MESSAGES = 500


def test_a_copy_that_outlasts_its_call_goes_on_and_is_polled(
        api: LocalApi, backends: Backends, monkeypatch: pytest.MonkeyPatch) -> None:
    """The copy call hangs up at once; doveadm goes on with the copy, the next rounds find
    the user's dsync lock held ("running"), and a last incremental call finishes it."""
    from mailfleet.logic import migration_steps

    user = "user9"
    backends.director.call("directorMove", {"user": user, "host": SOURCE_IP})
    conn = imap_to(SOURCE_IP, backends.source.imap_port, user)
    for i in range(MESSAGES):
        append(conn, f"big-{i}")
    conn.logout()
    # Short enough that the first copy cannot finish within its call, even on a fast run.
    monkeypatch.setattr(migration_steps, "COPY_CALL_SECONDS", 0.05)
    view = wait_final(api, start(api, backends.body([user]))["migration_id"])
    assert view["status"] == "SUCCEEDED", view
    copies = [s for s in view["accounts"][0]["steps"] if s["step"] == "pre_copy"]
    assert copies[0]["outcome"] == "running"
    assert copies[-1]["outcome"] == "ok"
    assert all(s["outcome"] == "running" for s in copies[:-1])
    # Each round shows how far the copy got on both sides.
    assert copies[0]["mailboxes"]["INBOX"]["source"] == MESSAGES
    assert copies[-1]["mailboxes"]["INBOX"] == {"source": MESSAGES, "destination": MESSAGES}
    assert subjects(backends.destination, user) == sorted(f"big-{i}" for i in range(MESSAGES))


def test_a_verify_mismatch_stops_the_account_before_the_flip(
        api: LocalApi, backends: Backends, monkeypatch: pytest.MonkeyPatch) -> None:
    user = "user2"
    backends.director.call("directorMove", {"user": user, "host": SOURCE_IP})
    conn = imap_to(SOURCE_IP, backends.source.imap_port, user)
    for i in range(20):
        append(conn, f"m-{i}")
    conn.logout()
    copy = MigrationSteps.copy

    def copy_then_inject(self: MigrationSteps, item: dict[str, Any], step: str
                         ) -> dict[str, Any]:
        out = copy(self, item, step)
        if step == "final_sync" and out["copy"]["state"] == "done" and item["account"] == user:
            # Mail that reached the destination by another way after the last copy.
            stray = imap_to(DESTINATION_IP, backends.destination.imap_port, user)
            append(stray, "stray")
            stray.logout()
        return out

    monkeypatch.setattr(MigrationSteps, "copy", copy_then_inject)
    view = wait_final(api, start(api, backends.body([user]))["migration_id"])
    assert view["status"] == "FAILED", view
    account = view["accounts"][0]
    assert account["status"] == "ROLLED_BACK"
    assert account["error"]["step"] == "verify"
    assert "INBOX (20 vs 21)" in account["error"]["message"]
    assert account["error"]["route"] == "unchanged: still on the source"
    names = [s["step"] for s in account["steps"]]
    assert "flip" not in names and names[-1] == "verify"
    assert backends.routed_to(user) == SOURCE_IP
    assert counts(backends.source, user) == {"INBOX": 20}


def test_a_destination_that_is_down_fails_the_account_route_unchanged(
        api: LocalApi, backends: Backends) -> None:
    user = "user3"
    backends.director.call("directorMove", {"user": user, "host": SOURCE_IP})
    conn = imap_to(SOURCE_IP, backends.source.imap_port, user)
    append(conn, "kept")
    conn.logout()
    closed = free_port_on(DESTINATION_IP)  # nothing listens there: dsync cannot connect
    body = backends.body([user], dsync_endpoint=f"tcp:{DESTINATION_IP}:{closed}")
    view = wait_final(api, start(api, body)["migration_id"])
    assert view["status"] == "FAILED", view
    account = view["accounts"][0]
    assert account["status"] == "ROLLED_BACK"
    assert account["error"]["step"] == "pre_copy"
    assert "could not reach the destination's doveadm listener" in account["error"]["message"]
    copies = [s for s in account["steps"] if s["step"] == "pre_copy"]
    assert len(copies) == 5  # 1 + 4 retries with back-off, then stopped
    assert backends.routed_to(user) == SOURCE_IP
    assert subjects(backends.source, user) == ["kept"]


def test_a_swapped_source_and_destination_copies_nothing(
        api: LocalApi, backends: Backends) -> None:
    """backup mirrors the source: from an empty backend it would wipe the real mailbox."""
    user = "user6"
    backends.director.call("directorMove", {"user": user, "host": SOURCE_IP})
    conn = imap_to(SOURCE_IP, backends.source.imap_port, user)
    for i in range(3):
        append(conn, f"precious-{i}")
    conn.logout()
    # The other backend gets an INBOX of its own (a login creates it), with no mail.
    imap_to(DESTINATION_IP, backends.destination.imap_port, user).logout()
    body = backends.body([user], source=backends.ids["destination"],
                         destination=backends.ids["source"],
                         dsync_endpoint=backends.source.dsync_endpoint)
    body["routing"]["backend_address"] = SOURCE_IP
    view = wait_final(api, start(api, body)["migration_id"])
    account = view["accounts"][0]
    assert account["status"] == "ROLLED_BACK"
    assert account["error"]["step"] == "pre_copy"
    assert "already holds other mail" in account["error"]["message"]
    assert len([s for s in account["steps"] if s["step"] == "pre_copy"]) == 1  # not retried
    assert subjects(backends.source, user) == [f"precious-{i}" for i in range(3)]


# ---------------------------------------------------------------------- proxy strategy
def test_proxy_strategy_holds_logins_and_flips_every_proxy(
        api: LocalApi, backends: Backends, proxy_double: Callable[..., ProxyDouble]) -> None:
    user = "user4"
    doubles = [proxy_double(destinations=("legacy", "stalwart")) for _ in range(2)]
    ids = [f"px-{backends.tag}-{i}" for i in range(2)]
    for host_id, double in zip(ids, doubles, strict=True):
        double.set_mapping(user, "legacy")
        double.seed_sessions(user, 2)
        answer = api.request("POST", "/hosts", json={
            "id": host_id, "kind": "proxy", "endpoint": double.endpoint,
            "credentials": {"token": double.token},
            "tls": {"pin_sha256": double.fingerprint_sha256}})
        assert answer.status_code == 201, answer.text
    conn = imap_to(SOURCE_IP, backends.source.imap_port, user)
    for i in range(50):
        append(conn, f"p-{i}")
    body = backends.body([user], delay_seconds=30, routing={
        "strategy": "proxy", "proxies": {"hosts": ids}, "destination": "stalwart"})
    view = wait_final(api, start(api, body)["migration_id"])
    assert view["status"] == "SUCCEEDED", view
    with pytest.raises((imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError)):
        conn.noop()  # the session on the source was kicked
    for double in doubles:
        assert double.mapping_of(user) == "stalwart"
        assert double.sessions_of(user) == 0
        delay = double.delay_of(user)
        assert delay is not None and delay.seconds == 30
    assert subjects(backends.destination, user) == sorted(f"p-{i}" for i in range(50))
    finished = [s["step"] for s in view["accounts"][0]["steps"] if s["outcome"] == "ok"]
    assert finished == PROXY_STEPS


def test_a_flip_that_fails_on_one_proxy_puts_the_route_back_everywhere(
        api: LocalApi, backends: Backends, proxy_double: Callable[..., ProxyDouble]) -> None:
    user = "user7"
    doubles = [proxy_double(destinations=("legacy", "stalwart")) for _ in range(2)]
    ids = [f"px7-{backends.tag}-{i}" for i in range(2)]
    for host_id, double in zip(ids, doubles, strict=True):
        double.set_mapping(user, "legacy")
        answer = api.request("POST", "/hosts", json={
            "id": host_id, "kind": "proxy", "endpoint": double.endpoint,
            "credentials": {"token": double.token},
            "tls": {"pin_sha256": double.fingerprint_sha256}})
        assert answer.status_code == 201, answer.text
    # The second proxy's mapping store keeps failing this account's upsert.
    doubles[1].inject("PUT", "/mappings", 500, "upsert failed\n", times=None, identifier=user)
    conn = imap_to(SOURCE_IP, backends.source.imap_port, user)
    append(conn, "stays")
    conn.logout()
    body = backends.body([user], routing={
        "strategy": "proxy", "proxies": {"hosts": ids}, "destination": "stalwart"})
    view = wait_final(api, start(api, body)["migration_id"])
    account = view["accounts"][0]
    assert account["status"] == "ROLLED_BACK", account
    assert account["error"]["step"] == "flip"
    names = [s["step"] for s in account["steps"]]
    assert names[-1] == "put_route_back" and "confirm" not in names
    for double in doubles:
        assert double.mapping_of(user) == "legacy"  # the first proxy had flipped: put back
    assert subjects(backends.source, user) == ["stays"]


def test_a_hold_that_ends_before_the_flip_stops_the_account(
        api: LocalApi, backends: Backends, proxy_double: Callable[..., ProxyDouble],
        monkeypatch: pytest.MonkeyPatch) -> None:
    user = "user8"
    double = proxy_double(destinations=("legacy", "stalwart"))
    double.set_mapping(user, "legacy")
    host_id = f"px8-{backends.tag}"
    answer = api.request("POST", "/hosts", json={
        "id": host_id, "kind": "proxy", "endpoint": double.endpoint,
        "credentials": {"token": double.token},
        "tls": {"pin_sha256": double.fingerprint_sha256}})
    assert answer.status_code == 201, answer.text
    copy = MigrationSteps.copy

    def slow_final_sync(self: MigrationSteps, item: dict[str, Any], step: str
                        ) -> dict[str, Any]:
        out = copy(self, item, step)
        if step == "final_sync" and item["account"] == user:
            time.sleep(1.5)  # a final sync longer than the hold
        return out

    monkeypatch.setattr(MigrationSteps, "copy", slow_final_sync)
    body = backends.body([user], delay_seconds=1, routing={
        "strategy": "proxy", "proxies": {"hosts": [host_id]}, "destination": "stalwart"})
    view = wait_final(api, start(api, body)["migration_id"])
    account = view["accounts"][0]
    assert account["status"] == "ROLLED_BACK"
    assert account["error"]["step"] == "verify"
    assert "hold on new logins ended before the flip" in account["error"]["message"]
    assert double.mapping_of(user) == "legacy"


# ---------------------------------------------------------------------- the API's edges
def test_dry_run_conflicts_and_invalid_requests(api: LocalApi, backends: Backends) -> None:
    dry = api.request("POST", "/migrations", json=backends.body(["user5"], dry_run=True))
    assert dry.status_code == 200, dry.text
    plan = dry.json()
    assert plan["dry_run"] is True
    assert plan["dsync_endpoint"] == backends.destination.dsync_endpoint
    assert plan["source_dsync_endpoint"] == backends.source.dsync_endpoint
    assert plan["routing"]["hosts"][0]["host"] == backends.ids["director"]
    key = {"Idempotency-Key": f"k-{backends.tag}"}
    first = api.request("POST", "/migrations", json=backends.body(["user5"], dry_run=True),
                        headers=key)
    again = api.request("POST", "/migrations", json=backends.body(["user5"], dry_run=True),
                        headers=key)
    assert first.status_code == again.status_code == 200
    assert first.json()["migration_id"] == again.json()["migration_id"]
    other = api.request("POST", "/migrations", json=backends.body(["user6"], dry_run=True),
                        headers=key)
    assert other.status_code == 409
    cases = {
        "dsync_endpoint": backends.body(["user5"], dsync_endpoint="tcp:10.9.9.9:2425"),
        "destination": backends.body(["user5"], destination=backends.ids["source"]),
        "accounts": backends.body(["user*"]),
        "routing": backends.body(["user5"], routing={"strategy": "director",
                                                     "directors": {"hosts": ["nope"]},
                                                     "backend_address": DESTINATION_IP}),
    }
    for field, body in cases.items():
        answer = api.request("POST", "/migrations", json=body)
        assert answer.status_code == 422, (field, answer.text)
        assert field in answer.text
    bad_format = api.request("POST", "/migrations", json=backends.body(
        ["user5"], dsync_endpoint="tcp:127.0.0.3"))
    assert bad_format.status_code == 422 and "tcp:<host>:<port>" in bad_format.text
    # An account in a running cutover cannot be migrated meanwhile (shared locks): a
    # cutover of 10 accounts, one at a time, with user5 last.
    others = [f"nobody{i}-{backends.tag}" for i in range(9)]
    cutover = api.request("POST", "/cutovers", json={
        "accounts": [*others, "user5"], "destination": DESTINATION_IP, "strategy": "director",
        "proxies": {"hosts": [backends.ids["director"]]}, "max_concurrency": 1})
    assert cutover.status_code == 202, cutover.text
    cutover_id = cutover.json()["cutover_id"]
    clash = api.request("POST", "/migrations", json=backends.body(["user5"]))
    assert clash.status_code == 409, clash.text
    assert clash.json()["conflicts"] == [{"account": "user5", "cutover_id": cutover_id}]
    wait_until(lambda: api.request("GET", f"/cutovers/{cutover_id}").json()["status"] in FINAL,
               120, interval=0.25, what="the cutover final")
    assert api.request("GET", "/migrations/nope").status_code == 404
    assert api.request("GET", f"/cutovers/{plan['migration_id']}").status_code == 404
    listed = api.request("GET", "/migrations", params={"limit": 100}).json()["migrations"]
    assert plan["migration_id"] in [m["migration_id"] for m in listed]
    cutovers = api.request("GET", "/cutovers", params={"limit": 100}).json()["cutovers"]
    assert plan["migration_id"] not in [c["cutover_id"] for c in cutovers]


def test_openapi_describes_the_migration_routes(api: LocalApi) -> None:
    doc = api.request("GET", "/openapi.json").json()
    for path, method in [("/migrations", "post"), ("/migrations", "get"),
                         ("/migrations/{migration_id}", "get"),
                         ("/migrations/{migration_id}/rollback", "post")]:
        assert method in doc["paths"].get(path, {}), f"{method.upper()} {path} missing"
    fields = set(doc["components"]["schemas"]["MigrationRequest"]["properties"])
    assert {"accounts", "source", "destination", "dsync_endpoint", "routing", "delay_seconds",
            "max_concurrency", "tolerated_failure_percentage", "dry_run"} <= fields


def test_a_stopped_execution_still_gets_a_final_status(
        api: LocalApi, backends: Backends, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailfleet.logic import migration_steps
    from mailfleet.store.cutovers import MigrationStore

    user = "user10"
    backends.director.call("directorMove", {"user": user, "host": SOURCE_IP})
    conn = imap_to(SOURCE_IP, backends.source.imap_port, user)
    for i in range(100):
        append(conn, f"s-{i}")
    conn.logout()
    monkeypatch.setattr(migration_steps, "COPY_CALL_SECONDS", 0.2)
    migration_id = start(api, backends.body([user]))["migration_id"]
    store = MigrationStore()
    wait_until(lambda: any(s["step"] == "pre_copy"
                           for s in store.account(migration_id, 0)["steps"]),
               60, interval=0.01, what="the pre-copy under way")
    sfn = api.aws.client("stepfunctions")
    arn = store.get(migration_id)["execution_arn"]
    sfn.stop_execution(executionArn=arn, error="operator", cause="stopped by the test")
    described = wait_until(lambda: (lambda d: d if d["status"] != "RUNNING" else None)(
        sfn.describe_execution(executionArn=arn)), 60, interval=0.01, what="the stop")
    # What EventBridge delivers to the step function on AWS (the rule covers both machines).
    event = {"detail-type": "Step Functions Execution Status Change", "source": "aws.states",
             "detail": {k: v for k, v in described.items() if isinstance(v, str)}}
    step_function = api.deployment.functions["CutoverStepFunction"].name
    outcome = lambda_bridge.invoke_local(step_function, event)
    assert outcome["status"] == "CANCELLED" and outcome["migration_id"] == migration_id
    view = api.request("GET", f"/migrations/{migration_id}").json()
    assert view["status"] == "CANCELLED" and view["error"]["code"] == "ABORTED"
    account = view["accounts"][0]
    assert account["status"] == "FAILED"
    assert "before the flip its route is unchanged" in account["error"]["message"]
    assert backends.routed_to(user) == SOURCE_IP  # stopped during the copy: never flipped
    time.sleep(0.5)  # a step already under way when it stopped
    again = start(api, backends.body([user]))  # the account's lock was released
    assert wait_final(api, again["migration_id"])["status"] == "SUCCEEDED"
