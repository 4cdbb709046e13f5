"""Any partitioner: readings that land on a partition their link does not hash to (murmur2)
are forwarded to it through the engine's repartition topic, overrides and feedback to their
service's through the service repartition topic, and the output is still exactly replay's.

- The demo with every reading, override, manual record and reconciliation where librdkafka's
  default partitioner (kcat's, ``consistent_random``: CRC-32 of the key) puts it, ticks and
  maintenance windows as the engine's own producers send them, each record between the same
  two ticks as in the file. That these are the partitions kcat picks is checked against kcat
  itself: every link of the demo sent by the ``kcat`` program with its defaults, and read
  back.
- The demo with every reading published by the ``kcat`` program itself, with its defaults
  (keyed, no partition given), taking turns in file order with the producer of the ticks
  and the other inputs.
- The demo with every reading and every service input on a wrong partition, the worker
  SIGKILLed twice mid-stream; and shared by two workers (forwarded records and markers
  crossing from one to the other), one SIGKILLed, the other taking its partitions over.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from harness.broker import client_options, signed
from streams.config import Settings
from streams.security import KafkaSecurity
from streams.topics import partition_for
from tests.kafka.kafkatools import topics, wait_for
from tests.kafka.test_engine import assert_parity, demo_messages, demo_total, finish
from tests.kafka.workers import (
    Outputs,
    engine_env,
    engine_topics,
    kill_twice,
    one_of_two_killed,
    publish,
    running_worker,
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


@pytest.fixture
def kcat_security(tmp_path: Path) -> Iterator[list[str]]:
    """kcat's options for the broker under test: ``-F`` and a librdkafka configuration file
    (mode 600, deleted after the test), from the same ``KAFKA_*`` variables the worker reads
    (``KAFKA_SASL_PASSWORD`` or ``KAFKA_SASL_PASSWORD_FILE`` among them), so that no secret is
    on a command line; none for a plaintext broker."""
    path = tmp_path / "kcat.properties"
    try:
        yield _kcat_config(path)
    finally:
        path.unlink(missing_ok=True)


def _kcat_config(path: Path) -> list[str]:
    security = KafkaSecurity.from_env()
    if security.protocol == "PLAINTEXT":
        return []
    pairs = {
        "security.protocol": security.protocol.lower(),
        "sasl.mechanisms": security.mechanism,
        "sasl.username": security.username,
        "sasl.password": security.password,
        "ssl.ca.location": security.cafile,
        "ssl.certificate.location": security.certfile,
        "ssl.key.location": security.keyfile,
    }
    text = "".join(f"{name}={value}\n" for name, value in pairs.items() if value is not None)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    return ["-F", str(path)]


async def test_kcat_puts_each_link_where_the_tests_consistent_random_does(
    kafka_bootstrap: str, unique_name: Callable[[str], str], kcat_security: list[str]
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
            [kcat, "-P", "-b", kafka_bootstrap, "-t", topic, "-K", "\t", *kcat_security],
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


#: kcat's message delimiter (``-D``) for :class:`_Turns`: 129 bytes, so that every message
#: and every empty one (which kcat skips) is longer than kcat's 128-byte reads, and newlines at
#: both ends, so that it cannot occur inside a JSON line.
_KCAT_DELIMITER = b"\n" + b"=" * 127 + b"\n"


class _Turns:
    """The demo published by two producers taking turns in file order: the ``kcat`` program
    (its default partitioner, keyed, no partition given) for the readings, and an aiokafka
    producer for the rest, ticks to every partition as the engine's ticker sends them. A
    turn ends only when what it sent is on the broker: kcat's readings when the input
    topic's end offsets count them, the others when they are acknowledged. So on every
    partition each record follows every record before it in the file, and each reading is
    between the same two ticks as in the file, on the partition kcat chose.

    One kcat process reads the readings from a pipe. It reads its input 128 bytes at a time
    and hands on a message only when a read is complete (kcat 1.7's ``input.c``), so the end
    of a turn would wait in kcat for the next turn's bytes. Each turn's readings are followed
    by empty messages (a delimiter each, which kcat skips) up to the next multiple of 128
    bytes: every message being longer than a read, kcat has handed on all of them once it
    has read that far. Should they still not be on the broker after 50 ms, one more empty
    message follows, and so on: each moves kcat's reading on. (If kcat sent the empty
    messages, the topic would hold more records than were sent, and the test fails.)
    """

    def __init__(self, bootstrap: str, settings: Settings, kcat: list[str], log: Path) -> None:
        self.settings = settings
        self.options: dict[str, Any] = {"bootstrap_servers": bootstrap, **client_options()}
        # Nagle's algorithm off: latency only (placement, acks and retries stay kcat's
        # defaults). With it, over TLS each turn waited out TCP's delayed ACK, about 40 ms:
        # the test took two minutes on the secured broker instead of half of one.
        self.kcat = [*kcat, "-D", _KCAT_DELIMITER.decode(), "-X", "socket.nagle.disable=true"]
        self.log = log
        self.links = [
            TopicPartition(settings.topic_link_status, p) for p in range(settings.partitions)
        ]
        self.on_links = 0  # records sent to the link-status topic so far, by either
        self.by_kcat = 0
        self.turns = 0  # kcat's turns
        self.nudges = 0  # empty messages written after a turn's padding

    async def _landed(self, process: subprocess.Popen[bytes], ends: AIOKafkaConsumer) -> int:
        """Wait until the link-status topic holds every record sent to it so far, with one
        more empty message to kcat every 50 ms (returned: the bytes written). Polled at once
        and then every 2 ms (a wait per tick of the demo: wait_for's 50 ms would add a minute
        and a half)."""
        assert process.stdin is not None
        began = time.monotonic()
        nudged = began
        written = 0
        while True:
            held = sum((await ends.end_offsets(self.links)).values())
            assert held <= self.on_links, f"{held} records in the topic, {self.on_links} sent"
            if held == self.on_links:
                return written
            assert process.poll() is None, f"kcat exited:\n{self.log.read_text()}"
            now = time.monotonic()
            assert now < began + 30, (
                f"kcat's readings are not on the broker after 30 s ({held} of "
                f"{self.on_links} records in the topic):\n{self.log.read_text()}"
            )
            if now > nudged + 0.05:
                process.stdin.write(_KCAT_DELIMITER)
                process.stdin.flush()
                nudged = now
                written += len(_KCAT_DELIMITER)
                self.nudges += 1
            await asyncio.sleep(0.002)

    async def publish(self, messages: list[Message]) -> None:
        s = self.settings
        producer = AIOKafkaProducer(enable_idempotence=True, **self.options)
        ends = AIOKafkaConsumer(**self.options)
        await producer.start()
        await ends.start()
        with self.log.open("wb") as log:
            process = subprocess.Popen(
                self.kcat, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log
            )
        assert process.stdin is not None
        piped = 0  # bytes written to kcat
        try:
            pending: list[asyncio.Future[Any]] = []
            kcats_turn = False
            for topic, key, raw, partition in messages:
                if topic == s.topic_link_status and key is not None and _is_reading(raw):
                    if pending:  # the inputs before it are on the broker
                        await asyncio.gather(*pending)
                        pending.clear()
                    assert b"\t" not in key  # kcat's key delimiter
                    assert b"\n" not in key + raw  # so not its message delimiter either
                    line = key + b"\t" + raw + _KCAT_DELIMITER
                    process.stdin.write(line)
                    piped += len(line)
                    kcats_turn = True
                    self.by_kcat += 1
                else:
                    if kcats_turn:  # the readings before it are on the broker
                        # 129 = 1 (mod 128): one empty message per byte short of a read.
                        padding = _KCAT_DELIMITER * (-piped % 128)
                        process.stdin.write(padding)
                        process.stdin.flush()
                        piped += len(padding)
                        piped += await self._landed(process, ends)
                        kcats_turn = False
                        self.turns += 1
                    sent = await producer.send(topic, signed(raw), key=key, partition=partition)
                    pending.append(sent)
                self.on_links += topic == s.topic_link_status
            process.stdin.close()  # kcat sends the rest, waits for their acks and exits
            returncode = await asyncio.get_running_loop().run_in_executor(None, process.wait)
            assert returncode == 0, f"kcat failed:\n{self.log.read_text()}"
            await asyncio.gather(*pending)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            await ends.stop()
            await producer.stop()


@pytest.mark.slow
async def test_readings_published_by_kcat_itself_give_replay_output(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    kcat_security: list[str],
) -> None:
    """The ``kcat`` program publishes every reading of the demo with its defaults (keyed by
    link, no partition, ``consistent_random``), taking turns with the ticks and the other
    inputs in file order (:class:`_Turns`); a worker runs meanwhile. Its output is replay's,
    and more than half of the readings were forwarded: kcat put them where murmur2 does
    not."""
    kcat = shutil.which("kcat")
    assert kcat is not None, "kcat is missing: ./dev setup installs it"
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=3)
    s = engine.settings
    command = [
        kcat, "-P", "-b", kafka_bootstrap, "-t", s.topic_link_status, "-K", "\t",
        *kcat_security,
    ]  # fmt: skip
    turns = _Turns(kafka_bootstrap, s, command, tmp_path / "kcat.log")
    async with engine_topics(engine):
        outputs = _outputs(kafka_bootstrap, s)
        async with outputs, running_worker(engine) as worker:
            await turns.publish(demo_messages(s))
            await finish(engine, outputs, worker)
        assert_parity(engine, outputs)
        assert turns.by_kcat > 4000
        assert turns.turns > 1000  # kcat's readings went out between the ticks, not at once
        # Where kcat put them: more than half not on their link's (murmur2) partition.
        placed = await _partitions_of_readings(kafka_bootstrap, s)
        assert len(placed) == turns.by_kcat
        assert sum(p != partition_for(key, 3) for key, p in placed) > turns.by_kcat // 2


async def _partitions_of_readings(bootstrap: str, s: Settings) -> list[tuple[bytes, int]]:
    """(key, partition) of every reading in the link-status topic, read from the start."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **client_options()
    )
    tps = [TopicPartition(s.topic_link_status, p) for p in range(s.partitions)]
    placed: list[tuple[bytes, int]] = []
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)

        async def all_read() -> bool:
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                placed.extend(
                    (r.key, tp.partition)
                    for r in records
                    if r.key is not None and r.value is not None and _is_reading(r.value)
                )
            return all([await consumer.position(tp) >= ends[tp] for tp in tps])

        await wait_for(all_read, timeout=30, what="the link-status topic read to its end")
    finally:
        await consumer.stop()
    return placed


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
        async with (
            outputs,
            one_of_two_killed(
                engine,
                outputs,
                total,
                second=lambda: publish(kafka_bootstrap, messages[quarter:half]),
                rest=lambda: publish(kafka_bootstrap, messages[half:]),
            ) as survivor,
        ):
            await finish(engine, outputs, survivor)
        assert_parity(engine, outputs)
