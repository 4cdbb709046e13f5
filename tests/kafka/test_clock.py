"""Only the engine moves its clock, on a real broker.

- Forged ticks (no tag, a tag under another key), sent to every partition of the three input
  topics, are dead-lettered ``unauthenticated-tick`` with their bytes, and a ``force_manual``
  after them still works: they used to freeze the engine (every later input ``too-old``).
- A reading stamped a day ahead of the worker's wall clock, in the middle of the Ambon demo,
  is dead-lettered ``future-time``, and the outage plays out exactly as replay of the demo
  without it (in replay the same reading, trusted, hid the outage: tests/test_clock_replay.py).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from streams.topics import partition_for
from tests.kafka.kafkatools import wait_for
from tests.kafka.test_engine import demo_messages, expected_outputs
from tests.kafka.workers import (
    Outputs,
    await_dead_letters_and_a_transition,
    cloud_event,
    engine_env,
    engine_topics,
    group_done,
    publish,
    route,
    running_worker,
    signed,
)
from workflows.clock import TICK_AUTH
from workflows.engine import TICK_KEY
from workflows.timeutil import SECOND, format_time

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]


async def test_forged_ticks_are_dead_lettered_and_a_force_manual_after_them_works(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=2)
    s = engine.settings
    n = s.partitions
    untagged = cloud_event("clock.tick.v1", "tick/forged", "8999-12-31T23:59:59Z", None, {})
    other_key = signed(
        cloud_event("clock.tick.v1", "tick/forged2", "8999-12-31T23:59:58Z", None, {}),
        "another-key-" + "x" * 32,
    )
    assert TICK_AUTH in orjson.loads(other_key)
    forged = [
        (t, TICK_KEY.encode(), value, p)
        for value in (untagged, other_key)
        for t in engine.inputs
        for p in range(n)
    ]
    force = cloud_event(
        "operator.override.v1",
        "override/ektp/1",
        "2019-02-05T00:00:10Z",
        "ektp",
        {
            "action": "force_manual",
            "actor": "Kepala Dinas",
            "role": "office-head",
            "reason": "test",
        },
    )
    tick = cloud_event("clock.tick.v1", "tick/1", "2019-02-05T00:01:00Z", None, {})
    real = [
        (s.topic_overrides, b"ektp", force, partition_for("ektp", n)),
        *((t, TICK_KEY.encode(), tick, p) for t in engine.inputs for p in range(n)),
    ]
    async with engine_topics(engine):
        await publish(kafka_bootstrap, forged, sign=False)
        await publish(kafka_bootstrap, real)  # the ticks tagged with the workers' key
        outputs = Outputs(kafka_bootstrap, [s.topic_transitions, s.topic_deadletter])
        async with outputs, running_worker(engine) as worker:
            await await_dead_letters_and_a_transition(engine, worker, outputs, len(forged))
    dead = outputs.of(s.topic_deadletter)
    assert len(dead) == len(forged)
    for record in dead:
        assert record.headers["failover-reason"].startswith(b"unauthenticated-tick: ")
        assert record.value in (untagged, other_key)  # the original bytes
        assert record.key == TICK_KEY.encode()
    (transition,) = outputs.of(s.topic_transitions)
    event = orjson.loads(transition.value)
    assert (event["subject"], event["data"]["from"], event["data"]["to"]) == (
        "ektp",
        "online",
        "manual",
    )
    assert event["data"]["cause"] == "override/ektp/1"
    assert event["time"] == "2019-02-05T00:00:10Z"


@pytest.mark.slow
async def test_a_reading_from_the_future_is_dead_lettered_and_the_outage_plays_out(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=2)
    s = engine.settings
    ahead = format_time((time.time_ns() // 1000 // SECOND + 86400) * SECOND)
    spoof = cloud_event(
        "link.status.v1",
        "probe/evil/1",
        ahead,
        "telkom-sto-pattimura",
        {"status": "up", "latency_ms": 1.0, "loss_pct": 0.0},
        source="/probe/evil",
    )
    messages = demo_messages(s)
    # Before the outage begins (the demo's line 100), as in the replay of the finding.
    at = next(i for i, m in enumerate(messages) if b"2019-02-04T22:55:00Z" in m[2])
    messages[at:at] = [(t, k, spoof, p) for t, k, p in route(s, spoof)]
    expected, reasons = expected_outputs(s)  # replay of the demo without the spoof
    total = sum(len(v) for v in expected.values()) + sum(reasons.values()) + 1
    async with engine_topics(engine):
        await publish(kafka_bootstrap, messages)
        topics = [s.topic_commands, s.topic_transitions, s.topic_audit, s.topic_deadletter]
        outputs = Outputs(kafka_bootstrap, topics)
        async with outputs, running_worker(engine) as worker:

            async def complete() -> bool:
                assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
                await outputs.poll()
                return len(outputs.records) >= total

            async def settled() -> bool:
                return await group_done(engine) and await outputs.at_end()

            try:
                await wait_for(complete, timeout=150, what=f"{total} output records")
                await wait_for(settled, timeout=30, what="the worker to commit every input")
            except AssertionError:
                print(engine.log_tail())
                raise
    got: dict[tuple[str, str], list[bytes]] = {}
    for record in outputs.records:
        if record.topic != s.topic_deadletter:
            assert record.key is not None
            got.setdefault((record.topic, record.key.decode()), []).append(record.value)
    assert got == expected
    transitions = sum(len(v) for (t, _), v in expected.items() if t == s.topic_transitions)
    assert transitions == 20  # the whole outage, not 3
    dead = outputs.of(s.topic_deadletter)
    got_reasons = Counter(r.headers["failover-reason"].decode() for r in dead)
    [future] = [r for r in dead if r.value == spoof]
    reason = future.headers["failover-reason"].decode()
    assert reason.startswith(f"future-time: {ahead} is after ")
    got_reasons[reason] -= 1
    assert +got_reasons == reasons
