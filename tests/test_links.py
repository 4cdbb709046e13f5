"""Stage 1's catch-up: ticks applied to one link alone, as the whole stage would have.

A link that moves to another partition of stage 1 first catches up with the ticks the new
partition applied already (:meth:`LinkStage.catch_up`); what it finds then (staleness, a damped
link trusted again, the staleness clock of a link that never reported) must be what
:meth:`LinkStage.on_tick` would have found for it, change for change.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import POLICY, at, make_topology, service
from workflows.links import LinkStage
from workflows.timeutil import parse_time

T0 = parse_time(at(0))
SECOND = 1_000_000
LINKS = ("a", "b")
#: Short clocks: a few minutes of ticks reach staleness, flapping and quiet.
TOPOLOGY = make_topology(
    {"paper": service([["a", "b"]])},
    LINKS,
    policy={
        **POLICY,
        "stale_after": "60s",
        "flap_window": "300s",
        "flap_threshold": 3,
        "flap_quiet": "90s",
    },
)

_reading = st.tuples(
    st.just("reading"),
    st.sampled_from(LINKS),
    st.sampled_from(("up", "degraded", "down")),
    st.integers(min_value=0, max_value=40),  # seconds after the last tick
)
_tick = st.tuples(st.just("tick"), st.integers(min_value=1, max_value=90))


def _run(stage: LinkStage, steps: list[Any], clock: list[int]) -> list[Any]:
    """Apply ``steps`` to ``stage`` (``clock``: the last tick's time, moved); its changes."""
    changes: list[Any] = []
    for n, step in enumerate(steps):
        if step[0] == "tick":
            clock[0] += step[1] * SECOND
            changes += stage.on_tick(clock[0], f"t{n}")
        else:
            _, link, status, after = step
            change = stage.on_status(link, f"r{n}", clock[0] + after * SECOND, status, None, None)
            if change is not None:
                changes.append(change)
    return changes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=st.lists(st.one_of(_reading, _tick), max_size=30),
    after=st.lists(st.integers(min_value=1, max_value=90), min_size=1, max_size=12),
)
def test_catch_up_finds_for_one_link_what_the_ticks_find_for_the_stage(
    before: list[Any], after: list[int]
) -> None:
    """Two stages read the same readings and ticks; then one applies more ticks with
    ``on_tick``, the other to link ``a`` alone with ``catch_up``: the same changes of ``a``,
    the same state of ``a``, and the catching-up stage's watermark unmoved."""
    ticking, catching = LinkStage(TOPOLOGY), LinkStage(TOPOLOGY)
    clock_t, clock_c = [T0], [T0]
    assert _run(ticking, before, clock_t) == _run(catching, before, clock_c)
    watermark = catching.watermark
    ticks = []
    time = clock_t[0]
    for n, gap in enumerate(after):
        time += gap * SECOND
        ticks.append((time, f"late{n}"))
    expected = [c for t, i in ticks for c in ticking.on_tick(t, i) if c.link == "a"]
    assert catching.catch_up("a", ticks) == expected
    assert catching.watermark == watermark
    state_t, state_c = ticking.states.get("a"), catching.states.get("a")
    assert (state_t is None) == (state_c is None)
    if state_t is not None and state_c is not None:
        assert state_c.to_json() == state_t.to_json()
    assert catching.failures == ticking.failures == []
