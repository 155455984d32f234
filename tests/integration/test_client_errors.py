"""What the fuzz run found once, each pinned down: a client never gets a 5xx for what it
sends, and a role too low is told so before its body is read."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.fixtures.stack import LocalApi

CRAFTED = base64.urlsafe_b64encode(json.dumps({"nope": {"S": 1}}).encode()).decode()


@pytest.mark.parametrize("path", ["/schedules", "/audit", "/jobs", "/cutovers", "/tokens",
                                  "/hosts"])
@pytest.mark.parametrize("token", ["garbage!", CRAFTED, "bnVsbA", "W10"])
def test_a_crafted_next_token_is_422(local_api: LocalApi, path: str, token: str) -> None:
    from tests.fixtures.maintenance import ensure_fleet_routes

    ensure_fleet_routes(local_api)
    answer = local_api.request("GET", path, params={"next_token": token})
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == "next_token"


@pytest.mark.parametrize("path", ["/hosts", "/fleet/sweep", "/tokens", "/jobs"])
def test_a_body_that_is_not_json_is_422(local_api: LocalApi, path: str) -> None:
    for body in (b"{not json", b"\xff\xfe\x00garbage", b"[" * 5000):
        answer = local_api.request("POST", path, data=body,
                                   headers={"Content-Type": "application/json"})
        assert answer.status_code == 422, (body[:10], answer.text)
        assert answer.json()["errors"][0]["field"] == "body"
    answer = local_api.request("POST", path, data=b"a=b",
                               headers={"Content-Type": "multipart/form-data"})
    assert answer.status_code == 415


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def test_deep_nesting_is_422_and_a_viewer_gets_403_first(local_api: LocalApi) -> None:
    viewer = local_api.request("POST", "/tokens", json={"role": "viewer", "name": "deep"})
    token = viewer.json()["token"]
    for path in ("/hosts", "/tokens", "/schedules", "/jobs", "/inventory/import"):
        answer = local_api.request("POST", path, token=token, data=nested(1000),
                                   headers={"Content-Type": "application/json"})
        assert answer.status_code == 403, (path, answer.text)
        answer = local_api.request("POST", path, data=nested(1000),
                                   headers={"Content-Type": "application/json"})
        assert answer.status_code == 422, (path, answer.text)
    # A PATCH too, and a body that is fine but deep enough to matter is still accepted.
    answer = local_api.request("PATCH", "/hosts/nope", token=token, data=b"\xff")
    assert answer.status_code == 403


@pytest.mark.parametrize("change", [
    {"max_concurrency": 10**38}, {"max_concurrency": 1e38}, {"max_errors": 10**40},
    {"max_errors": "99999999999999999999"}, {"timeout_seconds": 1e-300},
    {"max_concurrency": "0"}, {"max_errors": "١٢"},
])
def test_out_of_range_numbers_are_422(local_api: LocalApi, change: dict[str, Any]) -> None:
    body = {"action": "who", "targets": {"kind": "dovecot"}, "dry_run": True} | change
    answer = local_api.request("POST", "/jobs", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == next(iter(change))


def test_since_and_until_are_date_times(local_api: LocalApi) -> None:
    for value in ("2026-11-21", "yesterday", "2026-11-21T10:00", "0001-01-01T00:00:00+01:00"):
        answer = local_api.request("GET", "/audit", params={"since": value})
        assert answer.status_code == 422, (value, answer.text)
    for value in ("2026-11-21T10:00:00Z", "2026-11-21t10:00:00.5+02:00",
                  "2016-12-31T23:59:60Z"):
        answer = local_api.request("GET", "/audit/verify", params={"until": value})
        assert answer.status_code == 200, (value, answer.text)


def test_other_methods_on_a_known_path_are_405(local_api: LocalApi) -> None:
    answer = local_api.request("PUT", "/hosts")
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "GET, POST"
    assert local_api.request("GET", "/no/such/path").status_code == 404
