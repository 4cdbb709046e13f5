"""Any partitioner: readings that land on a partition their link does not hash to (murmur2)
are forwarded to it through the engine's repartition topic, overrides and feedback to their
service's through the service repartition topic, and the output is still exactly replay's.

- The demo with every reading, override, manual record and reconciliation where librdkafka's
  default partitioner (kcat's, ``consistent_random``: CRC-32 of the key) puts it, ticks and
  maintenance windows as the engine's own producers send them, each record between the same
  two ticks as in the file. That these are the partitions kcat picks is checked against kcat
  itself: every link of the demo sent by the ``kcat`` program with its defaults, and read
  back.
- The demo with every reading and every service input on a wrong partition, the worker
  SIGKILLed twice mid-stream; and shared by two workers (forwarded records and markers
  crossing from one to the other), one SIGKILLed, the other taking its partitions over.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from harness.broker import client_options
from streams.config import Settings
from streams.topics import partition_for
from tests.kafka.kafkatools import topics, wait_for
from tests.kafka.test_engine import assert_parity, demo_messages, demo_total, finish
from tests.kafka.workers import (
    Outputs,
    engine_env,
    engine_topics,
    group_assignment,
    kill_twice,
    publish,
    running_worker,
    stage2_committed,
    start_worker,
    stop_worker,
)

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]

Message = tuple[str, bytes | None, bytes, int | None]


def _type(raw: bytes) -> object:
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return event.get("type") if isinstance(event, dict) else None


def _is_reading(raw: bytes) -> bool:
    return _type(raw) == "link.status.v1"


#: The inputs keyed by their service, which a producer's partitioner places.
SERVICE_INPUTS = ("operator.override.v1", "manual.record.v1", "reconcile.completed.v1")


def consistent_random(key: bytes, n: int) -> int:
    """librdkafka's default partitioner for a keyed record (kcat's, confluent-kafka-go's,
    ``consistent_random``): CRC-32 of the key, modulo the partition count."""
    return zlib.crc32(key) % n


def _kcat_security() -> list[str]:
    """kcat's ``-X`` options for the broker under test, from the same ``KAFKA_*`` variables
    the worker reads (none for a plaintext broker)."""
    env = os.environ
    pairs = {
        "security.protocol": env.get("KAFKA_SECURITY_PROTOCOL"),
        "sasl.mechanisms": env.get("KAFKA_SASL_MECHANISM"),
        "sasl.username": env.get("KAFKA_SASL_USERNAME"),
        "sasl.password": env.get("KAFKA_SASL_PASSWORD"),
        "ssl.ca.location": env.get("KAFKA_SSL_CAFILE"),
    }
    return [arg for name, value in pairs.items() if value for arg in ("-X", f"{name}={value}")]


async def test_kcat_puts_each_link_where_the_tests_consistent_random_does(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """The ``kcat`` program (librdkafka) with its default partitioner sends every link id of
    the demo as a key; each lands on the partition :func:`consistent_random` gives it, and
    for most of them that is not murmur2's: the placement the parity test below uses is
    kcat's own."""
    kcat = shutil.which("kcat")
    assert kcat is not None, "kcat is missing: ./dev setup installs it"
    settings = Settings.from_env({})
    links = sorted(
        {
            key
            for topic, key, raw, _ in demo_messages(settings)
            if topic == settings.topic_link_status and key and _is_reading(raw)
        }
    )
    topic, n = unique_name("kcat"), 3
    async with topics(kafka_bootstrap, topic, partitions=n):
        lines = b"".join(key + b"\t" + key + b"\n" for key in links)
        subprocess.run(
            [kcat, "-P", "-b", kafka_bootstrap, "-t", topic, "-K", "\t", *_kcat_security()],
            input=lines,
            check=True,
            timeout=60,
            capture_output=True,
        )
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
            **client_options(),
        )  # fmt: skip
        placed: dict[bytes, int] = {}
        await consumer.start()
        try:

            async def all_read() -> bool:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    placed.update((r.key, r.partition) for r in records if r.key is not None)
                return len(placed) == len(links)

            await wait_for(all_read, timeout=60, what=f"{len(links)} keys sent by kcat")
        finally:
            await consumer.stop()
    assert placed == {key: consistent_random(key, n) for key in links}
    assert sum(placed[key] != partition_for(key, n) for key in links) > len(links) // 3


def _wrong(key: bytes, n: int) -> int:
    """The partition after the key's own (murmur2)."""
    return (partition_for(key, n) + 1) % n


def _placed(
    settings: Settings, partitioner: Callable[[bytes, int], int], services: bool = False
) -> tuple[list[Message], int, int]:
    """The demo's messages, every reading (and with ``services``, every override, manual
    record and reconciliation) on the partition ``partitioner`` gives its key (ticks and
    maintenance windows as the engine's producers send them), and how many readings, how
    many service inputs are not on their key's partition."""
    n = settings.partitions
    out: list[Message] = []
    misrouted = inputs = 0
    for topic, key, raw, partition in demo_messages(settings):
        if topic == settings.topic_link_status and key is not None and _is_reading(raw):
            partition = partitioner(key, n)
            misrouted += partition != partition_for(key, n)
        elif services and key is not None and _type(raw) in SERVICE_INPUTS:
            partition = partitioner(key, n)
            inputs += partition != partition_for(key, n)
        out.append((topic, key, raw, partition))
    return out, misrouted, inputs


def _outputs(bootstrap: str, s: Settings) -> Outputs:
    topics = [s.topic_commands, s.topic_transitions, s.topic_audit, s.topic_deadletter]
    return Outputs(bootstrap, topics)


@pytest.mark.slow
async def test_inputs_from_the_consistent_random_partitioner_give_replay_output(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=3)
    s = engine.settings
    async with engine_topics(engine):
        messages, misrouted, inputs = _placed(s, consistent_random, services=True)
        assert misrouted > 1000  # CRC-32 and murmur2 agree on about a third
        assert inputs > 0
        await publish(kafka_bootstrap, messages)
        outputs = _outputs(kafka_bootstrap, s)
        async with outputs, running_worker(engine) as worker:
            await finish(engine, outputs, worker)
        assert_parity(engine, outputs)


@pytest.mark.slow
async def test_every_input_on_a_wrong_partition_and_kills_give_replay_output(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """Every reading and every service input forwarded, the worker SIGKILLed twice while it
    works (its open transactions, forwarded records and markers among them, left hanging):
    the committed output is exactly replay's."""
    engine = engine_env(
        kafka_bootstrap, unique_name, tmp_path, partitions=3, FAILOVER_SESSION_TIMEOUT="6"
    )
    s = engine.settings
    total = demo_total(s)
    async with engine_topics(engine):
        messages, misrouted, inputs = _placed(s, _wrong, services=True)
        assert misrouted > 4000
        assert inputs == 25  # 3 overrides, 19 manual records, 3 reconciliations
        await publish(kafka_bootstrap, messages)
        outputs = _outputs(kafka_bootstrap, s)
        async with outputs:
            await kill_twice(engine, outputs, total, "output records")
            async with running_worker(engine) as worker:
                await finish(engine, outputs, worker)
        assert_parity(engine, outputs)  # the same dead letters: none "wrong-partition"


@pytest.mark.slow
async def test_every_input_on_a_wrong_partition_with_two_workers_one_killed(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """Two workers share the partitions while every input is forwarded, so forwarded records
    and markers go from one worker's partitions to the other's; one is SIGKILLed mid-stream,
    the other restores its partitions (held and queued inputs among their state) and ends
    the demo: the committed output is exactly replay's."""
    engine = engine_env(
        kafka_bootstrap, unique_name, tmp_path, partitions=3, FAILOVER_SESSION_TIMEOUT="6"
    )
    s = engine.settings
    total = demo_total(s)
    messages, misrouted, inputs = _placed(s, _wrong, services=True)
    assert misrouted > 4000
    assert inputs == 25
    quarter, half = len(messages) // 4, len(messages) // 2
    async with engine_topics(engine):
        await publish(kafka_bootstrap, messages[:quarter])
        outputs = _outputs(kafka_bootstrap, s)
        async with outputs:
            victim, survivor = start_worker(engine), start_worker(engine)
            try:

                async def shared() -> bool:
                    for worker in (victim, survivor):
                        assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
                    await outputs.poll()
                    state, members = await group_assignment(engine)
                    return (
                        state == "Stable"
                        and len(members) == 2
                        and all(members)
                        and await stage2_committed(engine)
                    )

                await wait_for(shared, timeout=60, what="two workers sharing the partitions")
                before = len(outputs.records)
                await publish(kafka_bootstrap, messages[quarter:half])

                async def progressed() -> bool:
                    await shared()
                    return len(outputs.records) > before

                await wait_for(progressed, timeout=60, what="output of the second quarter")
                victim.send_signal(signal.SIGKILL)
                victim.wait(timeout=30)
                await publish(kafka_bootstrap, messages[half:])

                async def taken_over() -> bool:
                    assert survivor.poll() is None, f"survivor exited\n{engine.log_tail()}"
                    state, members = await group_assignment(engine)
                    return state == "Stable" and len(members) == 1

                await wait_for(taken_over, timeout=30, what="the group to drop the killed worker")
                assert len(outputs.records) < total
                await finish(engine, outputs, survivor)
            finally:
                for worker in (victim, survivor):
                    if worker.poll() is None:
                        await stop_worker(worker)
        assert_parity(engine, outputs)
