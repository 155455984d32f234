"""EventBridge schedule expressions, `rate(...)` and `cron(...)`, as AWS reads them:
checked before a schedule is created (AWS would refuse a bad one with a vaguer message),
and evaluated for the next run (GET /schedules, and the local ticker that fires them).

cron has six fields: minutes hours day-of-month month day-of-week year. Day-of-week 1 is
Sunday. Exactly one of day-of-month and day-of-week is `?`. Wildcards: `, - * /` in
every field, `?` `L` `W` in day-of-month, `?` `L` `#` in day-of-week.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_MONTHS = {name: i for i, name in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1)}
_DAYS = {name: i for i, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], 1)}
_RATE = re.compile(r"^rate\((\d+) ([a-z]+)\)$")
_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
# How far ahead a next run is looked for: past it, a cron never fires again.
_HORIZON_YEARS = 6


class ExpressionError(ValueError):
    """A schedule expression AWS would refuse; the message says which part and why."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_FIELDS = (
    _Field("minutes", 0, 59),
    _Field("hours", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day-of-week", 1, 7, _DAYS),
    _Field("year", 1970, 2199),
)


@dataclass(frozen=True)
class Rate:
    seconds: int

    def next_after(self, after: dt.datetime, anchor: dt.datetime) -> dt.datetime:
        """The first run after `after`, runs falling every `seconds` from `anchor`."""
        if after < anchor:
            return anchor + dt.timedelta(seconds=self.seconds)
        periods = int((after - anchor).total_seconds() // self.seconds) + 1
        return anchor + dt.timedelta(seconds=periods * self.seconds)


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: tuple[str, ...]  # day-of-month terms, kept raw: L and W depend on the month
    months: frozenset[int]
    weekdays: tuple[str, ...]  # day-of-week terms, raw: L and # depend on the month
    years: frozenset[int]

    def next_after(self, after: dt.datetime, timezone: str | None = None) -> dt.datetime | None:
        """The first run strictly after `after` (aware, any zone), in UTC; None if never."""
        zone = ZoneInfo(timezone) if timezone else dt.UTC
        local = after.astimezone(zone).replace(second=0, microsecond=0) \
            + dt.timedelta(minutes=1)
        day = local.date()
        for _ in range(366 * _HORIZON_YEARS):
            if self._day_matches(day):
                start = (local.hour, local.minute) if day == local.date() else (0, 0)
                for hour in sorted(h for h in self.hours if h >= start[0]):
                    low = start[1] if hour == start[0] else 0
                    minute = min((m for m in self.minutes if m >= low), default=None)
                    if minute is not None:
                        when = dt.datetime(day.year, day.month, day.day, hour, minute,
                                           tzinfo=zone)
                        return when.astimezone(dt.UTC)
            day += dt.timedelta(days=1)
        return None

    def _day_matches(self, day: dt.date) -> bool:
        if day.year not in self.years or day.month not in self.months:
            return False
        if self.days != ("?",):
            return any(_dom_matches(term, day) for term in self.days)
        return any(_dow_matches(term, day) for term in self.weekdays)


Expression = Rate | Cron


def parse(expression: str) -> Expression:
    """A rate(...) or cron(...) expression, or ExpressionError saying what is wrong."""
    text = expression.strip()
    if text.startswith("rate("):
        return _rate(text)
    if text.startswith("cron("):
        return _cron(text)
    raise ExpressionError("must be rate(value unit), e.g. rate(5 minutes), or "
                          "cron(minutes hours day-of-month month day-of-week year)")


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ExpressionError(f"{name!r} is not an IANA time zone, e.g. Europe/Berlin") from None
    return name


def next_run(expression: str, after: dt.datetime, *, anchor: dt.datetime | None = None,
             timezone: str | None = None) -> dt.datetime | None:
    parsed = parse(expression)
    if isinstance(parsed, Rate):
        return parsed.next_after(after, anchor or after)
    return parsed.next_after(after, timezone)


# ---------------------------------------------------------------- rate


def _rate(text: str) -> Rate:
    match = _RATE.match(text)
    if match is None:
        raise ExpressionError("rate must be rate(value unit) with a whole number and one of "
                              "minute(s), hour(s), day(s), e.g. rate(5 minutes)")
    value, unit = int(match.group(1)), match.group(2)
    singular = unit.removesuffix("s")
    if singular not in _UNITS:
        raise ExpressionError(f"rate unit {unit!r} must be minute(s), hour(s) or day(s)")
    if value < 1:
        raise ExpressionError("rate value must be a positive whole number")
    if (value == 1) != (unit == singular):
        want = singular if value == 1 else singular + "s"
        raise ExpressionError(f"rate({value} {unit}): AWS wants {want!r} here "
                              "(singular for 1, plural otherwise)")
    return Rate(value * _UNITS[singular])


# ---------------------------------------------------------------- cron


def _cron(text: str) -> Cron:
    if not text.endswith(")"):
        raise ExpressionError("cron(...) is missing its closing parenthesis")
    fields = text[len("cron("):-1].split()
    if len(fields) != 6:
        raise ExpressionError(f"cron needs 6 fields (minutes hours day-of-month month "
                              f"day-of-week year), got {len(fields)}")
    minutes, hours, dom, month, dow, year = fields
    if (dom == "?") == (dow == "?"):
        raise ExpressionError("cron: exactly one of day-of-month and day-of-week must be "
                              "'?' (AWS cannot take both, nor neither)")
    days = ("?",) if dom == "?" else tuple(_check_dom(t) for t in dom.split(","))
    weekdays = ("?",) if dow == "?" else tuple(_check_dow(t) for t in dow.split(","))
    cron = Cron(
        minutes=_values(minutes, _FIELDS[0]),
        hours=_values(hours, _FIELDS[1]),
        days=days,
        months=_values(month, _FIELDS[3]),
        weekdays=weekdays,
        years=_values(year, _FIELDS[5]),
    )
    if cron.next_after(dt.datetime.now(dt.UTC)) is None:
        raise ExpressionError("cron never fires again (every matching date is in the past)")
    return cron


def _number(token: str, field: _Field) -> int:
    upper = token.upper()
    if field.names and upper in field.names:
        return field.names[upper]
    if not token.isdigit():
        raise ExpressionError(f"cron {field.name} field: {token!r} is not a number"
                              + (" or a name" if field.names else ""))
    value = int(token)
    if not field.low <= value <= field.high:
        raise ExpressionError(f"cron {field.name} field: {value} is outside "
                              f"{field.low}-{field.high}")
    return value


def _values(text: str, field: _Field) -> frozenset[int]:
    """The values of a field made of `, - * /` terms."""
    out: set[int] = set()
    for term in text.split(","):
        base, slash, step_text = term.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ExpressionError(f"cron {field.name} field: step {step_text!r} must be a "
                                      "positive whole number")
            step = int(step_text)
        if base == "*":
            low, high = field.low, field.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _number(first, field), _number(last, field)
            if low > high:
                raise ExpressionError(f"cron {field.name} field: range {base!r} runs backwards")
        elif base:
            low = _number(base, field)
            high = field.high if slash else low
        else:
            raise ExpressionError(f"cron {field.name} field: empty term in {text!r}")
        out.update(range(low, high + 1, step))
    return frozenset(out)


def _check_dom(term: str) -> str:
    field = _FIELDS[2]
    if term in ("L", "LW"):
        return term
    if term.endswith("W"):
        _number(term[:-1], field)
        return term
    _values(term, field)
    return term


def _check_dow(term: str) -> str:
    field = _FIELDS[4]
    if term == "L":
        return term
    if "#" in term:
        day, _, nth = term.partition("#")
        _number(day, field)
        if not nth.isdigit() or not 1 <= int(nth) <= 5:
            raise ExpressionError(f"cron day-of-week field: {term!r}: the number after # "
                                  "must be 1-5 (which week of the month)")
        return term
    if term.endswith("L"):
        _number(term[:-1], field)
        return term
    _values(term, field)
    return term


def _weekday(day: dt.date) -> int:
    """AWS's day-of-week number: 1 Sunday ... 7 Saturday."""
    return (day.isoweekday() % 7) + 1


def _dom_matches(term: str, day: dt.date) -> bool:
    last = calendar.monthrange(day.year, day.month)[1]
    if term == "L":
        return day.day == last
    if term.endswith("W"):
        target = last if term == "LW" else min(int(term[:-1]), last)
        return day.day == _nearest_weekday(day.year, day.month, target, last)
    return day.day in _values(term, _FIELDS[2])


def _nearest_weekday(year: int, month: int, target: int, last: int) -> int:
    """Quartz's W: the weekday nearest `target`, never leaving the month."""
    weekday = dt.date(year, month, target).isoweekday()  # 6 Sat, 7 Sun
    if weekday == 6:
        return target - 1 if target > 1 else target + 2
    if weekday == 7:
        return target + 1 if target < last else target - 2
    return target


def _dow_matches(term: str, day: dt.date) -> bool:
    weekday = _weekday(day)
    last = calendar.monthrange(day.year, day.month)[1]
    if term == "L":
        return weekday == 7
    if "#" in term:
        wanted, _, nth = term.partition("#")
        return weekday == _number(wanted, _FIELDS[4]) and (day.day - 1) // 7 + 1 == int(nth)
    if term.endswith("L"):
        return weekday == _number(term[:-1], _FIELDS[4]) and day.day + 7 > last
    return weekday in _values(term, _FIELDS[4])
