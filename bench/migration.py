"""`python -m bench.migration` (also run by `make bench`): what a migration costs per
account, for mailboxes of 1,000 small messages.

Two real Dovecot backends (127.0.0.2, 127.0.0.3) behind a real director, template.yaml
deployed into the embedded AWS, migrations submitted through the API front, exactly as in
tests/integration/test_migrations.py. Printed:
  - dsync alone: one `backup` of a 1,000-message user sent straight to the source's
    doveadm API and waited for, then an incremental one with nothing new;
  - per account through mailfleet (one account at a time): Begin to DONE, the time inside
    the copy calls (pre-copy and final sync), the flip, and the controller's own time
    beyond the copies (Step Functions, DynamoDB, audit, routing, kicks, verify's counts).
Wait states are instant here (lambda_bridge.instant_waits), as in the tests: on AWS a copy
that outlasts one 20 s call adds its polls' waits (5 s, doubling to 60 s).
"""

from __future__ import annotations

import argparse
import datetime
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import requests

SOURCE_IP, DESTINATION_IP = "127.0.0.2", "127.0.0.3"
REPO = Path(__file__).resolve().parents[1]


def seconds(stamp: str) -> float:
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.UTC).timestamp()


def fill_maildir(instance: Any, user: str, count: int) -> None:
    """`count` small messages straight into the user's Maildir (new/), as a delivery
    agent leaves them; Dovecot indexes them on the first look (IMAP APPEND of 1,000
    messages costs ~25 s here, which is not what is measured)."""
    import pwd

    vmail = pwd.getpwnam("vmail")
    base = instance.folder / "mail" / user / "Maildir"
    for sub in ("", "cur", "new", "tmp"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for path in [instance.folder / "mail" / user, *[base / s for s in ("", "cur", "new", "tmp")]]:
        os.chown(path, vmail.pw_uid, vmail.pw_gid)
    stamp = int(time.time())
    for n in range(count):
        path = base / "new" / f"{stamp}.M{n}P1.bench"
        path.write_bytes(f"From: bench@example.org\r\nTo: {user}@example.org\r\nSubject: "
                         f"bench {n}\r\n\r\n{'x' * 200}\r\n".encode())
        os.chown(path, vmail.pw_uid, vmail.pw_gid)
    instance.call("mailboxStatus", {"user": user, "field": ["messages"], "mailboxMask": ["*"]})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--accounts", type=int, default=3)
    args = parser.parse_args(argv)

    from bench.stack import quiet
    from mailfleet_local import lambda_bridge
    from mailfleet_local.front import ApiFront
    from mailfleet_local.peers.dovecot import DovecotInstance, dovecot_available, free_port_on
    from mailfleet_local.stack import LocalAws

    why = dovecot_available()
    if why:
        print(f"migration bench left out: {why}")
        return 0
    users = {f"bench{i}": f"pw-{secrets.token_hex(4)}" for i in range(args.accounts + 1)}
    password = secrets.token_urlsafe(18)
    imap_port = free_port_on(SOURCE_IP, DESTINATION_IP)
    dsync_port = free_port_on(SOURCE_IP, DESTINATION_IP)
    peers: list[DovecotInstance] = []
    aws = front = None
    try:
        for address in (SOURCE_IP, DESTINATION_IP):
            peers.append(DovecotInstance(users=users, address=address, imap_port=imap_port,
                                         dsync=True, dsync_port=dsync_port,
                                         doveadm_password=password).start())
        source, destination = peers
        director = DovecotInstance(users=users, director=True,
                                   director_backends=[SOURCE_IP, DESTINATION_IP],
                                   director_backend_port=imap_port).start()
        peers.append(director)
        for user in users:
            fill_maildir(source, user, args.messages)
            director.call("directorMove", {"user": user, "host": SOURCE_IP})

        # dsync alone: the first user, straight to the source's doveadm API.
        began = time.monotonic()
        backup = {"user": "bench0", "destination": [destination.dsync_endpoint]}
        source.call("backup", backup, timeout=600)
        full = time.monotonic() - began
        began = time.monotonic()
        source.call("backup", backup, timeout=600)
        incremental = time.monotonic() - began

        quiet()
        token = secrets.token_urlsafe(32)
        aws = LocalAws().start()
        deployment = aws.deploy(REPO / "template.yaml", parameter_overrides={
            "LogLevel": "WARNING"}, secret_values={"AdminTokenSecret": token})
        quiet()
        import mailfleet.aws

        mailfleet.aws.reset()
        front = ApiFront(deployment).start()
        api = requests.Session()
        api.trust_env = False
        api.headers["Authorization"] = f"Bearer {token}"
        for host_id, instance in (("src", source), ("dst", destination), ("dir", director)):
            answer = api.post(f"{front.url}/hosts", timeout=30, json={
                "id": host_id, "kind": "dovecot", "endpoint": instance.endpoint,
                "credentials": {"api_key": instance.api_key}})
            answer.raise_for_status()
        accounts = [u for u in users if u != "bench0"]
        body = {"accounts": accounts, "source": "src", "destination": "dst",
                "dsync_endpoint": destination.dsync_endpoint, "max_concurrency": 1,
                "routing": {"strategy": "director", "directors": {"hosts": ["dir"]},
                            "backend_address": DESTINATION_IP}}
        began = time.monotonic()
        with lambda_bridge.instant_waits():
            answer = api.post(f"{front.url}/migrations", json=body, timeout=60)
            answer.raise_for_status()
            migration_id = answer.json()["migration_id"]
            while True:
                view = api.get(f"{front.url}/migrations/{migration_id}", timeout=60).json()
                if view["status"] not in ("PENDING", "RUNNING"):
                    break
                if time.monotonic() - began > 900:
                    raise RuntimeError("the migration did not finish within 15 minutes")
                time.sleep(0.2)
        wall = time.monotonic() - began
        if view["status"] != "SUCCEEDED":
            print(f"migration ended {view['status']}: {view.get('error')}")
            return 1

        rows = []
        for account in view["accounts"]:
            steps = account["steps"]
            per_step: dict[str, float] = {}
            rounds: dict[str, int] = {}
            for step in steps:
                per_step[step["step"]] = per_step.get(step["step"], 0.0) + step[
                    "duration_ms"] / 1000
                rounds[step["step"]] = rounds.get(step["step"], 0) + 1
            total = seconds(account["finished_at"]) - seconds(account["started_at"])
            copies = per_step["pre_copy"] + per_step["final_sync"]
            rows.append((account["account"], total, per_step, rounds, copies))
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"\nmigration figures ({args.messages} messages of ~300 bytes per account, "
              f"{len(accounts)} accounts one at a time, director strategy; load average "
              f"now {load})")
        print(f"  dsync alone: backup {full:.2f} s, incremental backup with nothing new "
              f"{incremental:.2f} s")
        print(f"  {'account':<9}{'Begin-DONE':>11}{'pre_copy':>10}{'final_sync':>11}"
              f"{'verify':>8}{'flip':>7}{'kicks':>7}{'controller':>11}")
        for name, total, per_step, rounds, copies in rows:
            kicks = per_step.get("kick", 0) + per_step.get("kick_again", 0)
            print(f"  {name:<9}{total:10.2f}s{per_step['pre_copy']:9.2f}s"
                  f"{per_step['final_sync']:10.2f}s{per_step['verify']:7.2f}s"
                  f"{per_step['flip']:6.2f}s{kicks:6.2f}s{total - copies:10.2f}s"
                  f"   (copy rounds: pre {rounds['pre_copy']}, final "
                  f"{rounds['final_sync']})")
        mean = sum(r[1] for r in rows) / len(rows)
        beyond = sum(r[1] - r[4] for r in rows) / len(rows)
        print(f"  mean per account: {mean:.2f} s Begin to DONE, of which {beyond:.2f} s is "
              f"the controller beyond the copy calls; whole migration {wall:.2f} s wall")
        return 0
    finally:
        if front is not None:
            front.stop()
        if aws is not None:
            aws.stop()
        for peer in peers:
            peer.terminate()
        for peer in peers:
            peer.wait()


if __name__ == "__main__":
    sys.exit(main())
