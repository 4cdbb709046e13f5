"""A poison input on a real broker: a worker whose core raises on chosen inputs keeps going,
commits past them, and puts each on the dead-letter topic with its original key, bytes and
headers, and ``internal-error`` as the reason; the other inputs are applied as usual."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.topics import partition_for
from tests.kafka.kafkatools import wait_for
from tests.kafka.workers import (
    ROOT,
    Engine,
    Outputs,
    cloud_event,
    engine_env,
    engine_topics,
    group_done,
    publish,
    stop_worker,
)
from workflows.engine import TICK_KEY

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]

PREFIX = "poison/"


def start_poisoned_worker(engine: Engine) -> subprocess.Popen[bytes]:
    """``failover worker`` with the fault of tests/kafka/poison.py in its core."""
    log = (engine.logs / "worker-0.log").open("wb")
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); import tests.kafka.poison; "
        "from streams.cli import main; main()"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, "worker"],
        env={**os.environ, **engine.env, "PYTHONUNBUFFERED": "1", "FAILOVER_TEST_POISON": PREFIX},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=engine.logs,
    )
    log.close()
    engine.workers.append(process)
    return process


async def test_a_poison_input_is_dead_lettered_and_the_worker_goes_on(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=2)
    s = engine.settings
    n = s.partitions
    at = "2019-02-05T00:00:10Z"

    def keyed(topic: str, key: str, value: bytes) -> tuple[str, bytes, bytes, int]:
        return topic, key.encode(), value, partition_for(key, n)

    def override(ident: str, service: str) -> bytes:
        data = {
            "action": "force_manual",
            "actor": "Kepala Dinas",
            "role": "office-head",
            "reason": "t",
        }
        return cloud_event("operator.override.v1", ident, at, service, data)

    reading = cloud_event("link.status.v1", f"{PREFIX}reading", at, "backup-4g",
                          {"status": "down", "latency_ms": None, "loss_pct": None})  # fmt: skip
    bad_override = override(f"{PREFIX}override", "ektp")
    good_override = override("override/akta-lahir", "akta-lahir")
    tick = cloud_event("clock.tick.v1", "tick/1", "2019-02-05T00:01:00Z", None, {})
    ticks = [(t, TICK_KEY.encode(), tick, p) for t in engine.inputs for p in range(n)]
    poisoned = [
        keyed(s.topic_link_status, "backup-4g", reading),
        keyed(s.topic_overrides, "ektp", bad_override),
    ]
    headers = [
        ("x-sender", b"probe \xff"),
        ("traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"),
    ]
    async with engine_topics(engine):
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            for topic, key, value, partition in poisoned:
                await producer.send_and_wait(topic, value, key=key, partition=partition,
                                             headers=headers)  # fmt: skip
        finally:
            await producer.stop()
        await publish(kafka_bootstrap, [keyed(s.topic_overrides, "akta-lahir", good_override),
                                        *ticks])  # fmt: skip
        outputs = Outputs(kafka_bootstrap, [s.topic_transitions, s.topic_deadletter])
        worker = start_poisoned_worker(engine)
        try:
            async with outputs:

                async def done() -> bool:
                    assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
                    await outputs.poll()
                    return (
                        len(outputs.of(s.topic_deadletter)) >= 2
                        and bool(outputs.of(s.topic_transitions))
                        and await group_done(engine)
                    )

                try:
                    await wait_for(done, timeout=90, what="two dead letters, a transition, commits")
                except AssertionError:
                    print(engine.log_tail())
                    raise
                assert worker.poll() is None  # still running: nothing stopped it
        finally:
            assert await stop_worker(worker) == 0
    dead = {r.value: r for r in outputs.of(s.topic_deadletter)}
    assert set(dead) == {reading, bad_override}
    for topic, key, value, partition in poisoned:
        record = dead[value]  # the original bytes
        assert record.key == key
        reason = record.headers["failover-reason"].decode()
        assert reason.startswith("internal-error: PoisonError: injected fault for poison/"), reason
        assert record.headers["failover-source-topic"].decode() == topic
        assert int(record.headers["failover-source-partition"]) == partition
        assert record.headers["x-sender"] == b"probe \xff"  # the original headers
    (transition,) = outputs.of(s.topic_transitions)
    event = orjson.loads(transition.value)
    assert (event["subject"], event["data"]["to"]) == ("akta-lahir", "manual")
