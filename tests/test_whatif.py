"""``failover what-if``: one recording under two topologies, and what changes per service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.whatif import apply_settings, compare, summarize
from tests.helpers import POLICY, make_topology, raw, readings, service
from tests.test_recording_clock import failover, recordings
from workflows.recording import implicit_ticks
from workflows.records import DeadLetter, Emitted
from workflows.replay import encode, replay
from workflows.timeutil import parse_time
from workflows.topology import Topology, TopologyError

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "streams" / "demo"

SERVICES = {
    "solo": service(["a"], offline=False),
    "paired": service([["a", "b"]]),
    "both": service(["a", "b"]),
}


def topology(restore_after: str) -> Topology:
    return make_topology(SERVICES, ("a", "b"), policy={**POLICY, "restore_after": restore_after})


def outputs(topology_: Topology, events: list[Any]) -> list[Emitted | DeadLetter]:
    lines = [(number, raw(event)) for number, event in enumerate(events, 1)]
    return list(replay(topology_, implicit_ticks(lines, lambda back: None), "f"))


_STATUS = st.sampled_from(["up", "degraded", "down", None])


@st.composite
def outages(draw: st.DrawFn) -> list[Any]:
    """Readings every 30 s of both links, each going through a few states that last from
    30 s to 40 min (None: the probe is silent): outages that end, so that many of them
    restore a service (:func:`recordings` rarely does)."""
    events: list[Any] = []
    for link in ("a", "b"):
        t, changes = 0, []
        for status in draw(st.lists(_STATUS, min_size=1, max_size=5)):
            changes.append((t, status))
            t += 30 * draw(st.integers(1, 80))
        events += readings(link, t, changes, every=30)
    events.sort(key=lambda e: parse_time(e["time"]))
    return events


def first_restoration(*runs: list[Emitted | DeadLetter]) -> int | None:
    times = [
        parse_time(r.event["time"])
        for run in runs
        for r in run
        if isinstance(r, Emitted)
        and r.event["type"] == "failover.transition.v1"
        and r.event["data"]["to"] == "restored"
    ]
    return min(times, default=None)


@settings(max_examples=150, deadline=None)
@given(st.one_of(recordings(), outages()), st.sampled_from(["30s", "90s", "10m", "1h"]))
def test_restore_after_changes_nothing_before_the_first_restoration(
    events: list[Any], restore_after: str
) -> None:
    a, b = outputs(topology("300s"), events), outputs(topology(restore_after), events)
    first = first_restoration(a, b)

    def before(run: list[Emitted | DeadLetter]) -> list[bytes]:
        return [
            encode(r)
            for r in run
            if isinstance(r, Emitted) and (first is None or parse_time(r.event["time"]) < first)
        ]

    assert before(a) == before(b)
    # And what-if's report names no transition before it.
    for change in compare(summarize(a), summarize(b)).values():
        for moves in change.get("transitions", {}).values():
            for move in moves:
                for key in ("time", "a", "b"):
                    if key in move:
                        assert first is not None
                        assert parse_time(move[key]) >= first


@settings(max_examples=50, deadline=None)
@given(recordings())
def test_a_topology_against_itself_changes_nothing(events: list[Any]) -> None:
    run = outputs(topology("300s"), events)
    assert compare(summarize(run), summarize(run)) == {}


def test_the_demo_against_itself_reports_no_change() -> None:
    done = failover(
        "what-if", DEMO / "ambon.yaml", DEMO / "ambon.yaml", DEMO / "ambon-events.jsonl"
    )
    assert done.returncode == 0, done.stderr
    assert b"no change" in done.stdout
    as_json = failover(
        "what-if", DEMO / "ambon.yaml", DEMO / "ambon.yaml", DEMO / "ambon-events.jsonl", "--json"
    )
    assert orjson.loads(as_json.stdout)["services"] == {}


def test_a_longer_stability_window_restores_later() -> None:
    done = failover(
        "what-if", DEMO / "ambon.yaml", DEMO / "ambon-events.jsonl",
        "--set", "policy.restore_after=30m", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)["services"]
    later = report["surat-pindah"]["transitions"]["later"]
    assert later == [
        {"from": "manual", "to": "restored", "a": "2019-02-06T00:36:00Z",
         "b": "2019-02-06T00:51:00Z", "by_seconds": 900.0}
    ]  # fmt: skip
    assert report["surat-pindah"]["manual"]["b"] - report["surat-pindah"]["manual"]["a"] == 900
    text = failover(
        "what-if", DEMO / "ambon.yaml", DEMO / "ambon-events.jsonl",
        "--set", "policy.restore_after=30m",
    )  # fmt: skip
    assert b"manual \xe2\x86\x92 restored later by 15 min 0 s" in text.stdout


def test_settings_are_validated_like_the_file() -> None:
    done = failover(
        "what-if", DEMO / "ambon.yaml", DEMO / "ambon-events.jsonl",
        "--set", "policy.restore_after=soon", "--set", "services.ektp.policy.colour=red",
    )  # fmt: skip
    assert done.returncode == 2
    errors = done.stderr.decode().splitlines()
    assert len(errors) == 2
    assert "$.services.ektp.policy: Additional properties" in errors[0]
    assert "$.policy.restore_after: 'soon'" in errors[1]
    no_set = failover("what-if", DEMO / "ambon.yaml", DEMO / "ambon-events.jsonl")
    assert no_set.returncode == 2
    assert b"--set" in no_set.stderr


def test_apply_settings_makes_mappings_and_refuses_what_is_not_a_setting() -> None:
    document: dict[str, Any] = {"services": {"a.b": {"site": "x"}}, "policy": {}}
    out = apply_settings(document, ["services.a.b.policy.manual_after=2m", "policy.x=800"], "t")
    assert out["services"]["a.b"]["policy"] == {"manual_after": "2m"}
    assert out["policy"] == {"x": 800}
    assert document["policy"] == {}  # a copy
    for bad in ("policy", "=1", "policy..x=1", "policy.x=[1]", "services.a.b.site.z=1"):
        with pytest.raises(TopologyError):
            apply_settings(document, [bad], "t")


def test_time_in_manual_counts_until_the_end_of_the_recording() -> None:
    # Down from 0 on: manual at 300 s (manual_after), still manual at the end, 2400 s.
    events = readings("a", 2400, [(0, "down")], every=30)
    summary = summarize(outputs(topology("300s"), events), parse_time(events[-1]["time"]))
    assert summary.manual["solo"] == 2100 * 1_000_000
    assert summary.incidents["solo"] == 1


def test_generated_recordings_do_restore() -> None:
    """The property above is not empty: many generated recordings restore a service."""
    found = []

    @settings(max_examples=100, deadline=None, database=None)
    @given(outages())
    def count(events: list[Any]) -> None:
        found.append(first_restoration(outputs(topology("300s"), events)) is not None)

    count()
    assert sum(found) >= 10  # about a quarter do: 10 of 100 is far below any run seen
