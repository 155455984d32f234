"""EventBridge schedule expressions: what AWS accepts, what it refuses (with the part
named), and when each one runs next."""

from __future__ import annotations

import datetime as dt

import pytest

from mailfleet.schedule_expressions import (
    Cron,
    ExpressionError,
    Rate,
    check_timezone,
    next_run,
    parse,
)

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize("text, seconds", [
    ("rate(1 minute)", 60), ("rate(5 minutes)", 300), ("rate(1 hour)", 3600),
    ("rate(12 hours)", 43200), ("rate(1 day)", 86400), ("rate(7 days)", 604800),
])
def test_rates(text: str, seconds: int) -> None:
    assert parse(text) == Rate(seconds)


@pytest.mark.parametrize("text, why", [
    ("rate(1 minutes)", "singular for 1"),
    ("rate(5 minute)", "plural otherwise"),
    ("rate(0 minutes)", "positive"),
    ("rate(5 weeks)", "minute(s), hour(s) or day(s)"),
    ("rate(five minutes)", "whole number"),
    ("rate(5minutes)", "rate(value unit)"),
    ("every 5 minutes", "must be rate"),
])
def test_bad_rates(text: str, why: str) -> None:
    with pytest.raises(ExpressionError, match=why.replace("(", r"\(").replace(")", r"\)")):
        parse(text)


@pytest.mark.parametrize("text", [
    "cron(0 2 * * ? *)", "cron(0/15 * * * ? *)", "cron(0 18 ? * MON-FRI *)",
    "cron(0 8 1 * ? *)", "cron(15 10 ? * 6L 2026-2030)", "cron(0 9 ? * 2#1 *)",
    "cron(0 0 L * ? *)", "cron(0 0 15W * ? *)", "cron(5,35 14 * JAN,JUL ? *)",
    "cron(0 12 ? * SUN,SAT *)", "cron(0 0 ? * L *)",
])
def test_crons_aws_accepts(text: str) -> None:
    assert isinstance(parse(text), Cron)


@pytest.mark.parametrize("text, why", [
    ("cron(0 2 * * *)", "6 fields"),
    ("cron(0 2 * * * * *)", "6 fields"),
    ("cron(0 2 * * * *)", "exactly one of day-of-month and day-of-week"),
    ("cron(0 2 ? * ? *)", "exactly one of day-of-month and day-of-week"),
    ("cron(60 2 * * ? *)", "minutes field: 60 is outside 0-59"),
    ("cron(0 24 * * ? *)", "hours field: 24 is outside 0-23"),
    ("cron(0 2 32 * ? *)", "day-of-month field: 32"),
    ("cron(0 2 ? * 8 *)", "day-of-week field: 8"),
    ("cron(0 2 ? * MON-XYZ *)", "day-of-week field: 'XYZ'"),
    ("cron(0 2 * FOO ? *)", "month field: 'FOO'"),
    ("cron(0 2 ? * 2#6 *)", "1-5"),
    ("cron(0 2 * * ? 1969)", "year field: 1969"),
    ("cron(0 2 * * ? 2020)", "never fires again"),
    ("cron(0/0 2 * * ? *)", "step"),
    ("cron(10-5 2 * * ? *)", "backwards"),
    ("cron(0 2 * * ? *", "closing parenthesis"),
])
def test_bad_crons_name_the_field(text: str, why: str) -> None:
    with pytest.raises(ExpressionError, match=why.replace("(", r"\(")):
        parse(text)


def test_rate_runs_count_from_the_anchor() -> None:
    anchor = at("2026-11-21T10:00:00")
    assert next_run("rate(5 minutes)", at("2026-11-21T10:00:00"), anchor=anchor) == \
        at("2026-11-21T10:05:00")
    assert next_run("rate(5 minutes)", at("2026-11-21T10:07:30"), anchor=anchor) == \
        at("2026-11-21T10:10:00")


@pytest.mark.parametrize("text, after, expected", [
    ("cron(0 2 * * ? *)", "2026-11-21T10:00:00", "2026-11-22T02:00:00"),
    ("cron(0 2 * * ? *)", "2026-11-21T01:59:00", "2026-11-21T02:00:00"),
    ("cron(0/15 * * * ? *)", "2026-11-21T10:14:59", "2026-11-21T10:15:00"),
    ("cron(0/15 * * * ? *)", "2026-11-21T10:15:00", "2026-11-21T10:30:00"),
    # Day-of-week 1 is Sunday: 2026-11-21 is a Saturday.
    ("cron(0 18 ? * MON-FRI *)", "2026-11-21T12:00:00", "2026-11-23T18:00:00"),
    ("cron(0 9 ? * 1 *)", "2026-11-21T12:00:00", "2026-11-22T09:00:00"),
    ("cron(0 0 L * ? *)", "2026-02-03T00:00:00", "2026-02-28T00:00:00"),
    # The 15th of November 2026 is a Sunday: the nearest weekday is Monday the 16th.
    ("cron(0 0 15W * ? *)", "2026-11-01T00:00:00", "2026-11-16T00:00:00"),
    # The first Monday of December 2026, and the last Friday of November 2026.
    ("cron(0 9 ? * 2#1 *)", "2026-11-21T00:00:00", "2026-12-07T09:00:00"),
    ("cron(0 9 ? * 6L *)", "2026-11-01T00:00:00", "2026-11-27T09:00:00"),
    ("cron(0 0 1 JAN ? 2028)", "2026-11-21T00:00:00", "2028-01-01T00:00:00"),
])
def test_cron_next_run(text: str, after: str, expected: str) -> None:
    assert next_run(text, at(after)) == at(expected)


def test_cron_in_a_time_zone() -> None:
    # 02:00 in Berlin in winter (UTC+1) is 01:00 UTC.
    assert next_run("cron(0 2 * * ? *)", at("2026-11-21T10:00:00"),
                    timezone="Europe/Berlin") == at("2026-11-22T01:00:00")
    assert check_timezone("Europe/Berlin") == "Europe/Berlin"
    with pytest.raises(ExpressionError, match="IANA"):
        check_timezone("Mars/Olympus")
