"""The clock of a recording: a replay file with no tick is replayed by its inputs' event
times, each new time an implicit tick before the input (workflows/clock.py), and the CLI
chooses the clock by whether the file holds a tick (``--clock``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import (
    failover,
    make_topology,
    override,
    path,
    probe,
    raw,
    readings,
    record,
    run,
    service,
    tick,
)
from workflows.recording import ClockBack, has_ticks, implicit_tick, implicit_ticks
from workflows.records import DeadLetter, Emitted
from workflows.replay import encode, replay
from workflows.timeutil import parse_event_time

ROOT = Path(__file__).resolve().parent.parent

TOPOLOGY = make_topology(
    {
        "solo": service(["a"], offline=False),
        "paired": service([["a", "b"]]),
        "both": service(["a", "b"]),
    },
    ("a", "b"),
)

Event = dict[str, Any]


def with_ticks(events: list[Event | bytes]) -> list[Event | bytes]:
    """The oracle: the recording with a tick written before every input stamped later than
    every input above it, found by plain parsing (not the code under test)."""
    out: list[Event | bytes] = []
    latest: int | None = None
    for event in events:
        if isinstance(event, dict):
            time = parse_event_time(event["time"])
            if latest is None or time > latest:
                latest = time
                out.append(implicit_tick(time))
        out.append(event)
    return out


def by_events(events: list[Event | bytes]) -> tuple[list[Emitted | DeadLetter], list[ClockBack]]:
    backs: list[ClockBack] = []
    lines = [(number, raw(event)) for number, event in enumerate(events, 1)]
    return list(replay(TOPOLOGY, implicit_ticks(lines, backs.append), "f")), backs


def comparable(out: list[Emitted | DeadLetter]) -> list[bytes | tuple[Any, ...]]:
    """Outputs, with dead letters by key, reason and bytes (their line numbers differ)."""
    return [encode(r) if isinstance(r, Emitted) else (r.key, r.reason, r.raw) for r in out]


_TIMES = st.integers(min_value=0, max_value=120).map(lambda step: step * 15)
_PROBE = st.builds(
    lambda link, t, status, n: probe(link, t, status, id=f"p/{link}/{t}/{n}"),
    st.sampled_from(["a", "b", "nowhere"]),
    _TIMES,
    st.sampled_from(["up", "up", "degraded", "down", "down"]),
    st.integers(0, 3),
)
_OVERRIDE = st.builds(
    lambda svc, t, action: override(svc, t, action),
    st.sampled_from(["solo", "paired", "both"]),
    _TIMES,
    st.sampled_from(["force_manual", "release", "pin", "unpin"]),
)
_RECORD = st.builds(
    lambda svc, t, n: record(svc, t, f"r{n}"),
    st.sampled_from(["paired", "both"]),
    _TIMES,
    st.integers(0, 5),
)
_JUNK = st.sampled_from([b"not json", b'{"type": "clock.tick.v1"}', b"[]"])


@st.composite
def recordings(draw: st.DrawFn) -> list[Event | bytes]:
    """Mostly in time order (a sorted list, then a few inputs moved), with junk lines."""
    inputs = draw(st.lists(st.one_of(_PROBE, _PROBE, _PROBE, _OVERRIDE, _RECORD), max_size=60))
    inputs.sort(key=lambda e: parse_event_time(e["time"]))
    events: list[Event | bytes] = list(inputs)
    for junk in draw(st.lists(_JUNK, max_size=2)):
        events.insert(draw(st.integers(0, len(events))), junk)
    move: bool = draw(st.booleans())
    if events and move:  # one input out of order
        moved = events.pop(draw(st.integers(0, len(events) - 1)))
        events.insert(draw(st.integers(0, len(events))), moved)
    return events


@settings(max_examples=150, deadline=None)
@given(recordings())
def test_a_recording_without_ticks_replays_as_with_a_tick_before_each_new_time(
    events: list[Event | bytes],
) -> None:
    implicit, _ = by_events(events)
    explicit = run(TOPOLOGY, with_ticks(events), audit=True)
    assert comparable(implicit) == comparable(explicit)


@settings(max_examples=60, deadline=None)
@given(recordings())
def test_the_first_input_that_goes_back_is_reported(events: list[Event | bytes]) -> None:
    _, backs = by_events(events)
    latest, expected = None, []
    for number, event in enumerate(events, 1):
        if isinstance(event, dict):
            time = parse_event_time(event["time"])
            if latest is not None and time < latest:
                expected.append(ClockBack(number, time, latest))
            latest = time if latest is None else max(latest, time)
    assert backs == expected


def test_readings_alone_walk_a_service_through_its_states_on_time() -> None:
    # Down from 0 to 900 s, then up; a reading every 30 s, no tick at all.
    events: list[Event | bytes] = list(readings("a", 2400, [(0, "down"), (900, "up")], every=30))
    out, _ = by_events(events)
    assert path(out, "solo") == ["online", "degraded", "manual", "restored", "online"]
    times = [
        e.event["time"]
        for e in out
        if isinstance(e, Emitted) and e.key == "solo" and "transition" in e.event["type"]
    ]
    # degrade_after 60 s, manual_after 300 s, restore_after 300 s (tests/helpers.py POLICY):
    # each fires at the first reading at or after its deadline.
    assert times == [
        "2019-02-05T00:01:00Z",
        "2019-02-05T00:05:00Z",
        "2019-02-05T00:20:00Z",
        "2019-02-05T00:20:00Z",
    ]
    # The same recording by its (absent) ticks: nothing moves until the end of the file.
    assert path(run(TOPOLOGY, events), "solo") != path(out, "solo")


def test_a_tick_in_the_file_moves_the_clock_and_adds_no_implicit_tick() -> None:
    lines = [(1, raw(tick(60))), (2, raw(probe("a", 60))), (3, raw(probe("a", 90)))]
    got = list(implicit_ticks(lines, lambda back: None))
    assert got == [lines[0], lines[1], (3, implicit_tick(90_000_000 + 1549324800_000_000)),
                   lines[2]]  # fmt: skip


def test_implicit_ticks_have_ids_made_of_their_time() -> None:
    tick_ = orjson.loads(implicit_tick(1549324800_000_000))
    assert tick_["id"] == "implicit-tick/2019-02-05T00:00:00Z"
    assert tick_["time"] == "2019-02-05T00:00:00Z"
    assert implicit_tick(1549324800_000_000) == implicit_tick(1549324800_000_000)


# -- choosing the clock -----------------------------------------------------------------


def test_has_ticks_reads_the_type_not_the_text(tmp_path: Path) -> None:
    file = tmp_path / "e.jsonl"
    reason = override("solo", 0, "pin", reason="no clock.tick.v1 here")
    file.write_bytes(raw(reason) + b"\n" + raw(probe("a", 0)) + b"\n")
    assert not has_ticks(file, 65536)
    file.write_bytes(file.read_bytes() + raw(tick(60)))  # the last line, no newline
    assert has_ticks(file, 65536)


def test_has_ticks_finds_a_tick_across_chunks_and_skips_long_lines(tmp_path: Path) -> None:
    file = tmp_path / "e.jsonl"
    filler = raw(probe("a", 0)) + b"\n"
    body = filler * ((1 << 22) // len(filler) + 1)
    file.write_bytes(body + raw(tick(60)) + b"\n")
    assert has_ticks(file, 65536)
    too_long = b'{"type":"clock.tick.v1","x":"' + b"y" * 200_000 + b'"}\n'
    file.write_bytes(filler + too_long + filler)
    assert not has_ticks(file, 65536)
    assert has_ticks(file, 300_000)


def test_the_cli_picks_the_clock_and_says_which(tmp_path: Path) -> None:
    demo = ROOT / "streams" / "demo"
    no_ticks = tmp_path / "no-ticks.jsonl"
    no_ticks.write_bytes(
        b"".join(
            line + b"\n"
            for line in (demo / "ambon-events.jsonl").read_bytes().splitlines()
            if b"clock.tick.v1" not in line
        )
    )
    auto = failover("replay", demo / "ambon.yaml", no_ticks, "-o", tmp_path / "auto.jsonl")
    assert auto.returncode == 0, auto.stderr
    assert b"clock: event time" in auto.stdout
    assert b"(the file holds no tick)" in auto.stdout
    # The demo's file is written link by link: its first line that goes back is named.
    assert b"warning: no-ticks.jsonl:" in auto.stderr
    assert b"not in time order" in auto.stderr
    ticks = failover(
        "replay", demo / "ambon.yaml", no_ticks, "--clock", "ticks", "-o", tmp_path / "t.jsonl"
    )
    assert b"clock: the file's ticks (clock.tick.v1) (--clock ticks)" in ticks.stdout
    auto_out = (tmp_path / "auto.jsonl").read_bytes()
    assert auto_out != (tmp_path / "t.jsonl").read_bytes()
    assert auto_out.count(b"failover.transition.v1") > (tmp_path / "t.jsonl").read_bytes().count(
        b"failover.transition.v1"
    )
    demo_run = failover("replay", demo / "ambon.yaml", demo / "ambon-events.jsonl", "-q")
    assert demo_run.returncode == 0
    assert b"not in time order" not in demo_run.stderr
