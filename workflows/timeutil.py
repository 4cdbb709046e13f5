"""Event time: integer microseconds since the Unix epoch, parsed from and written as RFC 3339.

The core never reads a clock. Every instant it handles comes from an event's ``time`` field,
and integers keep arithmetic exact, so the same input gives the same output byte for byte.

The range is bounded so that no instant the engine handles can overflow Python's ``datetime``
(years 1 to 9999) when it is written out: an input's time must lie in
[:data:`MIN_TIME`, :data:`MAX_TIME`) (:func:`parse_event_time`), and a duration of the policy
is at most :data:`MAX_DURATION` (:func:`parse_duration`). The latest instant the engine ever
formats is a deadline, an input's time plus at most twice a duration (the second escalation),
and :data:`LATEST_FORMATTED` leaves more than a day before year 10000 for any time zone.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

__all__ = [
    "LATEST_FORMATTED",
    "MAX_DURATION",
    "MAX_TIME",
    "MIN_TIME",
    "SECOND",
    "format_compact",
    "format_duration",
    "format_local",
    "format_offset",
    "format_time",
    "parse_duration",
    "parse_event_time",
    "parse_time",
]

SECOND = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_UNITS = {"ms": 1_000, "s": SECOND, "m": 60 * SECOND, "h": 3600 * SECOND, "d": 86400 * SECOND}
_DURATION = re.compile(r"^([0-9]+)(ms|s|m|h|d)$")

#: The earliest event time an input may carry: 1970-01-01T00:00:00Z.
MIN_TIME: Final = 0
#: An input's time must be before 9000-01-01T00:00:00Z. The schemas admit any year of four
#: digits with an offset of up to 23:59 (``9999-12-31T23:59:59-23:59`` is in year 10000 in
#: UTC); what is refused here is refused at decode, with the reason ``bad-time``.
MAX_TIME: Final = (datetime(9000, 1, 1, tzinfo=UTC) - _EPOCH) // _ONE_US
#: The longest duration a policy may set: 36500 days (100 years).
MAX_DURATION: Final = 36500 * _UNITS["d"]
#: The latest instant the engine formats: an input's time plus twice the longest duration.
LATEST_FORMATTED: Final = MAX_TIME + 2 * MAX_DURATION

# Probes stamp many events with the same second; a bounded cache of parsed strings turns the
# ~1 us parse into a dict hit on the hot path. Cleared wholesale when full: no eviction order
# to get wrong, and the result never depends on what is cached.
_PARSED: dict[str, int] = {}
_PARSED_MAX = 8192


def parse_time(text: str) -> int:
    """Parse an RFC 3339 timestamp with a zone into microseconds since the epoch.

    Raises:
        ValueError: the text is not a valid timestamp or has no zone.
    """
    try:
        return _PARSED[text]  # the hot path: no call to .get, no comparison with None
    except KeyError:
        pass
    micros = _parse(text)
    if MIN_TIME <= micros < MAX_TIME:  # the cache holds only what parse_event_time accepts
        _remember(text, micros)
    return micros


def parse_event_time(text: str) -> int:
    """:func:`parse_time` for an input's time: only [:data:`MIN_TIME`, :data:`MAX_TIME`).

    Raises:
        ValueError: not a valid timestamp, no zone, or outside the range.
    """
    try:
        return _PARSED[text]
    except KeyError:
        pass
    micros = _parse(text)
    if not MIN_TIME <= micros < MAX_TIME:
        raise ValueError(
            f"{text[:64]!r} is outside the times the engine accepts, from "
            f"{format_time(MIN_TIME)} to before {format_time(MAX_TIME)}"
        )
    _remember(text, micros)
    return micros


def _parse(text: str) -> int:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text[:64]!r} has no time zone")
    # The difference of two aware datetimes never overflows: it is computed as a timedelta
    # (years 1 to 9999 with any offset fit), not as a UTC datetime.
    return (moment - _EPOCH) // _ONE_US


def _remember(text: str, micros: int) -> None:
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[text] = micros


def _utc(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


# Stage 2 formats the same few instants over and over (when a condition began, for the
# detail of every condition it weighs): a small cache spares most strftime calls.
@functools.lru_cache(maxsize=1024)
def format_time(micros: int) -> str:
    """RFC 3339 in UTC with a ``Z``; fractional seconds only when there are any."""
    moment = _utc(micros)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# A state record repeats its service's ``since`` until the next transition: cached too.
@functools.lru_cache(maxsize=1024)
def format_offset(micros: int, zone: ZoneInfo) -> str:
    """RFC 3339 with the offset of ``zone`` at that instant (``2019-02-05T08:12:00+09:00``);
    fractional seconds only when there are any. UTC itself is written ``+00:00``. A zone
    whose offset then had seconds (Africa/Monrovia until 1972) has no RFC 3339 form with its
    offset: that instant is written in UTC, as :func:`format_time` does."""
    local = _utc(micros).astimezone(zone)
    offset = local.utcoffset()
    if offset is None or offset.seconds % 60:
        return format_time(micros)
    return local.isoformat(timespec="microseconds" if local.microsecond else "seconds")


def format_compact(micros: int) -> str:
    """``20190205T004300Z``: for identifiers."""
    return _utc(micros).strftime("%Y%m%dT%H%M%SZ")


_MONTHS_ID = (
    "Januari", "Februari", "Maret", "April", "Mei", "Juni",
    "Juli", "Agustus", "September", "Oktober", "November", "Desember",
)  # fmt: skip
_MONTHS_EN = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


def format_local(micros: int, zone: ZoneInfo, language: str) -> str:
    """The instant as people at the site read it, e.g. ``5 Februari 2019 pukul 08.43 WIT``."""
    local = _utc(micros).astimezone(zone)
    abbreviation = local.tzname() or zone.key
    if language == "id":
        month = _MONTHS_ID[local.month - 1]
        return f"{local.day} {month} {local.year} pukul {local:%H.%M} {abbreviation}"
    month = _MONTHS_EN[local.month - 1]
    return f"{local.day} {month} {local.year} at {local:%H:%M} {abbreviation}"


def parse_duration(text: str) -> int:
    """``"90s"``, ``"5m"``, ``"4h"``, ``"1d"``, ``"250ms"`` into microseconds.

    Raises:
        ValueError: not a whole number followed by one of ms, s, m, h, d; or longer than
            :data:`MAX_DURATION`.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(
            f"{text[:64]!r} is not a duration (a whole number and one of ms, s, m, h, d)"
        )
    digits, unit = match.groups()
    # Compared before int(): a string of 100,000 digits would cost int() a quadratic parse.
    limit = MAX_DURATION // _UNITS[unit]
    if len(digits.lstrip("0")) > len(str(limit)) or int(digits) > limit:
        raise ValueError(
            f"{text[:64]!r} is longer than {limit}{unit} (36500 days), the most a duration may be"
        )
    return int(digits) * _UNITS[unit]


@functools.lru_cache(maxsize=256)  # a topology has a handful of distinct durations
def format_duration(micros: int) -> str:
    """The largest unit that divides the duration exactly: ``300000000`` gives ``5m``."""
    for unit in ("d", "h", "m", "s", "ms"):
        size = _UNITS[unit]
        if micros % size == 0:
            return f"{micros // size}{unit}"
    return f"{micros}us"
