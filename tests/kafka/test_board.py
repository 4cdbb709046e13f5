"""The board against the real broker: it catches up with transactional state records, shows
later ones live, survives a restart with the same state, and reads the engine's lag from the
broker's committed offsets with no worker running."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from tests.boardrecords import ambon_manual, ektp_restored
from tests.kafka.boardtools import board_topics, produce, running_board
from tests.kafka.kafkatools import topics as created
from tests.kafka.kafkatools import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]

COMPACT = {"cleanup.policy": "compact"}


async def test_catches_up_then_follows_and_restarts_with_the_same_state(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    t = board_topics(unique_name)
    async with (
        created(kafka_bootstrap, t.state, partitions=3, config=COMPACT),
        created(kafka_bootstrap, t.transitions, t.commands, partitions=3),
    ):
        await produce(kafka_bootstrap, t, ambon_manual())
        async with running_board(kafka_bootstrap, t) as first:
            await first.wait_ready()
            # Ready means caught up: everything written before the start is there.
            status, body = await first.get("/api/services?not_online=1")
            assert status == 200
            assert [s["service"] for s in body["services"]] == [
                "akta-lahir", "ektp", "legalisasi", "surat-pindah",
            ]  # fmt: skip
            assert body["heard_from_kafka"] is not None
            await produce(kafka_bootstrap, t, ektp_restored())
            await first.wait_service("ektp", "online")
            before = await first.get("/api/services")
            incident = await first.get("/api/incidents/ektp%4020190204T231200Z")
            assert incident[1]["open"] is False
        async with running_board(kafka_bootstrap, t) as second:
            await second.wait_ready()
            after = await second.get("/api/services")
            assert after[1]["services"] == before[1]["services"]
            assert await second.get("/api/incidents/ektp%4020190204T231200Z") == incident


async def test_engine_lag_from_the_broker_with_no_worker(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    t = board_topics(unique_name)
    source, group = unique_name("input"), unique_name("engine")
    async with (
        created(kafka_bootstrap, t.state, config=COMPACT),
        created(kafka_bootstrap, source, partitions=2),
    ):
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for n in range(10):
                await producer.send_and_wait(source, b"x", partition=n % 2)
        finally:
            await producer.stop()
        # The "engine" committed 3 of partition 0's 5 records and 5 of partition 1's, then died.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign([TopicPartition(source, 0), TopicPartition(source, 1)])
            await consumer.commit(
                {
                    TopicPartition(source, 0): OffsetAndMetadata(3, ""),
                    TopicPartition(source, 1): OffsetAndMetadata(5, ""),
                }
            )
        finally:
            await consumer.stop()
        async with running_board(kafka_bootstrap, t, engine_group=group) as board:

            async def measured() -> bool:
                _, text = await board.get("/metrics")
                return f'failover_engine_consumer_lag{{group="{group}",topic="{source}"}} 2.0' in (
                    text
                )

            await wait_for(measured, 30, "the engine's lag on /metrics")
