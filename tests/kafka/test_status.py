"""``failover status`` against a real broker: a compacted read-model topic filled with every
state record ``replay --state`` writes for the demo (so that only the last of each service
counts), plus a tombstone and a record that is not a state record; the command reads it to
its end, read_committed, without a consumer group."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from typer.testing import CliRunner

from streams.cli import app
from streams.status import matching
from streams.topics import partition_for
from tests.kafka.kafkatools import topics
from tests.kafka.workers import DEMO_EVENTS, DEMO_TOPOLOGY
from workflows.records import STATE, Emitted
from workflows.replay import read_lines, replay
from workflows.topology import Topology

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]

PARTITIONS = 3


def demo_records() -> list[Emitted]:
    topology = Topology.load(DEMO_TOPOLOGY)
    return [
        r
        for r in replay(topology, read_lines(DEMO_EVENTS), "demo", state=True)
        if isinstance(r, Emitted) and r.topic == STATE
    ]


def last_data() -> list[dict[str, Any]]:
    return list({r.key: r.event["data"] for r in demo_records()}.values())


@pytest_asyncio.fixture
async def state_topic(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> AsyncIterator[str]:
    name = unique_name("state")
    config = {"cleanup.policy": "compact"}
    async with topics(kafka_bootstrap, name, partitions=PARTITIONS, config=config):
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            for r in demo_records():
                key = r.key.encode()
                await producer.send(name, orjson.dumps(r.event), key=key,
                                    partition=partition_for(key, PARTITIONS))  # fmt: skip
            gone = b"retired-service"
            where = partition_for(gone, PARTITIONS)
            await producer.send(name, orjson.dumps(demo_records()[0].event), key=gone,
                                partition=where)  # fmt: skip
            await producer.send(name, None, key=gone, partition=where)  # a tombstone
            await producer.send(name, b"not json", key=b"x", partition=partition_for(b"x", 3))
            await producer.flush()
        finally:
            await producer.stop()
        yield name


async def status(bootstrap: str, topic: str, *args: str) -> Any:
    """The command, run as a user would (it runs its own event loop: on a thread here)."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "FAILOVER_TOPIC_STATE": topic}
    return await asyncio.to_thread(CliRunner().invoke, app, ["status", *args], env=env)


async def test_json_is_the_last_record_of_every_service(
    kafka_bootstrap: str, state_topic: str
) -> None:
    result = await status(kafka_bootstrap, state_topic, "--json")
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout) == matching(last_data(), None, None)


async def test_one_whole_line_per_service_with_its_state_and_reason(
    kafka_bootstrap: str, state_topic: str
) -> None:
    result = await status(kafka_bootstrap, state_topic)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    expected = matching(last_data(), None, None)
    assert len(lines) == 1 + len(expected)
    for line, data in zip(lines[1:], expected, strict=True):
        assert line.split()[:3] == [data["site"], data["service"], data["state"]]
        if data["last_reason"]:
            assert data["last_reason"] in line
        if data["since"]:
            assert data["since"][:10] + " " + data["since"][11:16] in line  # site local time


async def test_filters_and_the_group_it_does_not_join(
    kafka_bootstrap: str, state_topic: str
) -> None:
    result = await status(kafka_bootstrap, state_topic, "--site", "kecamatan-sirimau", "--json")
    assert result.exit_code == 0, result.output
    assert [d["service"] for d in orjson.loads(result.stdout)] == ["rekam-ktp-kecamatan"]
    result = await status(kafka_bootstrap, state_topic, "--state", "manual")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "no service matches"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        groups = [g[0] for g in await admin.list_consumer_groups()]
    finally:
        await admin.close()
    assert not [g for g in groups if state_topic in g]


async def test_an_unknown_site_or_topic_is_an_error(
    kafka_bootstrap: str, state_topic: str, unique_name: Callable[[str], str]
) -> None:
    result = await status(kafka_bootstrap, state_topic, "--site", "atlantis")
    assert result.exit_code == 2
    assert "unknown site 'atlantis' (sites: disdukcapil-ambon, kecamatan-sirimau)" in (
        result.stderr
    )
    missing = unique_name("missing")
    result = await status(kafka_bootstrap, missing)
    assert result.exit_code == 2
    assert f"topic {missing!r} does not exist" in result.stderr
