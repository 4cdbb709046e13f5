"""Maintenance windows on a real broker: ``failover maintenance announce`` signs a window and
sends it to every partition of the overrides topic of a running worker, prints the engine's
verdict from the audit topic (written once), and the worker's audit record and notices are
byte for byte what replay makes of the same window."""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import nacl.signing
import orjson
import pytest

from tests.kafka.kafkatools import wait_for
from tests.kafka.workers import (
    ROOT,
    Outputs,
    Ticker,
    cloud_event,
    demo_key_file,
    engine_env,
    engine_topics,
    group_done,
    publish,
    run_cli,
    running_worker,
    wall_time,
)
from workflows.engine import TICK_KEY
from workflows.operators import sign_override
from workflows.records import AUDIT, COMMANDS, DeadLetter, Emitted
from workflows.replay import replay
from workflows.topology import Topology

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]

HEAD = "Kepala Dinas"
WINDOW = "sto-pattimura-test"


async def test_failover_maintenance_announce_is_applied_audited_once_and_replays_the_same(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=3)
    s = engine.settings
    key_file = demo_key_file(tmp_path, HEAD)
    command = [
        str(Path(sys.executable).parent / "failover"), "maintenance", "announce", WINDOW,
        "--links", "telkom-sto-pattimura", "--start", wall_time(3600), "--end", wall_time(3 * 3600),
        "--notice-id", "Mohon maaf atas ketidaknyamanannya.",
        "--notice-en", "We apologise for the inconvenience.",
        "--reason", "Penyambungan ulang fiber di STO Pattimura.", "--operator", HEAD,
        "--role", "office-head", "--key-name", "demo", "--key-file", str(key_file),
        "--wait", "90",
    ]  # fmt: skip
    topics = [s.topic_overrides, s.topic_audit, s.topic_commands]
    async with engine_topics(engine):
        outputs = Outputs(kafka_bootstrap, topics)
        async with outputs, running_worker(engine) as worker:
            # The engine applies a window at the first tick past its time on every partition.
            ticker = Ticker(kafka_bootstrap, engine)
            code, text, err = await run_cli(
                command, engine, ticker, worker, what="the window's verdict"
            )
            assert code == 0, (text, err)

            async def announced() -> bool:
                await outputs.poll()
                return len(outputs.of(s.topic_commands)) >= 6

            await wait_for(announced, timeout=60, what="the announcements")
            # One more tick: a second audit record, had any partition written one, is in by now.
            await ticker.tick()
            await outputs.poll()
    assert f"as {HEAD}/demo" in text
    assert text.splitlines()[-1] == "applied"
    copies = outputs.of(s.topic_overrides)
    sent = [c for c in copies if c.key == WINDOW.encode()]
    assert sorted(c.partition for c in sent) == list(range(s.partitions))  # every partition
    assert len({c.value for c in sent}) == 1
    (audit,) = outputs.of(s.topic_audit)  # once, whatever the partitions
    data = orjson.loads(audit.value)["data"]
    assert (data["verdict"], data["window"], data["key"]) == ("applied", WINDOW, f"{HEAD}/demo")
    # Replay of the window, as it was sent: the same audit record and notices, byte for byte.
    topology = Topology.load(ROOT / "streams" / "demo" / "ambon.yaml")
    expected = list(replay(topology, iter([(1, sent[0].value)]), "window.jsonl"))
    want_audit = [orjson.dumps(r.event) for r in expected
                  if isinstance(r, Emitted) and r.topic == AUDIT]  # fmt: skip
    assert [audit.value] == want_audit
    want: dict[bytes, list[bytes]] = defaultdict(list)
    for r in expected:
        if isinstance(r, Emitted) and r.topic == COMMANDS:
            want[r.key.encode()].append(orjson.dumps(r.event))
    got: dict[bytes, list[bytes]] = defaultdict(list)
    for c in outputs.of(s.topic_commands):
        assert c.key is not None
        got[c.key].append(c.value)
    assert got == want
    assert sorted(want) == [b"akta-lahir", b"ektp", b"legalisasi"]
    templates = {orjson.loads(v)["data"]["template"] for vs in got.values() for v in vs}
    assert "maintenance-announce-hold-public" in templates


async def test_a_forged_window_is_refused_once_as_replay_refuses_it(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """The office head's key id, a stranger's key, sent to every partition: one audit record
    and one dead letter (by the partition that owns the window id), byte for byte what replay
    makes of the same input; nothing else comes of it."""
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=3)
    s = engine.settings
    n = s.partitions
    data = {
        "action": "announce", "actor": HEAD, "role": "office-head", "reason": "x",
        "links": ["telkom-sto-pattimura"], "start": wall_time(3600), "end": wall_time(7200),
        "notice": {"id": "x", "en": "x"},
    }  # fmt: skip
    event = orjson.loads(
        cloud_event("operator.maintenance.v1", "maintenance/forged", wall_time(-5), WINDOW, data)
    )
    forged = orjson.dumps(
        sign_override(event, f"{HEAD}/demo", nacl.signing.SigningKey(b"\x05" * 32))
    )
    tick = cloud_event("clock.tick.v1", "tick/after", wall_time(), None, {})
    messages = [
        *((s.topic_overrides, WINDOW.encode(), forged, p) for p in range(n)),
        *((t, TICK_KEY.encode(), tick, p) for t in engine.inputs for p in range(n)),
    ]
    topology = Topology.load(ROOT / "streams" / "demo" / "ambon.yaml")
    expected = list(replay(topology, iter([(1, forged)]), "forged.jsonl"))
    (want_audit,) = [r for r in expected if isinstance(r, Emitted) and r.topic == AUDIT]
    (want_dead,) = [r for r in expected if isinstance(r, DeadLetter)]
    async with engine_topics(engine):
        await publish(kafka_bootstrap, messages)
        outputs = Outputs(kafka_bootstrap, [s.topic_audit, s.topic_deadletter, s.topic_commands])
        async with outputs, running_worker(engine) as worker:

            async def both() -> bool:
                assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
                await outputs.poll()
                return bool(outputs.of(s.topic_audit)) and bool(outputs.of(s.topic_deadletter))

            await wait_for(both, timeout=60, what="the audit record and the dead letter")
            # Every partition has handled its copy and the tick once the group has no lag.
            await wait_for(lambda: group_done(engine), timeout=60, what="the group's lag")
            await outputs.poll()
    (audit,) = outputs.of(s.topic_audit)
    assert audit.value == orjson.dumps(want_audit.event)
    (dead,) = outputs.of(s.topic_deadletter)
    assert dead.value == forged
    assert dead.headers["failover-reason"].decode() == want_dead.reason
    assert want_dead.reason.startswith("unauthenticated: the signature does not verify")
    assert not outputs.of(s.topic_commands)
