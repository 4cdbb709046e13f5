"""The read model on a real broker: ``failover worker`` writes ``service-state`` (compacted)
in the transactions of its inputs, and what a read_committed reader finds there is what
``failover replay --state`` writes for the same input, byte for byte, also after SIGKILLs."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.topics import partition_for
from tests.kafka.kafkatools import wait_for
from tests.kafka.workers import (
    DEMO_EVENTS,
    DEMO_TOPOLOGY,
    Engine,
    Outputs,
    engine_env,
    engine_topics,
    group_done,
    group_lag,
    kill_twice,
    publish,
    route,
    running_worker,
)
from workflows.records import STATE, Emitted
from workflows.replay import read_lines, replay
from workflows.topology import Topology

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio, pytest.mark.slow]


def replay_state() -> dict[str, list[bytes]]:
    """Per service, the state records ``failover replay --state`` writes for the demo."""
    per_service: dict[str, list[bytes]] = defaultdict(list)
    topology = Topology.load(DEMO_TOPOLOGY)
    for record in replay(topology, read_lines(DEMO_EVENTS), "demo", state=True):
        if isinstance(record, Emitted) and record.topic == STATE:
            per_service[record.key].append(orjson.dumps(record.event))
    return per_service


async def publish_demo(engine: Engine, bootstrap: str) -> None:
    s = engine.settings
    await publish(
        bootstrap,
        [
            (topic, key, raw, partition)
            for _, raw in read_lines(DEMO_EVENTS)
            for topic, key, partition in route(s, raw)
        ],
    )


async def settle(engine: Engine, outputs: Outputs, worker: subprocess.Popen[bytes]) -> None:
    """Until the worker has committed every input, and the reader read everything committed."""
    expected = sum(len(v) for v in replay_state().values())

    async def done() -> bool:
        assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
        await outputs.poll()
        if len(outputs.records) < expected:
            return False
        return await group_done(engine) and await outputs.at_end()

    try:
        await wait_for(done, timeout=180, what=f"{expected} state records, every input committed")
    except AssertionError:
        print(engine.log_tail())
        print("lag:", await group_lag(engine))
        raise


def assert_state_is_replays(engine: Engine, outputs: Outputs) -> None:
    s = engine.settings
    expected = replay_state()
    got: dict[str, list[bytes]] = defaultdict(list)
    for record in outputs.of(s.topic_state):
        assert record.key is not None
        assert record.partition == partition_for(record.key, s.partitions)
        assert record.headers["failover-type"] == b"failover.service.state.v1"
        got[record.key.decode()].append(record.value)
    assert set(got) == set(expected)
    for service, values in expected.items():
        # The last record of each key (what compaction keeps): byte for byte replay's last.
        assert got[service][-1] == values[-1], service
        # And exactly-once: every record once, in replay's order.
        assert got[service] == values, service


async def topic_config(bootstrap: str, topic: str, name: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {name: None})]
        )
    finally:
        await admin.close()
    ((_code, _message, _type, _name, entries),) = response.resources
    return str(next(entry[1] for entry in entries if entry[0] == name))


async def test_the_worker_writes_replays_state_records_to_a_compacted_topic(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=3)
    s = engine.settings
    async with engine_topics(engine):
        assert await topic_config(kafka_bootstrap, s.topic_state, "cleanup.policy") == "compact"
        await publish_demo(engine, kafka_bootstrap)
        async with (
            Outputs(kafka_bootstrap, [s.topic_state]) as outputs,
            running_worker(engine) as worker,
        ):
            await settle(engine, outputs, worker)
        assert_state_is_replays(engine, outputs)


async def test_after_sigkills_the_state_records_are_still_replays(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """SIGKILL the worker twice mid-scenario (open transactions left hanging); a new worker
    takes over from the committed offsets and changelogs: nothing lost, nothing twice."""
    engine = engine_env(
        kafka_bootstrap, unique_name, tmp_path, partitions=3, FAILOVER_SESSION_TIMEOUT="6"
    )
    s = engine.settings
    total = sum(len(v) for v in replay_state().values())
    async with engine_topics(engine):
        await publish_demo(engine, kafka_bootstrap)
        async with Outputs(kafka_bootstrap, [s.topic_state]) as outputs:
            await kill_twice(engine, outputs, total, "state records")
            async with running_worker(engine) as worker:
                await settle(engine, outputs, worker)
        assert_state_is_replays(engine, outputs)
