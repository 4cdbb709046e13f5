"""A broker outage: the broker stops for 20 s and starts again while the worker runs. The worker
recovers on its own (the test never restarts it) and the output is still exactly replay's.

The broker is the test's own (``private_kafka``): stopping the session's broker would break
every other test running against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.topics import ensure_topics, topic_specs
from tests.conftest import PrivateKafka
from tests.kafka.kafkatools import wait_for
from tests.kafka.test_engine import assert_parity, demo_total
from tests.kafka.workers import (
    DEMO_EVENTS,
    Engine,
    Outputs,
    engine_env,
    group_done,
    group_lag,
    publish,
    route,
    running_worker,
)
from workflows.replay import read_lines

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]

#: How long the broker is away: the outage the README says the worker rides out.
OUTAGE = 20.0

#: What aiokafka logs, thousands of times a second, while the broker is away: left out of
#: the log tails shown on failure.
_RECONNECTING = ("Unable connect to node", "Unable to update metadata", "NodeNotReadyError")


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _log_tail(engine: Engine, lines: int = 80) -> str:
    out = []
    for path in sorted(engine.logs.glob("worker-*.log")):
        text = path.read_text(errors="replace").splitlines()
        kept = [line for line in text if not any(noise in line for noise in _RECONNECTING)]
        out.append(f"--- {path.name} ({len(text) - len(kept)} reconnect lines left out)")
        out.extend(kept[-lines:])
    return "\n".join(out)


@pytest.mark.slow
async def test_broker_down_20s_worker_recovers_on_its_own_output_is_replays(
    private_kafka: PrivateKafka, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """First half of the demo in; once some output is committed, the broker stops (SIGTERM,
    data kept) for 20 s under the running worker and starts again on the same data; then the
    second half. The same worker process commits every input, and per service the committed
    commands and transitions are exactly replay's, with replay's dead letters."""
    bootstrap = private_kafka.address
    engine = engine_env(bootstrap, unique_name, tmp_path, partitions=3)
    s = engine.settings
    total = demo_total(s)
    lines = list(read_lines(DEMO_EVENTS))
    half = len(lines) // 2
    messages = [
        [(topic, key, raw, p) for _, raw in part for topic, key, p in route(s, raw)]
        for part in (lines[:half], lines[half:])
    ]
    # No topic clean-up: the whole broker is wiped afterwards.
    await ensure_topics(s.bootstrap_servers, topic_specs(s), s.replication)
    topics = [s.topic_commands, s.topic_transitions, s.topic_audit, s.topic_deadletter]
    await publish(bootstrap, messages[0])
    async with running_worker(engine) as worker:

        def alive() -> None:
            assert worker.poll() is None, "the worker exited"

        try:
            async with Outputs(bootstrap, topics) as before:

                async def some_output() -> bool:
                    alive()
                    await before.poll()
                    return len(before.records) >= total // 4

                await wait_for(some_output, timeout=120, what=f"{total // 4} output records")
            await asyncio.to_thread(private_kafka.down)
            cpu_before = _cpu_seconds(worker.pid)
            deadline = time.monotonic() + OUTAGE
            while time.monotonic() < deadline:  # the outage, lived through by the worker
                alive()
                await asyncio.sleep(0.5)
            outage_cpu = _cpu_seconds(worker.pid) - cpu_before
            await asyncio.to_thread(private_kafka.up)
            alive()
            # No busy loop while the broker is away (streams/outage.py): aiokafka's retries
            # burnt a whole core, 19-20 s of CPU in these 20 s, before the patch; ~1 s after.
            assert outage_cpu < OUTAGE / 4, f"{outage_cpu:.1f} s of CPU during the outage"
            await publish(bootstrap, messages[1])
            # A fresh reader, from the beginning: what the restarted broker kept, committed.
            outputs = Outputs(bootstrap, topics)
            async with outputs:

                async def complete() -> bool:
                    alive()
                    await outputs.poll()
                    return len(outputs.records) >= total

                async def settled() -> bool:
                    alive()
                    return await group_done(engine) and await outputs.at_end()

                await wait_for(complete, timeout=240, what=f"{total} output records")
                await wait_for(settled, timeout=60, what="the worker to commit every input")
            alive()
        except AssertionError:
            print(_log_tail(engine))
            with contextlib.suppress(Exception):
                print("lag:", await asyncio.wait_for(group_lag(engine), timeout=30))
            raise
    assert len(engine.workers) == 1  # recovered on its own: never restarted
    assert_parity(engine, outputs)
