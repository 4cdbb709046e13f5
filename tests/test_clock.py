"""Time no producer can hijack: the range of event times, durations, authenticated ticks, the
bound ahead of the worker's clock, and the replay report of a jump of the clock.

The three attacks this guards against, each replayed here:

- a tick at ``9999-12-31T23:59:59-23:59`` passed the schema and overflowed ``datetime`` when
  written: a crash on every start (now ``bad-time``);
- a forged tick at ``9999-12-31T23:59:59Z`` moved the clock so far that every later input was
  ``too-old``, for good (now ``bad-time`` in replay; on Kafka ``unauthenticated-tick``);
- one ``up`` reading dated 2030 hid a whole outage (on Kafka ``future-time``; in replay, a
  trusted file, the jump is reported with its line).
"""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from schemas import load_schema
from streams.codec import Origin, tick_event
from streams.config import Settings
from streams.partitions import OVERRIDES_SOURCE, LinkPartition, Routing, ServicePartition
from workflows.clock import TICK_AUTH, sign_tick, tick_reason, tick_tag
from workflows.inputs import INPUT_TYPES, TICK_KEY, decode, read_input
from workflows.readings import read_status
from workflows.recording import ClockJump, clock_jumps, describe_gap, describe_jump
from workflows.records import DeadLetter
from workflows.timeutil import (
    LATEST_FORMATTED,
    MAX_DURATION,
    MAX_TIME,
    MIN_TIME,
    SECOND,
    format_compact,
    format_local,
    format_time,
    parse_duration,
    parse_event_time,
    parse_time,
)
from workflows.topology import Topology, TopologyError

from .helpers import (
    at,
    dead_letters,
    make_topology,
    override,
    path,
    probe,
    raw,
    run,
    service,
    tick,
    topology_yaml,
)
from .test_stream_partitions import DictTable

KEY = b"k" * 32
#: The time pattern every input schema shares.
TIME_PATTERN = load_schema("clock.tick.v1")["properties"]["time"]["pattern"]
#: Zones at the ends of the offsets: +14, -12, and one with a historic local mean time.
ZONES = [ZoneInfo(z) for z in ("Pacific/Kiritimati", "Etc/GMT+12", "Asia/Jayapura", "UTC")]


def micros(text: str) -> int:
    return parse_time(text)


# ------------------------------------------------------------------------- the range


@pytest.mark.parametrize(
    "text",
    [
        "9999-12-31T23:59:59-23:59",  # year 10000 in UTC: the crash on every start
        "9999-12-31T23:59:59Z",  # the forged tick that froze the engine
        "9000-01-01T00:00:00Z",
        "8999-12-31T23:59:59-00:01",
        "0001-01-01T00:00:00+23:59",  # year 0 in UTC
        "1969-12-31T23:59:59.999999Z",
        "1970-01-01T00:00:00+00:01",
    ],
)
def test_times_outside_the_range_are_refused_with_a_reason(text: str) -> None:
    assert re.fullmatch(TIME_PATTERN.rstrip("$"), text), "the schema admits it"
    with pytest.raises(ValueError, match="outside the times the engine accepts"):
        parse_event_time(text)
    reason = decode(raw({**tick(0), "time": text}))
    assert isinstance(reason, str)
    assert reason.startswith("bad-time: ")
    assert "1970-01-01T00:00:00Z" in reason
    assert "9000-01-01T00:00:00Z" in reason
    reading = raw({**probe("a", 0), "time": text})
    assert read_status(reading, None, 1 << 16) is None
    assert str(decode(reading)).startswith("bad-time: ")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1970-01-01T00:00:00Z", MIN_TIME),
        ("1970-01-01T00:00:00-00:01", MIN_TIME + 60 * SECOND),
        ("8999-12-31T23:59:59.999999Z", MAX_TIME - 1),
        ("9000-01-01T00:00:00+00:01", MAX_TIME - 60 * SECOND),
    ],
)
def test_the_ends_of_the_range_are_accepted(text: str, value: int) -> None:
    assert parse_event_time(text) == value
    assert read_status(raw({**probe("a", 0), "time": text}), None, 1 << 16) is not None


@settings(max_examples=500, deadline=None)
@given(text=st.from_regex(TIME_PATTERN.rstrip("$") + r"\Z"))
@example(text="9999-12-31T23:59:59-23:59")
@example(text="0001-01-01T00:00:00+23:59")
@example(text="9999-12-31T23:59:59.999999999-23:59")
@example(text="0000-01-01T00:00:00Z")
def test_every_time_the_schema_admits_parses_or_is_refused_never_overflows(text: str) -> None:
    """Whatever matches the schemas' time pattern: ``bad-time`` (not a date, or out of range)
    or an instant in range, which then formats, as do the deadlines after it, in any zone."""
    event = {**tick(0), "time": text}
    answer = decode(raw(event))
    if isinstance(answer, str):
        assert answer.startswith("bad-time: "), answer
        return
    _, time = answer
    assert MIN_TIME <= time < MAX_TIME
    for instant in (time, time + MAX_DURATION, time + 2 * MAX_DURATION):
        assert format_time(instant)
        assert format_compact(instant)
        for zone in ZONES:
            assert format_local(instant, zone, "id")


@settings(max_examples=300, deadline=None)
@given(
    time=st.integers(MIN_TIME, MAX_TIME - 1),
    first=st.integers(0, MAX_DURATION),
    second=st.integers(0, MAX_DURATION),
    zone=st.sampled_from(ZONES),
)
def test_a_time_plus_two_durations_formats_in_any_zone(
    time: int, first: int, second: int, zone: ZoneInfo
) -> None:
    """Deadlines are an input's time plus a policy duration, twice at most (the second
    escalation): each writes out as RFC 3339, as an incident id and as local time."""
    instant = time + first + second
    assert instant <= LATEST_FORMATTED
    assert parse_time(format_time(instant)) == instant
    assert len(format_compact(instant)) == 16
    assert format_local(instant, zone, "en")


def test_the_latest_instant_formats_and_fits_64_bits() -> None:
    """State goes through orjson, which refuses integers past 64 bits."""
    assert LATEST_FORMATTED < 2**63
    for zone in ZONES:
        assert " November 9199 " in format_local(LATEST_FORMATTED, zone, "id")
        assert format_local(MIN_TIME, zone, "en")


# ------------------------------------------------------------------------- durations


def test_durations_are_bounded() -> None:
    assert parse_duration("36500d") == MAX_DURATION
    assert parse_duration(f"{MAX_DURATION // 1000}ms") == MAX_DURATION
    for text in ("36501d", "876001h", "300000000d", "9" * 5000 + "s"):
        with pytest.raises(ValueError, match="the most a duration may be"):
            parse_duration(text)


def test_a_topology_with_a_duration_past_the_maximum_is_refused_with_its_path() -> None:
    text = topology_yaml({"svc": service(["a"])}, policy={"stale_after": "300000000d"})
    with pytest.raises(TopologyError) as caught:
        Topology.parse(text, "t.yaml")
    assert caught.value.path == "$.policy.stale_after"
    assert "longer than 366d" in caught.value.message


def test_max_future_and_max_clock_jump_are_engine_wide() -> None:
    topology = make_topology(
        {"svc": service(["a"])}, policy={"max_future": "2m", "max_clock_jump": "6h"}
    )
    assert topology.policy.max_future == 120 * SECOND
    assert topology.policy.max_clock_jump == 6 * 3600 * SECOND
    assert make_topology({"svc": service(["a"])}).policy.max_future == 300 * SECOND
    per_service = service(["a"], policy={"max_future": "1h"})
    with pytest.raises(TopologyError) as caught:
        make_topology({"svc": per_service})
    assert caught.value.path == "$.services.svc.policy.max_future"
    assert "whole engine" in caught.value.message


# -------------------------------------------------------------- the findings, replayed


def _outage(topology: Topology, forged: bytes | None) -> list[Any]:
    """A service whose link goes down, with a forged line first, then an operator's
    force_manual on a second service, and ticks."""
    events: list[Any] = [probe("a", 0), probe("b", 0), tick(0)]
    if forged is not None:
        events.append(forged)
    events += [probe("a", t, "down") for t in range(30, 900, 30)]
    events += [probe("b", t) for t in range(30, 900, 30)]
    events.append(override("other", 100, "force_manual"))
    events += [tick(t) for t in range(60, 960, 60)]
    events.sort(key=lambda e: e["time"] if isinstance(e, dict) else at(0))
    return run(topology, events)


def _two_services() -> Topology:
    return make_topology({"svc": service(["a"]), "other": service(["b"])}, ["a", "b"])


@pytest.mark.parametrize(
    "forged",
    ["9999-12-31T23:59:59-23:59", "9999-12-31T23:59:59Z", "9000-01-01T00:00:00Z"],
)
def test_a_tick_out_of_range_is_dead_lettered_and_the_run_goes_on(forged: str) -> None:
    """Replay: the tick that crashed every start, and the one that froze the engine, are
    dead-lettered ``bad-time``; everything else, a force_manual after them included, happens
    exactly as without them."""
    topology = _two_services()
    line = raw({**tick(0, id="tick/forged"), "time": forged})
    out = _outage(topology, line)
    clean = _outage(topology, None)
    [dead] = dead_letters(out)
    assert dead.reason.startswith("bad-time: ")
    assert dead.raw == line
    assert [r for r in out if not isinstance(r, DeadLetter)] == clean
    assert path(out, "svc") == ["online", "degraded", "manual"]
    assert path(out, "other")[:2] == ["online", "manual"]  # the force_manual after it


# ------------------------------------------------------------------- authenticated ticks


def test_the_ticker_tags_its_ticks_and_decode_checks_them() -> None:
    _, signed = tick_event(micros("2019-02-05T00:00:00Z"), KEY)
    event = orjson.loads(signed)
    assert event[TICK_AUTH] == tick_tag(KEY, event)
    assert re.fullmatch(r"hmac-sha256=[0-9a-f]{64}", event[TICK_AUTH])
    decoded = decode(signed, TICK_KEY, tick_key=KEY)
    assert isinstance(decoded, tuple)
    assert decoded[1] == micros("2019-02-05T00:00:00Z")
    # Replay trusts its file: a tag is not checked, and none is needed.
    assert isinstance(decode(signed), tuple)
    assert isinstance(decode(tick_event(0)[1]), tuple)


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("no tag", lambda e: {k: v for k, v in e.items() if k != TICK_AUTH}),
        ("another key", lambda e: sign_tick(b"x" * 32, e)),
        ("moved in time", lambda e: {**e, "time": "9999-12-31T23:59:59Z"}),
        ("moved a second", lambda e: {**e, "time": "2019-02-05T00:00:01Z"}),
        ("another id", lambda e: {**e, "id": "tick/evil"}),
        ("another source", lambda e: {**e, "source": "/probe/evil"}),
        ("a subject added", lambda e: {**e, "subject": "__tick__"}),
        ("a tag that is no string", lambda e: {**e, TICK_AUTH: 1}),
        ("a tag in capitals", lambda e: {**e, TICK_AUTH: e[TICK_AUTH].upper()}),
        ("a non-ASCII tag", lambda e: {**e, TICK_AUTH: "hmac-sha256=é"}),
        ("an empty tag", lambda e: {**e, TICK_AUTH: ""}),
    ],
)
def test_a_forged_tick_is_refused_on_kafka(name: str, change: Any) -> None:
    _, signed = tick_event(micros("2019-02-05T00:00:00Z"), KEY)
    forged = raw(change(orjson.loads(signed)))
    reason = decode(forged, TICK_KEY, tick_key=KEY)
    assert isinstance(reason, str), name
    expected = {"moved in time": "bad-time: ", "a tag that is no string": "schema: $.failoverauth"}
    assert reason.startswith(expected.get(name, "unauthenticated-tick: ")), reason
    assert tick_reason(orjson.loads(forged), KEY) is not None


def test_the_tag_covers_a_canonical_form() -> None:
    """The tag does not depend on key order, whitespace or other attributes."""
    event = orjson.loads(tick_event(0, KEY)[1])
    reordered = {k: event[k] for k in reversed(list(event))}
    spaced = orjson.dumps(reordered, option=orjson.OPT_INDENT_2)
    assert isinstance(decode(spaced, tick_key=KEY), tuple)
    traced = {**event, "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    assert isinstance(decode(raw(traced), tick_key=KEY), tuple)


def test_only_ticks_need_a_tag() -> None:
    for event in (probe("a", 0), override("svc", 0, "force_manual")):
        assert isinstance(decode(raw(event), tick_key=KEY), tuple)


# -------------------------------------------------------------- the bound ahead of now


@pytest.mark.parametrize("event", [probe("a", 60), tick(60), override("svc", 60, "force_manual")])
def test_an_input_after_the_bound_is_refused_future_time(event: dict[str, Any]) -> None:
    data = raw(event)
    time = micros(at(60))
    key = TICK_KEY if event["type"] == "clock.tick.v1" else event["subject"]
    for bound in (time, time + 1):
        reading, answer = read_input(data, key, 1 << 16, bound)
        assert reading is not None or isinstance(answer, tuple)
    reading, answer = read_input(data, key, 1 << 16, time - 1)
    assert reading is None
    assert isinstance(answer, str)
    assert answer.startswith("future-time: ")
    assert at(60) in answer
    assert "max_future" in answer


def test_a_forged_tick_is_refused_before_its_time_is_weighed() -> None:
    """A forged tick says it is forged, however far ahead it is stamped."""
    forged = raw({**tick(0), "time": "8999-01-01T00:00:00Z"})
    reason = decode(forged, TICK_KEY, 1 << 16, micros(at(0)), KEY)
    assert str(reason).startswith("unauthenticated-tick: ")
    _, signed = tick_event(micros("8999-01-01T00:00:00Z"), KEY)
    assert str(decode(signed, TICK_KEY, 1 << 16, micros(at(0)), KEY)).startswith("future-time")


# ------------------------------------------------------------ the partitions, guarded


def _partitions() -> tuple[Topology, Routing, LinkPartition, ServicePartition]:
    topology = _two_services()
    routing = Routing(Settings(partitions=1))
    links = LinkPartition(topology, routing, 0, DictTable())
    services = ServicePartition(topology, routing, 0, DictTable())
    return topology, routing, links, services


def _reasons(records: list[Any]) -> list[str]:
    return [dict(r.headers)["failover-reason"].decode() for r in records if r.headers]


def test_the_partitions_apply_the_guards_the_worker_sets() -> None:
    _, routing, links, services = _partitions()
    now = micros(at(0))
    origin = Origin("link-status", 0, 0)
    # Unguarded (as in tests of the routing, and replay): a future reading is read.
    assert links.handle(raw(probe("a", 3600)), b"a", origin) == []
    routing.guard(now + 300 * SECOND, KEY)
    late = links.handle(raw(probe("a", 3600, id="p2")), b"a", origin)
    assert [r.topic for r in late] == ["failover-deadletter"]
    assert _reasons(late)[0].startswith("future-time: ")
    forged = raw(tick(60))
    out = links.handle(forged, TICK_KEY.encode(), origin)
    assert _reasons(out)[0].startswith("unauthenticated-tick: ")
    assert out[0].value == forged  # the original bytes
    assert links.stage.watermark is None  # the clock did not move
    _, signed = tick_event(micros(at(60)), KEY)
    out = links.handle(signed, TICK_KEY.encode(), origin)
    assert links.stage.watermark == micros(at(60))
    assert not _reasons(out)
    out = services.handle_input(OVERRIDES_SOURCE, forged, TICK_KEY.encode(), origin)
    assert _reasons(out)[0].startswith("unauthenticated-tick: ")
    assert OVERRIDES_SOURCE not in services.sources
    services.handle_input(OVERRIDES_SOURCE, signed, TICK_KEY.encode(), origin)
    assert services.sources[OVERRIDES_SOURCE][0] == micros(at(60))
    ahead = raw(override("svc", 3600, "force_manual"))
    out = services.handle_input(OVERRIDES_SOURCE, ahead, b"svc", origin)
    assert _reasons(out)[0].startswith("future-time: ")


# ----------------------------------------------------------------- clock jumps in replay


def _lines(*events: Any) -> list[tuple[int, bytes]]:
    return [(n, raw(e)) for n, e in enumerate(events, start=1)]


def test_a_jump_of_the_clock_is_reported_with_its_line_and_lines_pass_unchanged() -> None:
    spoof = {**probe("a", 0, id="evil"), "time": "2030-01-01T00:00:00Z"}
    lines = _lines(tick(0), probe("a", 30), spoof, probe("a", 60), tick(120), tick(86400 * 2))
    found: list[ClockJump] = []
    assert list(clock_jumps(lines, 86400 * SECOND, found.append)) == lines
    assert found == [ClockJump(3, micros("2030-01-01T00:00:00Z"), micros(at(30)))]
    text = describe_jump(found[0], "events.jsonl")
    assert text.startswith("events.jsonl:3: the clock jumps 3982 days 23 h ahead")
    assert "to 2030-01-01T00:00:00Z from 2019-02-05T00:00:30Z" in text


def test_what_the_engine_refuses_sets_no_clock() -> None:
    lines = [
        (1, b"not json"),
        (2, raw({**tick(0), "type": "x.v1"})),
        (3, raw({**tick(0), "time": "9999-12-31T23:59:59Z"})),
        (4, raw({**tick(0), "time": 5})),
        (5, b"[1, 2]"),
        (6, raw({**tick(0), "type": ["clock.tick.v1"]})),
        (7, raw(tick(0))),
        (8, raw(tick(86400))),  # exactly the bound: not a jump
        (9, raw(tick(86400 * 2 + 1))),
    ]
    found: list[ClockJump] = []
    assert len(list(clock_jumps(lines, 86400 * SECOND, found.append))) == len(lines)
    assert [j.line for j in found] == [9]


def test_the_watch_counts_every_input_type() -> None:
    """A jump is reported whatever type of input makes it: the watch reads the entry point's
    table of input types, and nothing else."""
    for type_ in INPUT_TYPES:
        ahead = orjson.loads(raw(tick(86400 * 2 + 1)))
        ahead["type"] = type_
        found: list[ClockJump] = []
        lines = [(1, raw(tick(0))), (2, orjson.dumps(ahead))]
        assert list(clock_jumps(lines, 86400 * SECOND, found.append)) == lines
        assert [j.line for j in found] == [2], type_


def test_gaps_read_as_people_say_them() -> None:
    assert describe_gap(90 * SECOND) == "1 min 30 s"
    assert describe_gap(59 * SECOND) == "59 s"
    assert describe_gap((26 * 3600 + 300) * SECOND) == "1 day 2 h"
    assert describe_gap((5 * 3600 + 300) * SECOND) == "5 h 5 min"


STAMPS = st.sampled_from(
    [at(0), at(1), at(86400), at(86401), at(3 * 86400), "2030-01-01T00:00:00Z",
     "9999-12-31T23:59:59Z", "2019-02-30T00:00:00Z", "x", 5, None]
)  # fmt: skip


@st.composite
def replay_lines(draw: st.DrawFn) -> list[tuple[int, bytes]]:
    """Lines of a file: inputs of any type with times in and out of order, repeated, out of
    range or not times at all; and lines that are no inputs."""
    lines = []
    for number in range(1, draw(st.integers(0, 30)) + 1):
        kind = draw(st.sampled_from([*INPUT_TYPES, "x.v1", None, "garbage"]))
        if kind == "garbage":
            lines.append((number, draw(st.sampled_from([b"", b"{", b"[]", b"1", b"\xff"]))))
            continue
        event: dict[str, Any] = {"id": str(number), "time": draw(STAMPS)}
        if kind is not None:
            event["type"] = kind
        lines.append((number, raw(event)))
    return lines


def model_jumps(lines: list[tuple[int, bytes]], max_jump: int) -> list[ClockJump]:
    """What clock_jumps must find, the plain way: every line parsed in full."""
    found, latest = [], None
    for number, data in lines:
        try:
            event = orjson.loads(data)
            assert isinstance(event, dict)
            assert event.get("type") in INPUT_TYPES
            time = parse_event_time(event["time"])
        except (orjson.JSONDecodeError, AssertionError, KeyError, TypeError, ValueError):
            continue
        if latest is not None and time - latest > max_jump:
            found.append(ClockJump(number, time, latest))
        latest = time if latest is None else max(latest, time)
    return found


@settings(max_examples=300, deadline=None)
@given(lines=replay_lines(), days=st.sampled_from([0, 1, 2]))
def test_clock_jumps_finds_what_a_full_parse_finds(
    lines: list[tuple[int, bytes]], days: int
) -> None:
    found: list[ClockJump] = []
    max_jump = days * 86400 * SECOND
    assert list(clock_jumps(lines, max_jump, found.append)) == lines
    assert found == model_jumps(lines, max_jump)
