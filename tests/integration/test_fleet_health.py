"""Health sweeps over a mixed fleet: a real Dovecot, a real pymap, proxy and appliance
doubles; one host down and one proxy destination down. The stored health, GET
/fleet/health, the EMF metrics, and POST /fleet/sweep followed as a job."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from mailfleet_local import lambda_bridge
from mailfleet_local.peers.appliance import ApplianceDouble
from mailfleet_local.peers.dovecot import DovecotInstance
from mailfleet_local.peers.proxy import ProxyDouble
from mailfleet_local.peers.pymap import PymapServer
from tests.fixtures.dovecot import host_body
from tests.fixtures.maintenance import (
    appliance_body,
    ensure_fleet_routes,
    invoke,
    proxy_body,
    pymap_body,
    register,
    uid,
)
from tests.waiting import wait_until


@pytest.fixture
def fleet(local_api: Any, dovecot_host: DovecotInstance, pymap_server: PymapServer,
          proxy_double: Callable[..., ProxyDouble],
          appliance_double: Callable[..., ApplianceDouble]) -> dict[str, Any]:
    ensure_fleet_routes(local_api)
    site = uid("site")
    tags = {"site": site}
    proxy = proxy_double(destinations=("legacy", "stalwart"))
    proxy.set_destination_down("stalwart")
    dead = proxy_double()
    appliance = appliance_double(version="1.4.2")
    ids = {
        "dovecot": register(local_api, host_body(dovecot_host, uid("hc-dc"), tags=tags)),
        "pymap": register(local_api, pymap_body(pymap_server, uid("hc-pm"), tags=tags)),
        "proxy": register(local_api, proxy_body(proxy, uid("hc-px"), tags=tags)),
        "dead": register(local_api, proxy_body(dead, uid("hc-dead"), tags=tags)),
        "appliance": register(local_api, appliance_body(appliance, uid("hc-ap"), tags=tags)),
        "maintenance": register(local_api, appliance_body(appliance, uid("hc-mt"), tags=tags,
                                                          maintenance=True)),
    }
    dead.die()  # registered while alive, gone by the sweep
    return {"ids": ids, "proxy": proxy, "tags": tags}


def sweep(local_api: Any, tags: dict[str, str]) -> dict[str, Any]:
    """A sweep of these hosts (the shared inventory holds other tests' fleets too)."""
    return invoke(local_api, "MaintenanceFunction", {"task": "health-sweep", "tags": tags})


def emf_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "_aws" in doc:
            out.append(doc)
    return out


def values(metric: Any) -> list[float]:
    """An EMF metric's values: one number, or a list when it was added several times."""
    return [float(v) for v in (metric if isinstance(metric, list) else [metric])]


def total(metric: Any) -> float:
    return sum(values(metric))


def health_of(local_api: Any, host_id: str) -> dict[str, Any]:
    answer = local_api.request("GET", f"/hosts/{host_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()["health"]


@pytest.mark.dovecot
@pytest.mark.pymap
def test_scheduled_sweep_over_a_mixed_fleet(local_api: Any, fleet: dict[str, Any],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    ids = fleet["ids"]
    # Background invocations of earlier tests would print their own metrics meanwhile.
    assert lambda_bridge.drain(60)
    capsys.readouterr()
    started = time.monotonic()
    summary = sweep(local_api, fleet["tags"])
    took = time.monotonic() - started
    print(f"\nsweep of {summary['hosts']} hosts took {took:.2f} s "
          f"(engine {summary['elapsed_s']} s)")
    emitted = emf_lines(capsys.readouterr().out)

    assert ids["dead"] in summary["down"]
    for key in ("dovecot", "pymap", "proxy", "appliance"):
        assert ids[key] not in summary["down"], key

    up = {key: health_of(local_api, ids[key]) for key in ("dovecot", "pymap", "proxy",
                                                          "appliance")}
    for key, health in up.items():
        assert health["status"] == "up", (key, health)
        assert health["latency_ms"] >= 0 and health["swept_at"] == summary["swept_at"]
        assert health["since"] == summary["swept_at"]  # first sweep: up since now
    assert up["proxy"]["destinations_down"] == ["stalwart"]
    assert up["proxy"]["destinations"] == 2 and up["proxy"]["last_error"] is None
    assert up["appliance"]["version"] == "1.4.2"
    assert up["pymap"]["version"]  # from Ping
    dead = health_of(local_api, ids["dead"])
    assert dead["status"] == "down"
    assert dead["last_error"]["type"] == "connection"
    # Maintenance hosts are not asked.
    assert local_api.request("GET", f"/hosts/{ids['maintenance']}").json()["health"] is None

    fleet_view = local_api.request("GET", "/fleet/health").json()
    assert fleet_view["swept_at"] >= summary["swept_at"]
    assert ids["dead"] in fleet_view["down"]
    assert {"host": ids["proxy"], "destination": "stalwart"} in fleet_view["destinations_down"]
    assert ids["maintenance"] in fleet_view["maintenance"]
    assert set(fleet_view["counts"]) == {"dovecot", "pymap", "proxy", "appliance"}
    # The counts are exactly what the hosts' own health says (the table is shared).
    hosts: list[dict[str, Any]] = []
    page: dict[str, Any] = {"limit": 1000}
    while True:
        answer = local_api.request("GET", "/hosts", params=page).json()
        hosts += answer["hosts"]
        if not answer.get("next_token"):
            break
        page["next_token"] = answer["next_token"]
    expected: dict[str, Counter[str]] = {}
    for host in hosts:
        status = (host.get("health") or {}).get("status", "unknown")
        if host.get("maintenance"):
            status = "unknown"
        expected.setdefault(host["kind"], Counter())[status] += 1
    for kind, counts in fleet_view["counts"].items():
        assert counts == {s: expected.get(kind, Counter())[s] for s in ("up", "down", "unknown")}

    # EMF: per kind HostsUp/HostsDown/ProbeLatency, fleet-wide HostsDown for the alarm.
    by_kind = {doc["kind"]: doc for doc in emitted if "kind" in doc}
    assert set(by_kind) == {"dovecot", "pymap", "proxy", "appliance"}, (summary, emitted)
    assert total(by_kind["proxy"]["HostsDown"]) >= 1
    assert total(by_kind["proxy"]["HostsUp"]) >= 1
    for kind in ("dovecot", "pymap", "appliance"):
        assert total(by_kind[kind]["HostsUp"]) >= 1
        assert all(v > 0 for v in values(by_kind[kind]["ProbeLatency"]))
    directive = by_kind["proxy"]["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "mailfleet"
    assert ["kind", "service"] in [sorted(d) for d in directive["Dimensions"]]
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert units["ProbeLatency"] == "Milliseconds" and units["HostsDown"] == "Count"
    fleet_doc = next(doc for doc in emitted if "kind" not in doc and "HostsDown" in doc)
    assert total(fleet_doc["HostsDown"]) == len(summary["down"])
    assert fleet_doc["service"] == "mailfleet"
    assert total(fleet_doc["DestinationsDown"]) >= 1

    # Next sweep: the dead proxy stays down since the first sweep; the live one goes down.
    fleet["proxy"].die()
    sweep(local_api, fleet["tags"])
    again = health_of(local_api, ids["dead"])
    assert again["since"] == dead["since"] and again["swept_at"] > dead["swept_at"]
    went_down = health_of(local_api, ids["proxy"])
    assert went_down["status"] == "down" and went_down["since"] == went_down["swept_at"]


@pytest.mark.dovecot
@pytest.mark.pymap
def test_post_fleet_sweep_is_followed_as_a_job(local_api: Any, fleet: dict[str, Any]) -> None:
    ids = fleet["ids"]
    viewer = local_api.request("POST", "/tokens", json={"role": "viewer", "name": uid("v")})
    refused = local_api.request("POST", "/fleet/sweep", token=viewer.json()["token"])
    assert refused.status_code == 403

    answer = local_api.request("POST", "/fleet/sweep", json={"tags": fleet["tags"]})
    assert answer.status_code == 202, answer.text
    assert answer.json()["total"] == 5  # not the host in maintenance
    job_id = answer.json()["job_id"]
    job = wait_until(lambda: (lambda job: job if job["status"] not in ("PENDING", "RUNNING")
                              else None)(local_api.request("GET", f"/jobs/{job_id}").json()),
                     60, interval=0.2, what="the sweep final")
    assert job["action"] == "health.sweep" and job["status"] == "PARTIAL", job
    results = {r["host"]: r for r in job["results"]}
    assert results[ids["dead"]]["status"] == "FAILED"
    assert results[ids["dead"]]["error"]["type"] == "connection"
    assert results[ids["appliance"]]["status"] == "SUCCEEDED"
    assert results[ids["appliance"]]["output"]["version"] == "1.4.2"
    assert set(results) == {ids[k] for k in ("dovecot", "pymap", "proxy", "dead", "appliance")}
    events = local_api.request("GET", "/audit", params={"job_id": job_id}).json()["events"]
    assert sorted(e["action"] for e in events) == ["job.end", "job.start"]
    assert health_of(local_api, ids["appliance"])["status"] == "up"


def test_a_proxy_that_refuses_our_token_is_asked_once_until_its_credentials_change(
        local_api: Any, proxy_double: Callable[..., ProxyDouble]) -> None:
    proxy = proxy_double()
    tags = {"site": uid("site")}
    body = proxy_body(proxy, uid("hc-badtoken"), tags=tags)
    body["credentials"] = {"token": "w" * 40}
    host = register(local_api, body)
    for _ in range(3):
        sweep(local_api, tags)
    health = health_of(local_api, host)
    assert health["status"] == "up"  # /healthz needs no token
    assert health["last_error"]["code"] == "not_asked" and health["auth_refused_at"]
    assert proxy.failed_auths() == 1 and not proxy.locked_out()

    fixed = local_api.request("PATCH", f"/hosts/{host}",
                              json={"credentials": {"token": proxy.token}})
    assert fixed.status_code == 200, fixed.text
    sweep(local_api, tags)
    health = health_of(local_api, host)
    assert health["last_error"] is None and health["destinations_down"] == []
    assert "auth_refused_at" not in health
