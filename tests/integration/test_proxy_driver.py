"""The proxy driver against the proxy double, and the double's wire behaviour itself."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from mailfleet.drivers import driver_class
from mailfleet.drivers.base import Deadline
from mailfleet.drivers.proxy import ProxyDriver
from mailfleet.errors import ErrorType, HostError, InvalidParams, Unsupported
from mailfleet.models.hosts import Credentials, TlsOptions
from mailfleet_local.peers.proxy import ProxyDouble
from tests.fixtures.proxy import proxy_host
from tests.waiting import wait_until

WRONG_TOKEN = "w" * 40

MakeDouble = Callable[..., ProxyDouble]
MakeDriver = Callable[..., ProxyDriver]


def call(
    driver: ProxyDriver, action: str, params: dict[str, Any] | None = None, seconds: float = 5.0
) -> Any:
    """Validate then perform, as the engine does."""
    return driver.perform(action, driver.validate(action, params or {}), Deadline.after(seconds))


def fails(
    driver: ProxyDriver, action: str, params: dict[str, Any] | None = None, seconds: float = 5.0
) -> HostError:
    with pytest.raises(HostError) as info:
        call(driver, action, params, seconds)
    return info.value


def raw(
    double: ProxyDouble,
    method: str,
    target: str,
    *,
    token: str | None = "",
) -> requests.Response:
    """One request straight to the double, verifying its certificate as a CA."""
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token or double.token}"
    with requests.Session() as session:
        session.trust_env = False
        return session.request(
            method,
            double.endpoint + target,
            headers=headers,
            verify=str(double.cert.cert_path),
            timeout=5,
        )


def raw_bytes(double: ProxyDouble, payload: bytes) -> bytes:
    """Send arbitrary bytes over TLS and read the whole answer."""
    ctx = ssl.create_default_context(cafile=str(double.cert.cert_path))
    with (
        socket.create_connection(("127.0.0.1", double.port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(payload)
        answer = b""
        while chunk := tls.recv(4096):
            answer += chunk
    return answer


def assert_no_secret(error: HostError, *secrets: str) -> None:
    text = repr(error) + str(error.to_dict())
    for secret in secrets:
        assert secret not in text


# ---- every action ------------------------------------------------------------------------


def test_action_specs_and_registry() -> None:
    assert driver_class("proxy") is ProxyDriver
    specs = ProxyDriver.static_actions()
    assert set(specs) == {
        "health",
        "stats",
        "destinations.list",
        "destinations.reset",
        "mapping.get",
        "mapping.set",
        "mapping.delete",
        "mappings.reload",
        "cache.invalidate",
        "connections.kick",
        "connections.delay",
        "config.reload",
    }
    reads = {"health", "stats", "destinations.list", "mapping.get"}
    assert {name for name, spec in specs.items() if not spec.mutating} == reads
    for spec in specs.values():
        assert spec.describe()["parameters"]["type"] == "object"
    delay = specs["connections.delay"].parameters_schema()
    assert delay["required"] == ["identifier", "seconds"]


def test_health_stats_and_destinations(proxy: ProxyDouble, proxy_driver: MakeDriver) -> None:
    driver = proxy_driver(proxy)
    assert call(driver, "health") == {"ok": True}
    stats = call(driver, "stats")
    assert stats == {
        "cache_hits": 0,
        "cache_misses": 0,
        "hit_rate_pct": 0.0,
        "cache_entries": 0,
        "active_connections": 0,
    }
    assert isinstance(stats["hit_rate_pct"], float)

    proxy.set_destination_down("stalwart", failures=4)
    listed = call(driver, "destinations.list")
    assert listed == {
        "destinations": [
            {"destination": "legacy", "consecutive_failures": 0, "down": False},
            {"destination": "stalwart", "consecutive_failures": 4, "down": True},
        ]
    }
    assert call(driver, "destinations.reset", {"destination": "stalwart"}) == {"ok": True}
    assert proxy.destination_state("stalwart") == {"consecutive_failures": 0, "down": False}

    err = fails(driver, "destinations.reset", {"destination": "nowhere"})
    assert (err.type, err.code, err.retryable) == (ErrorType.COMMAND, 404, False)
    assert err.details["body"] == "unknown destination"
    # One request per action, and the healthz call carried no auth (nothing to log anyway).
    assert [(r.method, r.path, r.status) for r in proxy.requests_log] == [
        ("GET", "/healthz", 200),
        ("GET", "/stats", 200),
        ("GET", "/destinations", 200),
        ("POST", "/destinations/reset", 200),
        ("POST", "/destinations/reset", 404),
    ]


def test_mapping_lifecycle_with_cache_and_normalization(
    proxy_double: MakeDouble, proxy_driver: MakeDriver
) -> None:
    px = proxy_double(mappings={"bob@example.com": "stalwart"})
    driver = proxy_driver(px)

    first = call(driver, "mapping.get", {"identifier": "Alice@Example.COM"})
    assert first == {
        "identifier": "Alice@Example.COM",
        "normalized": "alice@example.com",
        "destination": "legacy",
        "routed_to_default": True,
        "cached": False,
    }
    again = call(driver, "mapping.get", {"identifier": "alice@example.com"})
    assert again["cached"] is True and again["destination"] == "legacy"

    assert call(
        driver, "mapping.set", {"identifier": "ALICE@example.com", "destination": "stalwart"}
    ) == {"ok": True}
    assert px.mapping_of("alice@example.com") == "stalwart"
    assert "alice@example.com" not in px.cached  # the PUT dropped the stale route
    after = call(driver, "mapping.get", {"identifier": "alice@example.com"})
    assert after == {
        "identifier": "alice@example.com",
        "normalized": "alice@example.com",
        "destination": "stalwart",
        "routed_to_default": False,
        "cached": False,
    }

    assert call(driver, "mapping.delete", {"identifier": "alice@example.com"}) == {"removed": True}
    assert px.mapping_of("alice@example.com") is None
    assert call(driver, "mapping.delete", {"identifier": "alice@example.com"}) == {"removed": False}
    back = call(driver, "mapping.get", {"identifier": "alice@example.com"})
    assert back["routed_to_default"] is True and back["destination"] == "legacy"

    stats = call(driver, "stats")
    assert (stats["cache_hits"], stats["cache_misses"]) == (1, 3)
    assert stats["hit_rate_pct"] == 25.0

    # Reserved characters survive the query string intact.
    odd = "Jane Doe+tag&x=1@example.com"
    assert call(driver, "mapping.set", {"identifier": odd, "destination": "stalwart"}) == {
        "ok": True
    }
    assert px.mapping_of(odd.lower()) == "stalwart"
    assert px.requests_log[-1].query == {"identifier": odd, "destination": "stalwart"}

    err = fails(driver, "mapping.set", {"identifier": "bob@example.com", "destination": "nope"})
    assert (err.type, err.code) == (ErrorType.INVALID_PARAMS, 400)
    assert err.details["body"] == "unknown destination"
    assert px.mapping_of("bob@example.com") == "stalwart"


def test_cache_invalidate_one_or_all(proxy: ProxyDouble, proxy_driver: MakeDriver) -> None:
    driver = proxy_driver(proxy)
    for ident in ("a@x.test", "b@x.test", "c@x.test"):
        call(driver, "mapping.get", {"identifier": ident})
    assert set(proxy.cached) == {"a@x.test", "b@x.test", "c@x.test"}
    assert call(driver, "cache.invalidate", {"identifier": "A@x.test"}) == {"ok": True}
    assert set(proxy.cached) == {"b@x.test", "c@x.test"}
    assert call(driver, "cache.invalidate") == {"ok": True}
    assert proxy.cached == {}
    queries = [r.query for r in proxy.requests_to("/cache/invalidate")]
    assert queries == [{"identifier": "A@x.test"}, {}]


def test_kick_delay_and_reloads(proxy: ProxyDouble, proxy_driver: MakeDriver) -> None:
    driver = proxy_driver(proxy)
    proxy.seed_sessions("carol@example.com", 3)
    assert call(driver, "stats")["active_connections"] == 3
    assert call(driver, "connections.kick", {"identifier": "Carol@Example.com"}) == {"kicked": 3}
    assert proxy.sessions_of("carol@example.com") == 0
    assert call(driver, "connections.kick", {"identifier": "carol@example.com"}) == {"kicked": 0}

    before = time.time()
    assert call(
        driver, "connections.delay", {"identifier": "CAROL@example.com", "seconds": 30}
    ) == {"ok": True}
    delay = proxy.delays["carol@example.com"]
    assert delay.seconds == 30 and before <= delay.set_at <= time.time()
    login = proxy.login("carol@example.com")
    assert 29 < login.held_back <= 30
    assert proxy.sessions_of("carol@example.com") == 1
    assert proxy.requests_to("/connections/delay")[0].query == {
        "identifier": "CAROL@example.com",
        "seconds": "30",
    }

    assert call(driver, "mappings.reload") == {"reloaded": True}
    assert call(driver, "config.reload") == {
        "reloaded": True,
        "note": "listener and TLS settings need a restart to change",
    }
    assert proxy.reload_counts == {"mappings": 1, "config": 1}


def test_params_are_checked_before_anything_is_sent(
    proxy: ProxyDouble, proxy_driver: MakeDriver
) -> None:
    driver = proxy_driver(proxy)
    bad = [
        ("connections.delay", {"identifier": "a@x.test", "seconds": -1}),
        ("connections.delay", {"identifier": "a@x.test", "seconds": True}),
        ("connections.delay", {"identifier": "a@x.test", "seconds": "10"}),
        ("connections.delay", {"identifier": "a@x.test", "seconds": 1.5}),
        ("connections.delay", {"identifier": "a@x.test"}),
        ("mapping.set", {"identifier": "a@x.test"}),
        ("mapping.get", {"identifier": ""}),
        ("mapping.get", {"identifier": "a@x.test\r\nX: y"}),
        ("stats", {"verbose": True}),
    ]
    for action, params in bad:
        with pytest.raises(InvalidParams):
            driver.validate(action, params)
    with pytest.raises(Unsupported):
        driver.validate("mapping.rename", {})
    assert proxy.requests_log == []
    assert call(driver, "connections.delay", {"identifier": "a@x.test", "seconds": 0}) == {
        "ok": True
    }
    assert proxy.delay_of("a@x.test").seconds == 0
    # An action the proxy has no route for never reaches it.
    with pytest.raises(HostError) as info:
        driver.perform("mapping.rename", {}, Deadline.after(5))
    assert info.value.type == ErrorType.UNSUPPORTED
    assert len(proxy.requests_log) == 1


def test_missing_token_is_a_credentials_error_but_health_needs_none(proxy: ProxyDouble) -> None:
    host, _ = proxy_host(proxy)
    driver = ProxyDriver(host, Credentials())
    err = fails(driver, "stats")
    assert err.type == ErrorType.CREDENTIALS
    assert proxy.requests_log == []
    assert call(driver, "health") == {"ok": True}


# ---- authentication and lockout ----------------------------------------------------------


def test_wrong_token_is_one_401_and_the_driver_then_sends_nothing(
    proxy: ProxyDouble, proxy_driver: MakeDriver
) -> None:
    driver = proxy_driver(proxy, token=WRONG_TOKEN)
    deadline = Deadline.after(5)
    with pytest.raises(HostError) as info:
        driver.perform("stats", {}, deadline)
    err = info.value
    assert (err.type, err.code, err.retryable) == (ErrorType.AUTH, 401, False)
    assert err.details["body"] == "unauthorized"
    assert deadline.attempts == 1
    assert [(r.path, r.status) for r in proxy.requests_log] == [("/stats", 401)]

    # Same instance, i.e. the same job: refused locally, whatever the action.
    for action, params in (
        ("stats", {}),
        ("health", {}),
        ("mapping.set", {"identifier": "a@x.test", "destination": "legacy"}),
    ):
        again = Deadline.after(5)
        with pytest.raises(HostError) as info:
            driver.perform(action, params, again)
        assert info.value.type == ErrorType.AUTH and info.value.code == 401
        assert "no request was sent" in info.value.message
        assert again.attempts == 0
    assert len(proxy.requests_log) == 1
    assert proxy.failed_auths() == 1
    assert_no_secret(err, WRONG_TOKEN, proxy.token)
    assert_no_secret(info.value, WRONG_TOKEN, proxy.token)


def test_five_failed_jobs_lock_the_controller_out(
    proxy: ProxyDouble, proxy_driver: MakeDriver
) -> None:
    for _ in range(5):  # five jobs, each with its own driver instance
        assert fails(proxy_driver(proxy, token=WRONG_TOKEN), "stats").type == ErrorType.AUTH
    assert proxy.locked_out()

    # The sixth job is refused even with the right token.
    driver = proxy_driver(proxy)
    err = fails(driver, "mapping.get", {"identifier": "a@x.test"})
    assert (err.type, err.code, err.retryable) == (ErrorType.LOCKED_OUT, 429, False)
    assert err.details["body"] == "locked out"
    second = fails(driver, "health")
    assert second.type == ErrorType.LOCKED_OUT and "no request was sent" in second.message
    assert [r.status for r in proxy.requests_log] == [401] * 5 + [429]

    # Even the unauthenticated health check of a fresh instance is locked out.
    assert fails(proxy_driver(proxy), "health").type == ErrorType.LOCKED_OUT
    assert_no_secret(err, proxy.token)


def test_lockout_window_and_success_clear_the_count(proxy_double: MakeDouble) -> None:
    px = proxy_double(lockout_threshold=2, lockout_duration=0.3)
    assert raw(px, "GET", "/stats", token=WRONG_TOKEN).status_code == 401
    assert px.failed_auths() == 1
    assert raw(px, "GET", "/stats").status_code == 200
    assert px.failed_auths() == 0  # a success clears the count

    assert raw(px, "GET", "/stats", token=WRONG_TOKEN).status_code == 401
    assert raw(px, "GET", "/stats", token=WRONG_TOKEN).status_code == 401
    locked = raw(px, "GET", "/stats")
    assert (locked.status_code, locked.text) == (429, "locked out\n")
    wait_until(lambda: not px.locked_out(), 5, what="the lockout over")
    # After the lockout a failure counts from 1 again: not locked straight away.
    assert raw(px, "GET", "/stats", token=WRONG_TOKEN).status_code == 401
    assert px.failed_auths() == 1 and not px.locked_out()
    assert raw(px, "GET", "/stats").status_code == 200


def test_short_token_refuses_to_start() -> None:
    with pytest.raises(ValueError, match="shorter than 32") as info:
        ProxyDouble(token="s3cret-but-short")
    assert "s3cret-but-short" not in str(info.value)


# ---- TLS -------------------------------------------------------------------------------


def test_pin_mismatch_fails_in_the_handshake(proxy: ProxyDouble, proxy_driver: MakeDriver) -> None:
    driver = proxy_driver(proxy, pin="ab" * 32)
    err = fails(driver, "mapping.set", {"identifier": "a@x.test", "destination": "stalwart"})
    assert err.type == ErrorType.TLS
    assert "pinned" in err.message and "nothing was sent" in err.message
    time.sleep(0.05)  # let the double's connection thread finish
    assert proxy.requests_log == []
    assert proxy.mapping_of("a@x.test") is None


def test_verification_without_pin_rejects_the_self_signed_cert(
    proxy: ProxyDouble, proxy_driver: MakeDriver
) -> None:
    err = fails(proxy_driver(proxy, tls=TlsOptions(verify=True)), "stats")
    assert err.type == ErrorType.TLS and "verification failed" in err.message
    time.sleep(0.05)
    assert proxy.requests_log == []
    # Trusting its certificate as a CA works (it carries 127.0.0.1 as a SAN).
    trusted = proxy_driver(proxy, tls=TlsOptions(ca_pem=proxy.ca_pem))
    assert call(trusted, "stats")["cache_entries"] == 0


# ---- the proxy's own failures ------------------------------------------------------------


def test_read_only_store_is_unsupported(proxy_double: MakeDouble, proxy_driver: MakeDriver) -> None:
    px = proxy_double(read_only=True, mappings={"a@x.test": "legacy"})
    driver = proxy_driver(px)
    for action, params in (
        ("mapping.set", {"identifier": "a@x.test", "destination": "stalwart"}),
        ("mapping.delete", {"identifier": "a@x.test"}),
    ):
        err = fails(driver, action, params)
        assert (err.type, err.code, err.retryable) == (ErrorType.UNSUPPORTED, 501, False)
        assert "read-only" in err.message and "cutover" in err.message
        assert err.details["body"] == "mapping store is read-only"
    assert px.mapping_of("a@x.test") == "legacy"
    assert call(driver, "mapping.get", {"identifier": "a@x.test"})["destination"] == "legacy"


def test_injected_500_is_a_retryable_command_error_for_that_account_only(
    proxy: ProxyDouble, proxy_driver: MakeDriver
) -> None:
    driver = proxy_driver(proxy)
    proxy.inject("PUT", "/mappings", 500, "upsert failed\n", identifier="B@x.test")
    assert call(driver, "mapping.set", {"identifier": "a@x.test", "destination": "stalwart"}) == {
        "ok": True
    }
    err = fails(driver, "mapping.set", {"identifier": "b@x.test", "destination": "stalwart"})
    assert (err.type, err.code, err.retryable) == (ErrorType.COMMAND, 500, True)
    assert err.details["body"] == "upsert failed"
    assert proxy.mapping_of("b@x.test") is None  # an injected failure has no effect
    # times=1: the caller's retry goes through; a 500 did not poison the instance.
    assert call(driver, "mapping.set", {"identifier": "b@x.test", "destination": "stalwart"}) == {
        "ok": True
    }
    assert proxy.mapping_of("b@x.test") == "stalwart"

    proxy.inject("DELETE", "/mappings", 500, "remove failed\n")
    proxy.inject("POST", "/mappings/reload", 500, "reload failed\n")
    assert fails(driver, "mapping.delete", {"identifier": "a@x.test"}).retryable is True
    assert fails(driver, "mappings.reload").retryable is True
    other = proxy.inject  # an unknown 500 body is not assumed transient
    other("GET", "/stats", 500, "panicked\n")
    assert fails(driver, "stats").retryable is False


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (404, "not found\n", ErrorType.UNSUPPORTED),
        (405, "method not allowed\n", ErrorType.UNSUPPORTED),
        (400, "identifier required\n", ErrorType.INVALID_PARAMS),
        (502, "bad gateway\n", ErrorType.COMMAND),
    ],
)
def test_status_mapping(
    proxy: ProxyDouble, proxy_driver: MakeDriver, status: int, body: str, kind: ErrorType
) -> None:
    proxy.inject("POST", "/connections/kick", status, body)
    err = fails(proxy_driver(proxy), "connections.kick", {"identifier": "a@x.test"})
    assert (err.type, err.code) == (kind, status)
    assert err.details["body"] == body.strip()


def test_unexpected_success_body_is_a_command_error(
    proxy: ProxyDouble, proxy_driver: MakeDriver
) -> None:
    proxy.inject("POST", "/connections/kick", 200, "booted three\n")
    err = fails(proxy_driver(proxy), "connections.kick", {"identifier": "a@x.test"})
    assert (err.type, err.code) == (ErrorType.COMMAND, 200)


def test_config_reload_failures(proxy_double: MakeDouble, proxy_driver: MakeDriver) -> None:
    broken = proxy_double(config_reload="fail")
    err = fails(proxy_driver(broken), "config.reload")
    assert (err.type, err.code, err.retryable) == (ErrorType.COMMAND, 400, False)
    assert "reload failed: invalid value" in err.message

    unavailable = proxy_double(config_reload="unavailable")
    err = fails(proxy_driver(unavailable), "config.reload")
    assert (err.type, err.code) == (ErrorType.UNSUPPORTED, 503)
    assert err.details["body"] == "config reload not available"


# ---- transport ---------------------------------------------------------------------------


def test_dead_proxy_is_a_connection_error_until_revived(
    proxy: ProxyDouble, proxy_driver: MakeDriver
) -> None:
    driver = proxy_driver(proxy)
    call(driver, "mapping.set", {"identifier": "a@x.test", "destination": "stalwart"})
    proxy.die()
    err = fails(driver, "mapping.get", {"identifier": "a@x.test"})
    assert (err.type, err.retryable) == (ErrorType.CONNECTION, True)
    assert "refused" in err.message
    proxy.revive()
    # The same instance may go on (a connection error is not a lockout); state survived.
    assert call(driver, "mapping.get", {"identifier": "a@x.test"})["destination"] == "stalwart"


def test_dying_mid_request_drops_the_connection(
    proxy_double: MakeDouble, proxy_driver: MakeDriver
) -> None:
    px = proxy_double(latency=3.0)
    killer = threading.Timer(0.3, px.die)
    killer.start()
    started = time.monotonic()
    err = fails(proxy_driver(px), "connections.kick", {"identifier": "a@x.test"})
    killer.join()
    assert err.type == ErrorType.CONNECTION
    assert time.monotonic() - started < 2.0
    assert px.requests_to("/connections/kick")[0].status == 200  # it was handled, not answered


def test_latency_beyond_the_deadline_is_a_timeout(
    proxy_double: MakeDouble, proxy_driver: MakeDriver
) -> None:
    px = proxy_double(latency=1.5)
    driver = proxy_driver(px)
    started = time.monotonic()
    deadline = Deadline.after(0.4)
    with pytest.raises(HostError) as info:
        driver.perform("stats", {}, deadline)
    assert info.value.type == ErrorType.TIMEOUT
    assert time.monotonic() - started < 1.2
    assert deadline.attempts == 1
    assert len(px.requests_log) == 1  # it was sent

    # With no time left nothing is sent at all.
    gone = Deadline.after(0)
    with pytest.raises(HostError) as info:
        driver.perform("stats", {}, gone)
    assert info.value.type == ErrorType.TIMEOUT and gone.attempts == 0
    assert len(px.requests_log) == 1


# ---- the double's exact wire behaviour ---------------------------------------------------


def test_plain_and_json_answers_are_exact(proxy: ProxyDouble) -> None:
    health = raw(proxy, "GET", "/healthz", token=None)
    assert (health.status_code, health.text) == (200, "ok\n")
    assert health.headers["Content-Type"].startswith("text/plain")
    assert health.headers["Connection"] == "close"
    assert health.headers["Content-Length"] == "3"

    stats = raw(proxy, "GET", "/stats/")  # trailing slash stripped
    assert stats.status_code == 200
    assert stats.headers["Content-Type"] == "application/json"
    assert stats.headers["Connection"] == "close"
    assert int(stats.headers["Content-Length"]) == len(stats.content)
    assert stats.json()["hit_rate_pct"] == 0.0

    cases = [
        ("GET", "/stats", None, 401, "unauthorized\n"),
        ("GET", "/nowhere", None, 401, "unauthorized\n"),  # auth comes before routing
        ("GET", "/nowhere", "", 404, "not found\n"),
        ("DELETE", "/stats", "", 405, "method not allowed\n"),
        ("POST", "/healthz", None, 405, "method not allowed\n"),
        ("GET", "/mappings", "", 400, "identifier required\n"),
        ("PUT", "/mappings?identifier=a", "", 400, "identifier and destination required\n"),
        ("POST", "/destinations/reset", "", 400, "destination required\n"),
        ("POST", "/destinations/reset?destination=x", "", 404, "unknown destination\n"),
        ("POST", "/connections/kick/", "", 400, "identifier required\n"),
        ("POST", "/connections/delay?identifier=a", "", 400, "identifier and seconds required\n"),
        ("POST", "/connections/delay?identifier=a&seconds=-1", "", 400, "invalid seconds\n"),
        ("POST", "/connections/delay?identifier=a&seconds=1.5", "", 400, "invalid seconds\n"),
        ("DELETE", "/mappings?identifier=nobody", "", 200, "absent\n"),
        ("POST", "/mappings/reload", "", 200, "reloaded\n"),
        ("POST", "/cache/invalidate", "", 200, "ok\n"),
        ("POST", "/connections/kick?identifier=a", "", 200, "kicked 0\n"),
    ]
    for method, target, token, status, body in cases:
        answer = raw(proxy, method, target, token=token)
        assert (answer.status_code, answer.text) == (status, body), (method, target)
        assert answer.headers["Content-Type"].startswith("text/plain")
        assert answer.headers["Connection"] == "close"
    assert proxy.failed_auths() == 0  # the successes after the two 401s cleared the count
    assert all("Bearer" not in str(r) for r in proxy.requests_log)


def test_query_is_percent_decoded_and_first_occurrence_wins(proxy: ProxyDouble) -> None:
    answer = raw(
        proxy,
        "PUT",
        "/mappings?identifier=Dan%2Btag%40X.test&identifier=eve%40x.test"
        "&destination=stalwart&destination=legacy",
    )
    assert (answer.status_code, answer.text) == (200, "ok\n")
    assert proxy.mappings == {"dan+tag@x.test": "stalwart"}
    looked = raw(proxy, "GET", "/mappings?identifier=DAN%2BTAG%40x.test").json()
    assert looked == {
        "identifier": "DAN+TAG@x.test",
        "normalized": "dan+tag@x.test",
        "destination": "stalwart",
        "routed_to_default": False,
        "cached": False,
    }
    assert proxy.requests_log[0].query == {
        "identifier": "Dan+tag@X.test",
        "destination": "stalwart",
    }


def test_lockout_is_checked_before_the_request_is_parsed(proxy_double: MakeDouble) -> None:
    px = proxy_double(lockout_threshold=1)
    assert raw_bytes(px, b"this is not http\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw(px, "GET", "/stats", token=WRONG_TOKEN).status_code == 401
    answer = raw_bytes(px, b"this is not http\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429 ")
    assert b"connection: close" in head.lower() and b"content-type: text/plain" in head.lower()
    assert body == b"locked out\n"
    health = raw(px, "GET", "/healthz", token=None)
    assert (health.status_code, health.text) == (429, "locked out\n")


# ---- several doubles side by side --------------------------------------------------------


def test_three_doubles_serve_concurrent_work(
    proxy_double: MakeDouble, proxy_driver: MakeDriver
) -> None:
    started = time.perf_counter()
    doubles = [proxy_double(destinations=("legacy", "stalwart")) for _ in range(3)]
    assert time.perf_counter() - started < 1.0
    assert len({d.port for d in doubles}) == 3
    assert len({d.fingerprint_sha256 for d in doubles}) == 3
    drivers = [proxy_driver(d, max_concurrency=8) for d in doubles]
    accounts = [f"user{i}@x.test" for i in range(20)]

    def flip(job: tuple[ProxyDriver, str]) -> Any:
        driver, account = job
        return call(driver, "mapping.set", {"identifier": account, "destination": "stalwart"})

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(flip, [(d, a) for d in drivers for a in accounts]))
    assert results == [{"ok": True}] * 60
    for double in doubles:
        assert double.mappings == dict.fromkeys(accounts, "stalwart")
        assert len(double.requests_log) == 20
