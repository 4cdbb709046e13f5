"""The timeline's "why" names a link that was bad because it was stale (no reading within
``stale_after``) or flapping (held at impaired), which the transition's detail does not say;
the core tells it through ``replay(on_health=...)``, which changes no output."""

from __future__ import annotations

import io

from rich.console import Console

from streams.timeline import Timeline
from tests.helpers import make_topology, raw, scenario, service
from tests.kafka.workers import DEMO_EVENTS, DEMO_TOPOLOGY
from workflows.links import HealthChange
from workflows.replay import encode, read_lines, replay
from workflows.topology import Topology

TOPOLOGY = make_topology({"letters": service(["a"]), "cards": service(["b"])}, ("a", "b"))


def _why(events: list[bytes]) -> tuple[list[str], str]:
    timeline = Timeline(TOPOLOGY)
    for record in replay(TOPOLOGY, enumerate(events, 1), "t", on_health=timeline.link_changed):
        timeline.add(record)
    out = io.StringIO()
    timeline.print(Console(file=out, width=400, highlight=False))
    rows = [line for line in out.getvalue().splitlines() if "→" in line]
    return rows, out.getvalue()


def test_a_stale_link_is_named_in_the_why() -> None:
    # Link a reports up until 5 min, then nothing: stale after 2 min more, so down.
    events = [raw(e) for e in scenario(1500, {"a": [(0, "up"), (360, None)], "b": [(0, "up")]})]
    rows, text = _why(events)
    degraded = [r for r in rows if "online → degraded" in r]
    manual = [r for r in rows if "degraded → manual" in r]
    assert degraded
    assert manual
    assert all("(link a stale)" in r for r in degraded + manual)
    assert "link b" not in text  # b was healthy throughout


def test_a_flapping_link_is_named_in_the_why() -> None:
    flaps = [(t, "down" if (t // 60) % 2 else "up") for t in range(0, 600, 60)]
    events = [raw(e) for e in scenario(1200, {"a": [(0, "up")], "b": flaps})]
    rows, _ = _why(events)
    assert any("(link b flapping)" in r for r in rows)


def test_a_probes_own_word_adds_nothing() -> None:
    events = [raw(e) for e in scenario(1200, {"a": [(0, "up"), (120, "down")], "b": [(0, "up")]})]
    rows, _ = _why(events)
    assert rows
    assert not any("stale" in r or "flapping" in r for r in rows)


def test_listening_changes_no_output() -> None:
    topology = Topology.load(DEMO_TOPOLOGY)
    heard: list[HealthChange] = []
    lines = list(read_lines(DEMO_EVENTS))
    plain = [encode(r) for r in replay(topology, lines, "demo")]
    listened = [encode(r) for r in replay(topology, lines, "demo", on_health=heard.append)]
    assert listened == plain
    assert heard  # it was told something
