"""The faust behaviour streams/patches/recovery.py works around, shown on the real broker."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams import patches
from streams.patches.recovery import _highwaters_from_broker, _on_recovery_completed
from tests.kafka.kafkatools import client_options, topics, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]


async def test_recovery_highwaters_come_from_the_broker(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """A changelog written in transactions, read by a new read_committed consumer (a worker
    that just started): the last stable offset faust recovers tables up to is unknown to the
    consumer until it has fetched, so faust would take the changelog for empty."""
    topic = unique_name("changelog")
    tp = TopicPartition(topic, 0)
    async with topics(kafka_bootstrap, topic):
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap,
            transactional_id=unique_name("txn"),
            **client_options(),
        )
        await producer.start()
        try:
            async with producer.transaction():
                for n in range(5):
                    await producer.send(topic, b"state", key=f"k{n}".encode(), partition=0)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap, isolation_level="read_committed", **client_options()
        )
        await consumer.start()
        try:
            consumer.assign([tp])
            # What faust 0.15.3 recovers up to under exactly-once: nothing known yet.
            assert consumer.last_stable_offset(tp) is None
            thread = SimpleNamespace(_ensure_consumer=lambda: consumer)

            async def five_records_and_the_commit_marker() -> bool:
                # Right after EndTxn the broker may still be writing the marker: until it is
                # written, the last stable offset is the transaction's first offset.
                highwaters = await _highwaters_from_broker(thread, [tp])
                assert highwaters[tp] in (0, 6)
                return bool(highwaters[tp] == 6)

            await wait_for(five_records_and_the_commit_marker, 10.0, "the last stable offset")
            assert consumer.last_stable_offset(tp) is None  # the consumer still knows nothing
        finally:
            await consumer.stop()


async def test_the_patches_are_installed() -> None:
    from faust.tables.recovery import Recovery
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    patches.install()
    patches.install()
    assert AIOKafkaConsumerThread._highwaters is _highwaters_from_broker
    assert Recovery.on_recovery_completed is _on_recovery_completed
