"""Operators on a real broker: ``failover override`` signs and sends an override to a running
worker and prints the engine's verdict from the audit topic; a forged override is refused
with the same audit record and dead letter as replay gives for the same bytes."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nacl.signing
import orjson
import pytest

from streams.demokeys import demo_key
from streams.topics import partition_for
from tests.kafka.kafkatools import wait_for
from tests.kafka.workers import (
    ROOT,
    Outputs,
    cloud_event,
    engine_env,
    engine_topics,
    publish,
    running_worker,
)
from workflows.engine import TICK_KEY
from workflows.operators import sign_override
from workflows.records import AUDIT, DeadLetter, Emitted
from workflows.replay import replay
from workflows.timeutil import SECOND, format_time
from workflows.topology import Topology

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]

ACTING = "Plt. Kepala Dinas"


def _now(offset: float = 0.0) -> str:
    return format_time(int((time.time() + offset) * 1_000_000) // SECOND * SECOND)


async def test_failover_override_is_applied_and_its_verdict_printed(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=2)
    s = engine.settings
    key_file = tmp_path / "acting-head.key"
    key_file.write_text(base64.b64encode(bytes(demo_key(ACTING))).decode() + "\n")
    key_file.chmod(0o600)
    command = [
        str(Path(sys.executable).parent / "failover"), "override", "force_manual", "ektp",
        "--reason", "Jaringan putus; jangan dipaksakan.", "--operator", ACTING,
        "--role", "acting-head", "--key-name", "demo", "--key-file", str(key_file),
        "--wait", "90",
    ]  # fmt: skip
    async with engine_topics(engine):
        outputs = Outputs(kafka_bootstrap, [s.topic_transitions, s.topic_audit])
        async with outputs, running_worker(engine) as worker:
            cli = await asyncio.create_subprocess_exec(
                *command,
                env={**os.environ, **engine.env},
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            n = s.partitions
            number = 0

            async def answered() -> bool:
                # The engine applies an override at the first tick past its time: ticks at
                # the wall clock, as the worker's ticker would send them.
                nonlocal number
                assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
                number += 1
                tick = cloud_event("clock.tick.v1", f"tick/{number}", _now(), None, {})
                await publish(
                    kafka_bootstrap,
                    [(t, TICK_KEY.encode(), tick, p) for t in engine.inputs for p in range(n)],
                )
                return cli.returncode is not None or await _exited(cli)

            await wait_for(answered, timeout=120, what="the override's verdict")
            stdout, stderr = await cli.communicate()
            text = stdout.decode()
            assert cli.returncode == 0, (text, stderr.decode())
            await wait_for(lambda: _has(outputs, s.topic_transitions), what="the transition")
    assert f"as {ACTING}/demo" in text
    assert text.splitlines()[-1] == "applied"
    (audit,) = outputs.of(s.topic_audit)
    data = orjson.loads(audit.value)["data"]
    assert (data["verdict"], data["actor"], data["key"]) == ("applied", ACTING, f"{ACTING}/demo")
    (transition,) = outputs.of(s.topic_transitions)
    moved = orjson.loads(transition.value)["data"]
    assert (moved["to"], moved["operator"]["actor"]) == ("manual", ACTING)


async def _exited(process: asyncio.subprocess.Process) -> bool:
    try:
        await asyncio.wait_for(process.wait(), 0.5)
    except TimeoutError:
        return False
    return True


async def _has(outputs: Outputs, topic: str) -> bool:
    await outputs.poll()
    return bool(outputs.of(topic))


async def test_a_forged_override_is_refused_as_replay_refuses_it(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """The acting head's key id, a stranger's key: audited and dead-lettered, byte for byte
    what replay makes of the same input, and the service is not forced."""
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=2)
    s = engine.settings
    n = s.partitions
    at = _now(-5)
    event = orjson.loads(
        cloud_event(
            "operator.override.v1",
            "override/ektp/forged",
            at,
            "ektp",
            {"action": "release", "actor": ACTING, "role": "acting-head", "reason": "x"},
        )
    )
    forged = orjson.dumps(
        sign_override(event, f"{ACTING}/demo", nacl.signing.SigningKey(b"\x05" * 32))
    )
    tick = cloud_event("clock.tick.v1", "tick/after", _now(), None, {})
    messages = [
        (s.topic_overrides, b"ektp", forged, partition_for("ektp", n)),
        *((t, TICK_KEY.encode(), tick, p) for t in engine.inputs for p in range(n)),
    ]
    topology = Topology.load(ROOT / "streams" / "demo" / "ambon.yaml")
    expected = list(replay(topology, iter([(1, forged)]), "forged.jsonl"))
    (want_audit,) = [r for r in expected if isinstance(r, Emitted) and r.topic == AUDIT]
    (want_dead,) = [r for r in expected if isinstance(r, DeadLetter)]
    async with engine_topics(engine):
        await publish(kafka_bootstrap, messages)
        outputs = Outputs(kafka_bootstrap, [s.topic_audit, s.topic_deadletter])
        async with outputs, running_worker(engine) as worker:

            async def both() -> bool:
                assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
                await outputs.poll()
                return bool(outputs.of(s.topic_audit)) and bool(outputs.of(s.topic_deadletter))

            await wait_for(both, timeout=60, what="the audit record and the dead letter")
    (audit,) = outputs.of(s.topic_audit)
    assert audit.value == orjson.dumps(want_audit.event)
    (dead,) = outputs.of(s.topic_deadletter)
    assert dead.value == forged
    assert dead.headers["failover-reason"].decode() == want_dead.reason
    assert want_dead.reason == (
        f"unauthenticated: the signature does not verify with key '{ACTING}/demo'"
    )
