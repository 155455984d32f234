"""The small rules, each on its own and in milliseconds: counts and percentages, the final
status of a job and of a cutover, page tokens, redaction, and what a job request accepts.
The integration tests show the same rules through the API; these say which rule broke."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from mailfleet.logic.cutovers import cutover_status
from mailfleet.logic.job_records import final_status
from mailfleet.models.common import (
    CONCURRENCY_SCHEMA,
    COUNT_OR_PERCENT_SCHEMA,
    MAX_COUNT,
    resolve_limit,
)
from mailfleet.models.cutovers import CutoverStatus
from mailfleet.models.jobs import JobRequest, JobStatus, Targets
from mailfleet.redact import REDACTED, is_secret_name, mask_values, redact
from mailfleet.store.base import BadPageToken, decode_page, decode_state, encode_page

TARGETS = {"hosts": ["dc-1"]}


def job(**fields: Any) -> JobRequest:
    return JobRequest.model_validate({"action": "who", "targets": TARGETS, **fields})


def refusal(**fields: Any) -> dict[str, Any]:
    """The one validation error a job request with `fields` gets."""
    with pytest.raises(ValidationError) as info:
        job(**fields)
    errors = info.value.errors()
    assert len(errors) == 1, errors
    return dict(errors[0])


# ---------------------------------------------------------------------- counts, percentages
@pytest.mark.parametrize(("given", "kept"), [
    (0, 0), (7, 7), (MAX_COUNT, MAX_COUNT), ("12", 12), (" 3 ", 3),
    ("10%", "10%"), (" 10 % ", "10%"), ("0.5%", "0.5%"), ("100%", "100%"), ("100.0%", "100%"),
])
def test_max_errors_takes_a_count_or_a_percentage(given: Any, kept: Any) -> None:
    assert job(max_errors=given).max_errors == kept


@pytest.mark.parametrize("given", [
    -1, MAX_COUNT + 1, True, 1.5, "0%", "101%", "-5%", "10 percent", "%", "", "12345678", None,
])
def test_max_errors_refuses_anything_else(given: Any) -> None:
    if given is None:  # None is "no limit", not a refusal
        assert job(max_errors=None).max_errors is None
        return
    assert refusal(max_errors=given)["loc"] == ("max_errors",)


@pytest.mark.parametrize("given", [0, "0", "0%"])
def test_max_concurrency_is_never_zero(given: Any) -> None:
    assert refusal(max_concurrency=given)["loc"] == ("max_concurrency",)


def test_max_concurrency_defaults_to_50_and_takes_a_percentage() -> None:
    assert job().max_concurrency == 50
    assert job(max_concurrency="25%").max_concurrency == "25%"


@pytest.mark.parametrize(("limit", "total", "minimum", "count"), [
    (None, 10, 0, None),
    (5, 1000, 0, 5),
    (0, 10, 1, 1),         # a minimum wins over a smaller count
    ("10%", 25, 0, 3),     # 2.5 rounds up
    ("10%", 20, 0, 2),     # exact stays exact
    ("0.5%", 1000, 0, 5),
    ("0.1%", 10, 0, 1),    # a percentage of a few hosts is still at least one
    ("100%", 7, 0, 7),
    ("50%", 0, 1, 1),
])
def test_resolve_limit(limit: Any, total: int, minimum: int, count: int | None) -> None:
    assert resolve_limit(limit, total, minimum=minimum) == count


def _schema_accepts(schema: dict[str, Any], value: Any) -> bool:
    for option in schema["anyOf"]:
        if option["type"] == "integer" and isinstance(value, int):
            if option["minimum"] <= value <= option["maximum"]:
                return True
        if option["type"] == "string" and isinstance(value, str):
            if re.search(option["pattern"], value):
                return True
    return False


SAMPLES = [0, 1, 50, MAX_COUNT, MAX_COUNT + 1, -1, "1", "0", "0000001", "9999999", "10000000",
           "10%", "0%", "0.0%", "0.01%", "100%", "100.00%", "100.5%", "101%", "5.%", " 7 % ",
           "abc", "", "%", "1e3"]


@pytest.mark.parametrize("value", SAMPLES)
def test_the_published_schemas_say_what_the_validators_do(value: Any) -> None:
    # Generated clients and the fuzzer go by the OpenAPI's patterns: they must not drift.
    def accepted(**fields: Any) -> bool:
        try:
            job(**fields)
        except ValidationError:
            return False
        return True

    assert _schema_accepts(COUNT_OR_PERCENT_SCHEMA, value) == accepted(max_errors=value)
    assert _schema_accepts(CONCURRENCY_SCHEMA, value) == accepted(max_concurrency=value)


# ---------------------------------------------------------------------- final status
@pytest.mark.parametrize(("counts", "cancelled", "status"), [
    ({"SUCCEEDED": 3}, False, JobStatus.SUCCEEDED),
    ({"SUCCEEDED": 2, "FAILED": 1}, False, JobStatus.PARTIAL),
    ({"SUCCEEDED": 1, "SKIPPED": 4}, False, JobStatus.PARTIAL),
    ({"FAILED": 1, "TIMED_OUT": 2}, False, JobStatus.FAILED),
    ({"SKIPPED": 3}, False, JobStatus.FAILED),   # nothing ran: not a success
    ({}, False, JobStatus.FAILED),
    ({"SUCCEEDED": 3}, True, JobStatus.CANCELLED),  # a cancel wins, whatever ran
])
def test_a_jobs_final_status(counts: dict[str, int], cancelled: bool, status: JobStatus
                             ) -> None:
    assert final_status(counts, cancelled=cancelled) is status


@pytest.mark.parametrize(("counts", "total", "failed", "status"), [
    ({"DONE": 4}, 4, False, CutoverStatus.SUCCEEDED),
    ({"DONE": 4}, 4, True, CutoverStatus.PARTIAL),    # every account done, the run failed
    ({"DONE": 3, "FAILED": 1}, 4, False, CutoverStatus.PARTIAL),
    ({"DONE": 3}, 4, False, CutoverStatus.PARTIAL),   # one account never got its turn
    ({"FAILED": 4}, 4, False, CutoverStatus.FAILED),
    ({}, 0, False, CutoverStatus.FAILED),
])
def test_a_cutovers_final_status(counts: dict[str, int], total: int, failed: bool,
                                 status: CutoverStatus) -> None:
    assert cutover_status(counts, total, failed=failed) is status


# ---------------------------------------------------------------------- page tokens
@pytest.mark.parametrize("key", [
    {"id": "dc-1"},
    {"job_id": "01JD5", "host": "h-0001"},
    {"chain": "main", "seq": 42},
    {"pk": "ü/ünï+cödé=", "n": 1.5},
])
def test_a_page_token_gives_back_its_key(key: dict[str, Any]) -> None:
    token = encode_page(key)
    assert token is not None and "=" not in token and re.fullmatch(r"[A-Za-z0-9_-]+", token)
    back = decode_page(token)
    assert back is not None
    # DynamoDB numbers come back as Decimal, as boto3 wants them in ExclusiveStartKey.
    assert back == {k: Decimal(str(v)) if isinstance(v, int | float) else v
                    for k, v in key.items()}


def test_no_key_is_no_token_and_no_token_is_no_key() -> None:
    assert encode_page(None) is None and encode_page({}) is None
    assert decode_page(None) is None and decode_page("") is None


def _token(raw: str) -> str:
    import base64

    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize("token", [
    "not a token!",
    "%%%",
    _token("[1, 2]"),                                   # not a key
    _token('"id"'),
    _token("{}"),                                       # no attribute
    _token('{"a":1,"b":2,"c":3,"d":4,"e":5}'),          # more than a table key has
    _token('{"id": true}'),                             # not a string or a number
    _token('{"id": {"S": "x"}}'),
    _token('{"id": null}'),
    _token('{"id": "' + "x" * 8193 + '"}'),             # longer than any key we give out
    _token("\xff\xfe"),
])
def test_a_token_we_did_not_give_out_is_refused(token: str) -> None:
    with pytest.raises(BadPageToken, match="not one this API gave out"):
        decode_page(token)


def test_a_state_token_keeps_its_shape_for_its_caller_to_check() -> None:
    assert decode_state(_token('{"state": [1, 2], "next": "x"}')) == {"state": [1, 2],
                                                                     "next": "x"}


# ---------------------------------------------------------------------- redaction
@pytest.mark.parametrize("name", [
    "password", "new_password", "Passwd", "passphrase", "secret", "client_secret", "token",
    "newtoken", "api_key", "apikey", "API_Key", "credentials", "private_key", "auth",
    "relay_auth", "hash", "pw", "pwd", "ldap_bind_pw", "user.pwd",
])
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", [
    "user", "mask", "upward", "spwd", "pwdx", "host", "credentials_secret",
    "shares_credentials_with", "identifier", "destination",
])
def test_names_that_are_not_secrets(name: str) -> None:
    assert not is_secret_name(name)


def test_redact_masks_secret_fields_at_any_depth_and_keeps_the_rest() -> None:
    value = {
        "user": "alice",
        "password": "hunter2-long",
        "nested": [{"api_key": "k-123456", "port": 993}, {"token": None}],
        "credentials_secret": "mailfleet/hosts/dc-1",  # a reference, shown in the audit
        "list": ["password"],  # a value that looks like a name is only a value
    }
    assert redact(value) == {
        "user": "alice",
        "password": REDACTED,
        "nested": [{"api_key": REDACTED, "port": 993}, {"token": None}],  # nothing to hide
        "credentials_secret": "mailfleet/hosts/dc-1",
        "list": ["password"],
    }
    assert value["password"] == "hunter2-long"  # a copy: the input is left as it was


def test_mask_values_is_the_net_behind_the_names() -> None:
    secret = "s3cret-value"
    output = {
        "line": f"login as bob with {secret} failed",
        secret: "a key that is the secret",
        "rows": [("ab", secret), "ab is short", 7],
    }
    masked = mask_values(output, [secret, "ab", ""])
    assert masked == {
        "line": f"login as bob with {REDACTED} failed",
        REDACTED: "a key that is the secret",
        # A short credential is masked only where it is the whole value: searching for it
        # inside other strings would mask half of every output.
        "rows": [[REDACTED, REDACTED], "ab is short", 7],
    }
    assert mask_values(output, []) is output and mask_values(output, [""]) is output


# ---------------------------------------------------------------------- job requests
def test_a_minimal_job_request_gets_the_documented_defaults() -> None:
    request = job()
    assert (request.params, request.max_concurrency, request.max_errors,
            request.timeout_seconds, request.dry_run) == ({}, 50, None, 30, False)


@pytest.mark.parametrize(("fields", "where"), [
    ({"action": ""}, ("action",)),
    ({"action": "x" * 129}, ("action",)),
    ({"unknown": 1}, ("unknown",)),
    ({"timeout_seconds": 0}, ("timeout_seconds",)),
    ({"timeout_seconds": 3601}, ("timeout_seconds",)),
    ({"timeout_seconds": "30"}, ("timeout_seconds",)),  # strict: a number, not a string
    ({"schedule": "s" * 65}, ("schedule",)),
    ({"confirm": "c" * 201}, ("confirm",)),
    ({"targets": {"hosts": []}}, ("targets", "hosts")),
    ({"targets": {"hosts": ["dc-1"], "extra": 1}}, ("targets", "extra")),
])
def test_a_bad_job_request_names_the_field(fields: dict[str, Any], where: tuple[str, ...]
                                           ) -> None:
    assert refusal(**fields)["loc"] == where


@pytest.mark.parametrize(("targets", "reason"), [
    ({"hosts": ["dc-1"], "kind": "dovecot"}, "not both"),
    ({"tags": {"site": "a"}}, "give hosts, or a kind"),
    ({}, "give hosts, or a kind"),
])
def test_targets_are_hosts_or_a_kind_with_tags(targets: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        Targets.model_validate(targets)


def test_each_target_host_once_in_the_order_given() -> None:
    assert Targets(hosts=["b", "a", "b", "c", "a"]).hosts == ["b", "a", "c"]
