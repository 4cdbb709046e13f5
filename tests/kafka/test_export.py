"""``failover export`` on a real broker: a scenario through ``failover worker``, exported,
replayed, equals what the engine committed.

The demo is published in file order (ticks to every partition of the three inputs), plus two
inputs only Kafka refuses: a tick without the engine's tag, stamped a day after the demo (if
the export kept it, replay would fire every escalation and close of that day), and an
override on the wrong partition (a reading there is forwarded, not refused). The export is
run as an operator runs it (the ``failover`` command in a subprocess, configured from the
environment) and replayed with the demo's topology.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from streams.topics import partition_for
from tests.kafka.kafkatools import wait_for
from tests.kafka.test_engine import demo_messages, demo_total
from tests.kafka.workers import (
    DEMO_EVENTS,
    DEMO_TOPOLOGY,
    Engine,
    Outputs,
    cloud_event,
    engine_env,
    engine_topics,
    group_done,
    group_lag,
    publish,
    running_worker,
)
from workflows.engine import TICK_KEY
from workflows.records import AUDIT, COMMANDS, TRANSITIONS, DeadLetter, Emitted
from workflows.replay import read_lines, replay
from workflows.timeutil import parse_time
from workflows.topology import Topology

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]

UNSIGNED_TICK = cloud_event(
    "clock.tick.v1", "tick/2019-02-07T06:00:00Z", "2019-02-07T06:00:00Z", None, {}
)


def _export(engine: Engine, out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from streams.cli import main; main()", "export", "--out",
         str(out), "--timeout", "60", *options],
        env={**os.environ, **engine.env}, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


def _replayed(path: Path) -> tuple[dict[tuple[str, str], list[bytes]], Counter[str]]:
    per_key: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    reasons: Counter[str] = Counter()
    for record in replay(Topology.load(DEMO_TOPOLOGY), read_lines(path), path.name):
        if isinstance(record, Emitted):
            per_key[(record.topic, record.key)].append(orjson.dumps(record.event))
        else:
            assert isinstance(record, DeadLetter)
            reasons[record.reason] += 1
    return per_key, reasons


@pytest.mark.slow
async def test_export_replays_to_what_the_engine_committed(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=3)
    s = engine.settings
    names = {COMMANDS: s.topic_commands, TRANSITIONS: s.topic_transitions, AUDIT: s.topic_audit}
    kafka_only = [
        (s.topic_link_status, TICK_KEY.encode(), UNSIGNED_TICK, 0),
        (  # a reading on the overrides topic (one on a wrong partition would be forwarded)
            s.topic_overrides,
            b"backup-4g",
            cloud_event("link.status.v1", "probe/backup-4g/misplaced",
                        "2019-02-06T06:00:30Z", "backup-4g",
                        {"status": "up", "latency_ms": 10.0, "loss_pct": 0.0}),
            partition_for("backup-4g", s.partitions),
        ),
    ]  # fmt: skip
    async with engine_topics(engine):
        await publish(kafka_bootstrap, demo_messages(s))
        await publish(kafka_bootstrap, kafka_only, sign=False)
        outputs = Outputs(kafka_bootstrap, [*names.values(), s.topic_deadletter])
        total = demo_total(s) + len(kafka_only)
        async with outputs, running_worker(engine) as worker:

            async def settled() -> bool:
                assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
                await outputs.poll()
                return (
                    len(outputs.records) >= total
                    and await group_done(engine)
                    and await outputs.at_end()
                )

            try:
                await wait_for(settled, timeout=180, what=f"{total} committed outputs")
            except AssertionError:
                print(engine.log_tail())
                print("lag:", await group_lag(engine))
                raise
            # Exported while the worker runs, as an on-call engineer would.
            whole = _export(engine, tmp_path / "incident.jsonl")
            until = _export(engine, tmp_path / "morning.jsonl", "--until", "2019-02-05T03:30:30Z")
        assert whole.returncode == 0, whole.stderr
        assert until.returncode == 0, until.stderr

    committed: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    for record in outputs.records:
        if record.topic in names.values():
            assert record.key is not None
            committed[(record.topic, record.key.decode())].append(record.value)
    topic_of = {v: k for k, v in names.items()}
    dead = Counter(r.headers["failover-reason"].decode() for r in outputs.of(s.topic_deadletter))

    got, reasons = _replayed(tmp_path / "incident.jsonl")
    assert {(names[t], k): v for (t, k), v in got.items()} == committed
    refused = Counter(r.split(":", 1)[0] for r in dead if r.startswith(("unauth", "wrong-t")))
    assert refused == {"unauthenticated-tick": 1, "wrong-topic": 1}
    assert reasons == dead - Counter({r: n for r, n in dead.items() if r.split(":")[0] in refused})
    assert "left out: 1 refused by the engine on Kafka only (unauthenticated-tick)" in whole.stderr
    assert "left out: 1 refused by the engine on Kafka only (wrong-topic)" in whole.stderr
    # The export is the demo's own inputs, each tick once (its ten copies on the partitions
    # are one line), the Kafka-only refusals left out.
    demo = list(read_lines(DEMO_EVENTS))
    exported = list(read_lines(tmp_path / "incident.jsonl"))
    assert len(exported) == len(demo)
    assert f"{sum(1 for _, r in demo if b'clock.tick.v1' in r)} ticks" in whole.stderr

    # Up to the last tick at or before --until: what the engine committed stamped by then.
    morning, _ = _replayed(tmp_path / "morning.jsonl")
    last_tick = parse_time("2019-02-05T03:30:00Z")
    by_then = {
        key: kept
        for key, values in committed.items()
        if (kept := [v for v in values if parse_time(orjson.loads(v)["time"]) <= last_tick])
    }
    assert {(names[t], k): v for (t, k), v in morning.items()} == by_then
    assert any(topic_of[t] == TRANSITIONS for t, _ in by_then)
    assert sum(map(len, by_then.values())) < sum(map(len, committed.values()))
