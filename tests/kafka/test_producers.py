"""Producers that follow their ecosystem's defaults lose no reading: the demo published as
such a producer would publish it gives, on a real broker, the outputs replay gives.

- Binary mode: every event as the official CloudEvents SDK's Kafka binding makes it
  (``ce_*`` headers, the data as the value), ticks included (the tag is an attribute like
  any other).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streams.topics import partition_for
from tests.binary import binary
from tests.kafka.kafkatools import client_options
from tests.kafka.test_engine import expected_outputs, finish
from tests.kafka.workers import (
    BIG,
    DEMO_EVENTS,
    Engine,
    Outputs,
    engine_env,
    engine_topics,
    route,
    running_worker,
    signed,
)
from workflows.replay import read_lines

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]

Message = tuple[str, bytes | None, bytes, int | None, list[tuple[str, bytes]]]


async def send(bootstrap: str, messages: Iterable[Message]) -> None:
    """(topic, key, value, partition, headers) in order, one idempotent producer."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=BIG,
        **client_options(),
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, partition=partition, headers=headers)
            for topic, key, value, partition, headers in messages
        ]
        for future in futures:
            await future
    finally:
        await producer.stop()


def assert_same_as_replay(engine: Engine, outputs: Outputs, sent: set[bytes]) -> None:
    """Per (topic, service) the bytes replay gives, the same dead letters (by reason), each
    with a value that was sent."""
    s = engine.settings
    expected, reasons = expected_outputs(s)
    got: dict[tuple[str, str], list[bytes]] = {}
    for record in outputs.records:
        if record.topic in (s.topic_commands, s.topic_transitions, s.topic_audit):
            assert record.key is not None
            assert record.partition == partition_for(record.key, s.partitions)
            got.setdefault((record.topic, record.key.decode()), []).append(record.value)
    assert set(got) == set(expected)
    for key, events in expected.items():
        assert got[key] == events, key
    dead = outputs.of(s.topic_deadletter)
    assert Counter(r.headers["failover-reason"].decode() for r in dead) == reasons
    for record in dead:
        assert record.value in sent


@pytest.mark.slow
async def test_the_demo_in_binary_mode_gives_replays_outputs(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=3)
    s = engine.settings
    messages: list[Message] = []
    modes: Counter[str] = Counter()
    for _, raw in read_lines(DEMO_EVENTS):
        made = binary(signed(raw))
        modes["binary" if made is not None else "structured"] += 1
        value, headers = made if made is not None else (raw, [])
        messages.extend(
            (topic, key, value, partition, headers) for topic, key, partition in route(s, raw)
        )
    assert modes["binary"] > 6000  # every line but the demo's one that is not JSON
    async with engine_topics(engine):
        await send(kafka_bootstrap, messages)
        outputs = Outputs(kafka_bootstrap, [s.topic_commands, s.topic_transitions,
                                            s.topic_audit, s.topic_deadletter])  # fmt: skip
        async with outputs, running_worker(engine) as worker:
            await finish(engine, outputs, worker)
    assert_same_as_replay(engine, outputs, {m[2] for m in messages})
