"""Any partitioner: readings that land on a partition their link does not hash to (murmur2)
are forwarded to it through the engine's repartition topic, and the output is still exactly
replay's.

- The demo with every reading where librdkafka's default partitioner (kcat's,
  ``consistent_random``: CRC-32 of the key) puts it, ticks and service inputs as the
  engine's own producers send them, each record between the same two ticks as in the file.
- The demo with every reading on a wrong partition, the worker SIGKILLed twice mid-stream.
"""

from __future__ import annotations

import signal
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from streams.config import Settings
from streams.topics import partition_for
from tests.kafka.kafkatools import wait_for
from tests.kafka.test_engine import assert_parity, demo_messages, demo_total, finish
from tests.kafka.workers import (
    Outputs,
    engine_env,
    engine_topics,
    publish,
    running_worker,
    start_worker,
)

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]

Message = tuple[str, bytes | None, bytes, int | None]


def _is_reading(raw: bytes) -> bool:
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return isinstance(event, dict) and event.get("type") == "link.status.v1"


def consistent_random(key: bytes, n: int) -> int:
    """librdkafka's default partitioner for a keyed record (kcat's, confluent-kafka-go's,
    ``consistent_random``): CRC-32 of the key, modulo the partition count."""
    return zlib.crc32(key) % n


def _wrong(key: bytes, n: int) -> int:
    """The partition after the key's own (murmur2)."""
    return (partition_for(key, n) + 1) % n


def _placed(
    settings: Settings, partitioner: Callable[[bytes, int], int]
) -> tuple[list[Message], int]:
    """The demo's messages, every reading on the partition ``partitioner`` gives its key
    (ticks and service inputs as the engine's producers send them), and how many readings
    are not on their link's partition."""
    n = settings.partitions
    out: list[Message] = []
    misrouted = 0
    for topic, key, raw, partition in demo_messages(settings):
        if topic == settings.topic_link_status and key is not None and _is_reading(raw):
            partition = partitioner(key, n)
            misrouted += partition != partition_for(key, n)
        out.append((topic, key, raw, partition))
    return out, misrouted


def _outputs(bootstrap: str, s: Settings) -> Outputs:
    topics = [s.topic_commands, s.topic_transitions, s.topic_audit, s.topic_deadletter]
    return Outputs(bootstrap, topics)


@pytest.mark.slow
async def test_readings_from_the_consistent_random_partitioner_give_replay_output(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=3)
    s = engine.settings
    async with engine_topics(engine):
        messages, misrouted = _placed(s, consistent_random)
        assert misrouted > 1000  # CRC-32 and murmur2 agree on about a third
        await publish(kafka_bootstrap, messages)
        outputs = _outputs(kafka_bootstrap, s)
        async with outputs, running_worker(engine) as worker:
            await finish(engine, outputs, worker)
        assert_parity(engine, outputs)


@pytest.mark.slow
async def test_every_reading_on_a_wrong_partition_and_kills_give_replay_output(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """Every reading forwarded, the worker SIGKILLed twice while it works (its open
    transactions, forwarded readings and markers among them, left hanging): the committed
    output is exactly replay's."""
    engine = engine_env(
        kafka_bootstrap, unique_name, tmp_path, partitions=3, FAILOVER_SESSION_TIMEOUT="6"
    )
    s = engine.settings
    total = demo_total(s)
    async with engine_topics(engine):
        messages, misrouted = _placed(s, _wrong)
        assert misrouted > 4000
        await publish(kafka_bootstrap, messages)
        outputs = _outputs(kafka_bootstrap, s)
        async with outputs:
            for kill_at in (total // 4, total // 2):
                worker = start_worker(engine)

                async def progressed(
                    worker: subprocess.Popen[bytes] = worker, kill_at: int = kill_at
                ) -> bool:
                    assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
                    await outputs.poll()
                    return len(outputs.records) >= kill_at

                await wait_for(progressed, timeout=120, what=f"{kill_at} output records")
                worker.send_signal(signal.SIGKILL)
                worker.wait(timeout=30)
            async with running_worker(engine) as worker:
                await finish(engine, outputs, worker)
        assert_parity(engine, outputs)  # the same dead letters: none "wrong-partition"
