"""The board against the real broker: it catches up with transactional state records, shows
later ones live, survives a restart with the same state, and reads the engine's lag from the
broker's committed offsets with no worker running."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata

from streams.security import KafkaSecurity
from tests.boardrecords import ROOT, ambon_manual, ektp_restored
from tests.conftest import SecureKafka
from tests.conftest import _free_port as free_port
from tests.kafka.boardtools import RunningBoard, board_topics, produce, running_board
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


async def test_the_command_serves_and_failover_status_reads_it(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """``failover board`` as an operator starts it, and ``failover status --board`` (the
    engine's command line) reading the board's API; SIGTERM stops the board cleanly."""
    t = board_topics(unique_name)
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "FAILOVER_TOPIC_STATE": t.state,
        "FAILOVER_TOPIC_TRANSITIONS": t.transitions,
        "FAILOVER_TOPIC_COMMANDS": t.commands,
        "FAILOVER_APP_ID": unique_name("engine"),
        "FAILOVER_TOPOLOGY": str(ROOT / "streams" / "demo" / "ambon.yaml"),
    }
    command = [sys.executable, "-c", "from streams.cli import main; main()"]
    url = f"http://127.0.0.1:{port}"
    async with (
        created(kafka_bootstrap, t.state, partitions=3, config=COMPACT),
        created(kafka_bootstrap, t.transitions, t.commands, partitions=3),
    ):
        await produce(kafka_bootstrap, t, ambon_manual())
        log = (tmp_path / "board.log").open("wb")
        board = subprocess.Popen(
            [*command, "board", "--port", str(port)], env=env, stdout=log, stderr=log
        )
        try:
            async with aiohttp.ClientSession() as http:

                async def ready() -> bool:
                    assert board.poll() is None, (tmp_path / "board.log").read_text()
                    try:
                        async with http.get(url + "/readyz") as response:
                            return response.status == 200
                    except aiohttp.ClientConnectionError:
                        return False

                await wait_for(ready, 60, "failover board to be ready")
                async with http.get(url + "/api/services?state=manual") as response:
                    served = (await response.json())["services"]
                # With the topology, the page names the site and incidents show WIT.
                async with http.get(url + "/?site=disdukcapil-ambon") as response:
                    assert "Disdukcapil Kota Ambon" in await response.text()
            status = await asyncio.to_thread(
                subprocess.run,
                [*command, "status", "--board", url, "--state", "manual", "--json"],
                env=env, capture_output=True, timeout=60, check=False,
            )  # fmt: skip
            assert status.returncode == 0, status.stderr
            assert orjson.loads(status.stdout) == served
            assert len(served) == 4
        finally:
            board.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(board.wait, 30)
            log.close()
        assert code == 0, (tmp_path / "board.log").read_text()


async def test_on_the_secured_broker(
    secure_kafka: SecureKafka, unique_name: Callable[[str], str]
) -> None:
    """On a broker that takes only SASL_SSL (SCRAM) and denies what its ACLs do not allow,
    the board connects with the worker's security settings, as the engine's user."""
    security = KafkaSecurity.from_env(secure_kafka.engine_env)
    assert security.protocol == "SASL_SSL"
    options = security.client_options()
    address = secure_kafka.address
    t = board_topics(unique_name)
    admin = AIOKafkaAdminClient(bootstrap_servers=address, **options)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(t.state, 3, 1, topic_configs=COMPACT),
                NewTopic(t.transitions, 3, 1),
                NewTopic(t.commands, 3, 1),
            ]
        )
        await produce(address, t, ambon_manual(), **options)
        async with running_board(address, t, unique_name("engine"), security) as board:
            await board.wait_ready()
            _, body = await board.get("/api/services?not_online=1")
            assert len(body["services"]) == 4
            await wait_for(
                lambda: _has_lag_reading(board), 30, "the lag read on the secured broker"
            )
    finally:
        await admin.delete_topics([t.state, t.transitions, t.commands])
        await admin.close()


async def _has_lag_reading(board: RunningBoard) -> bool:
    _, text = await board.get("/metrics")
    return "failover_engine_consumer_lag_checked_timestamp_seconds" in text
