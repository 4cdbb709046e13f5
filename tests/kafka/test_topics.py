"""The topics the worker creates, on the real broker: the brokers' replication factor unless
``FAILOVER_REPLICATION`` says otherwise, and the transitions topic's explicit retention."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.topics import default_replication
from tests.kafka.kafkatools import client_options
from tests.kafka.workers import engine_env, engine_topics

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]


async def test_new_topics_get_the_brokers_replication_and_transitions_a_retention(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=2)
    s = engine.settings
    assert s.replication is None
    # The broker's own setting, read as the broker's tools show it (server.properties).
    expected = await default_replication(s.bootstrap_servers, security=s.security)
    assert expected == 1  # infra/kafka/up: default.replication.factor=1
    async with engine_topics(engine):
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, **client_options())
        await admin.start()
        try:
            described = await admin.describe_topics([s.topic_transitions, s.topic_commands])
            (response,) = await admin.describe_configs(
                [
                    ConfigResource(
                        ConfigResourceType.TOPIC, s.topic_transitions, {"retention.ms": None}
                    )
                ]
            )
        finally:
            await admin.close()
    for topic in described:
        assert {len(p["replicas"]) for p in topic["partitions"]} == {expected}
    ((code, _message, _type, _name, entries, *_),) = response.resources
    assert code == 0
    assert [(e[0], e[1]) for e in entries] == [("retention.ms", str(90 * 86_400_000))]
