"""What the engine relies on the broker for, proven against the real one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.kafka.kafkatools import client_options, topics, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]


async def test_idempotent_producer_round_trip(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("roundtrip")
    async with topics(kafka_bootstrap, topic):
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, enable_idempotence=True, **client_options()
        )
        await producer.start()
        try:
            for n in range(20):
                await producer.send_and_wait(topic, f"v{n}".encode(), key=b"k")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            auto_offset_reset="earliest",
            **client_options(),
        )
        await consumer.start()
        try:
            seen: list[bytes] = []
            while len(seen) < 20:
                batch = await consumer.getmany(timeout_ms=1000)
                seen.extend(r.value for records in batch.values() for r in records if r.value)
        finally:
            await consumer.stop()
    assert seen == [f"v{n}".encode() for n in range(20)]


async def test_read_committed_never_sees_aborted_records(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("txn")
    async with topics(kafka_bootstrap, topic):
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap,
            transactional_id=unique_name("txn-id"),
            **client_options(),
        )
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send_and_wait(topic, b"committed-1")
            await producer.begin_transaction()
            await producer.send_and_wait(topic, b"aborted")
            await producer.abort_transaction()
            async with producer.transaction():
                await producer.send_and_wait(topic, b"committed-2")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            **client_options(),
        )
        await consumer.start()
        try:
            seen: list[bytes] = []
            tp = TopicPartition(topic, 0)

            async def caught_up() -> bool:
                batch = await consumer.getmany(timeout_ms=200)
                seen.extend(r.value for rs in batch.values() for r in rs if r.value)
                end = (await consumer.end_offsets([tp]))[tp]
                return await consumer.position(tp) >= end

            await wait_for(caught_up, what="the consumer to reach the end of the topic")
        finally:
            await consumer.stop()
    assert seen == [b"committed-1", b"committed-2"]


async def test_group_of_two_moves_partitions_when_one_leaves(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic, group = unique_name("group"), unique_name("group")
    async with topics(kafka_bootstrap, topic, partitions=4):

        def member() -> AIOKafkaConsumer:
            return AIOKafkaConsumer(
                topic,
                bootstrap_servers=kafka_bootstrap,
                group_id=group,
                session_timeout_ms=6000,
                heartbeat_interval_ms=500,
                **client_options(),
            )

        first, second = member(), member()
        await first.start()
        await second.start()
        try:
            # Polling drives the group protocol; wait until both hold a share.
            async def shared() -> bool:
                await asyncio.gather(first.getmany(timeout_ms=100), second.getmany(timeout_ms=100))
                a, b = first.assignment(), second.assignment()
                return len(a) == 2 and len(b) == 2 and not (a & b)

            await wait_for(shared, what="two members with two partitions each")
            await second.stop()

            async def took_over() -> bool:
                await first.getmany(timeout_ms=100)
                return len(first.assignment()) == 4

            await wait_for(took_over, what="the remaining member to own all four partitions")
        finally:
            await first.stop()
            await second.stop()
