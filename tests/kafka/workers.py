"""Helpers for tests of the engine on Kafka: its settings with unique names, the worker as a
subprocess (``failover worker``, as in production), publishing inputs, reading outputs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    NotCoordinatorError,
)

from streams.config import Settings
from streams.demokeys import DEMO_OPERATORS, sign_as
from streams.security import VARIABLES as SECURITY_VARIABLES
from streams.topics import ensure_topics, partition_for, topic_specs
from tests.kafka.kafkatools import client_options, wait_for
from workflows.clock import TICK_AUTH, sign_tick
from workflows.engine import TICK_KEY

ROOT = Path(__file__).resolve().parents[2]
DEMO_TOPOLOGY = ROOT / "streams" / "demo" / "ambon.yaml"
DEMO_EVENTS = ROOT / "streams" / "demo" / "ambon-events.jsonl"
BIG = 8 * 1024 * 1024
#: The tick key of every worker under test (FAILOVER_TICK_SECRET): :func:`publish` tags the
#: ticks it sends with it, as the engine's ticker does.
TEST_TICK_SECRET: Final = "test-tick-secret-" + "0123456789abcdef" * 2


def signed(raw: bytes, secret: str = TEST_TICK_SECRET) -> bytes:
    """``raw`` with its tag if it is an untagged ``clock.tick.v1``; anything else as it is."""
    if b"clock.tick.v1" not in raw:
        return raw
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    if not isinstance(event, dict) or event.get("type") != "clock.tick.v1" or TICK_AUTH in event:
        return raw
    return orjson.dumps(sign_tick(secret.encode(), event))


@dataclass
class Engine:
    """One engine under test: its environment, and the settings it reads from it."""

    env: dict[str, str]
    settings: Settings
    logs: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def inputs(self) -> tuple[str, str, str]:
        s = self.settings
        return s.topic_link_status, s.topic_overrides, s.topic_feedback

    @property
    def all_topics(self) -> list[str]:
        s = self.settings
        return [spec.name for spec in topic_specs(s)] + [
            f"{s.app_id}-link-health-changelog",
            f"{s.app_id}-service-state-changelog",
            f"{s.app_id}-__assignor-__leader",
        ]

    def log_tail(self, lines: int = 60) -> str:
        out = []
        for path in sorted(self.logs.glob("worker-*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)


#: Each topic variable of the worker, and the purpose its unique name is made of.
TOPIC_PURPOSES: Final = (
    ("FAILOVER_TOPIC_LINK_STATUS", "links"),
    ("FAILOVER_TOPIC_OVERRIDES", "overrides"),
    ("FAILOVER_TOPIC_FEEDBACK", "feedback"),
    ("FAILOVER_TOPIC_COMMANDS", "commands"),
    ("FAILOVER_TOPIC_TRANSITIONS", "transitions"),
    ("FAILOVER_TOPIC_STATE", "state"),
    ("FAILOVER_TOPIC_DEADLETTER", "dead"),
    ("FAILOVER_TOPIC_CHANGES", "changes"),
    ("FAILOVER_TOPIC_REPARTITION", "repartition"),
    ("FAILOVER_TOPIC_AUDIT", "audit"),
)


def isolated_env(
    bootstrap: str, topology: Path, partitions: int, data_dir: Path, name: Callable[[str], str]
) -> dict[str, str]:
    """A worker's environment on a shared broker (the tests' and bench/kafka.py's): its own
    app id and topics, ``name(purpose)`` each, the memory store, logs at info, the tick key
    :data:`TEST_TICK_SECRET`; TLS and SASL as the test's own clients have them (the
    environment's ``KAFKA_SECURITY_PROTOCOL``...)."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "FAILOVER_TOPOLOGY": str(topology),
        "FAILOVER_APP_ID": name("app"),
        "FAILOVER_PARTITIONS": str(partitions),
        "FAILOVER_STORE": "memory://",
        "FAILOVER_DATA_DIR": str(data_dir),
        "FAILOVER_LOG_LEVEL": "info",
        "FAILOVER_TICK_SECRET": TEST_TICK_SECRET,
    }
    env.update((variable, name(purpose)) for variable, purpose in TOPIC_PURPOSES)
    env.update((v, os.environ[v]) for v in SECURITY_VARIABLES if os.environ.get(v))
    return env


def engine_env(
    bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    *,
    partitions: int = 6,
    topology: Path = DEMO_TOPOLOGY,
    **extra: str,
) -> Engine:
    """Settings for one test: unique app id and topics, memory store, no ticker."""
    env = isolated_env(bootstrap, topology, partitions, tmp_path / "data", unique_name)
    env["FAILOVER_TICK_INTERVAL"] = "0"
    env["FAILOVER_COMMIT_INTERVAL"] = "0.2"
    env.update(extra)
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    return Engine(env, Settings.from_env(env), logs)


@asynccontextmanager
async def engine_topics(engine: Engine) -> AsyncIterator[None]:
    """Create the engine's topics (as the worker would) and delete all of them afterwards
    (but after a failure, keep them when ``FAILOVER_KEEP_TOPICS`` is set, to look at them)."""
    s = engine.settings
    await ensure_topics(s.bootstrap_servers, topic_specs(s), s.replication, security=s.security)
    try:
        yield
    except BaseException:
        if not os.environ.get("FAILOVER_KEEP_TOPICS"):
            await delete_topics(engine)
        raise
    await delete_topics(engine)


async def delete_topics(engine: Engine) -> None:
    s = engine.settings
    admin = AIOKafkaAdminClient(bootstrap_servers=list(s.bootstrap_servers), **client_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [t for t in engine.all_topics if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


def start_worker(engine: Engine) -> subprocess.Popen[bytes]:
    """``failover worker`` in a subprocess, logging to the test's log directory."""
    n = len(engine.workers)
    log = (engine.logs / f"worker-{n}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", "from streams.cli import main; main()", "worker"],
        env={**os.environ, **engine.env, "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=engine.logs,
    )
    log.close()
    engine.workers.append(process)
    return process


async def stop_worker(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM, and wait for a clean exit (SIGKILL after ``timeout``)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise AssertionError("the worker did not stop within {timeout}s of SIGTERM")
        await asyncio.sleep(0.05)
    return process.returncode


@asynccontextmanager
async def running_worker(engine: Engine) -> AsyncIterator[subprocess.Popen[bytes]]:
    process = start_worker(engine)
    try:
        yield process
    finally:
        if process.poll() is None:
            await stop_worker(process)


async def await_dead_letters_and_a_transition(
    engine: Engine, worker: subprocess.Popen[bytes], outputs: Outputs, count: int
) -> None:
    """Wait until ``count`` dead letters and a transition are committed, the worker alive
    all along; on a time-out, print the worker's log before failing."""
    s = engine.settings

    async def done() -> bool:
        assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
        await outputs.poll()
        return len(outputs.of(s.topic_deadletter)) >= count and bool(
            outputs.of(s.topic_transitions)
        )

    try:
        await wait_for(done, timeout=60, what="dead letters and the transition")
    except AssertionError:
        print(engine.log_tail())
        raise


def cloud_event(
    type_: str,
    ident: str,
    time: str,
    subject: str | None,
    data: dict[str, object],
    source: str = "/tests",
) -> bytes:
    """One input as a probe, an operator or an office would send it (CloudEvents, JSON); an
    override by a demo operator signed with their key."""
    event: dict[str, object] = {
        "specversion": "1.0",
        "id": ident,
        "source": source,
        "type": type_,
        "time": time,
        "data": data,
    }
    if subject is not None:
        event["subject"] = subject
    if type_ == "operator.override.v1" and data.get("actor") in DEMO_OPERATORS:
        event = sign_as(event)  # the demo topology's operators sign with the demo keys
    return orjson.dumps(event)


def route(settings: Settings, raw: bytes) -> list[tuple[str, bytes, int]]:
    """Where a line of a replay file goes on Kafka: (topic, key, partition) for each copy.

    Ticks go to every partition of the three input topics; link events to link-status keyed
    by link; overrides to operator-overrides and records/reconciliations to service-feedback,
    keyed by service; a line that is not JSON to link-status, keyed ``garbage``.
    """
    n = settings.partitions
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return [(settings.topic_link_status, b"garbage", partition_for(b"garbage", n))]
    type_ = event.get("type") if isinstance(event, dict) else None
    if type_ == "clock.tick.v1":
        topics = (settings.topic_link_status, settings.topic_overrides, settings.topic_feedback)
        return [(t, TICK_KEY.encode(), p) for t in topics for p in range(n)]
    key = str(event.get("subject")).encode()
    if type_ == "operator.override.v1":
        topic = settings.topic_overrides
    elif type_ in ("manual.record.v1", "reconcile.completed.v1"):
        topic = settings.topic_feedback
    else:
        topic = settings.topic_link_status
    return [(topic, key, partition_for(key, n))]


async def publish(
    bootstrap: str,
    messages: Iterable[tuple[str, bytes | None, bytes, int | None]],
    *,
    sign: bool = True,
) -> int:
    """Send (topic, key, value, partition) in order with one idempotent producer; a tick is
    sent tagged with :data:`TEST_TICK_SECRET` (:func:`signed`) unless ``sign`` is false."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=BIG,
        max_batch_size=1024 * 1024,
        **client_options(),
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic, signed(value) if sign else value, key=key, partition=partition
            )
            for topic, key, value, partition in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(futures)


@dataclass
class Output:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


class Outputs:
    """A read_committed reader of the engine's output topics, from the beginning."""

    def __init__(self, bootstrap: str, topics: Iterable[str]) -> None:
        self.topics = list(topics)
        self.records: list[Output] = []
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=BIG,
            fetch_max_bytes=BIG * 2,
            **client_options(),
        )

    async def __aenter__(self) -> Outputs:
        await self._consumer.start()
        tps = [
            TopicPartition(t, p)
            for t in self.topics
            for p in sorted(self._consumer.partitions_for_topic(t) or ())
        ]
        if not tps:  # metadata not loaded yet for these topics
            await self._consumer._client.force_metadata_update()
            tps = [
                TopicPartition(t, p)
                for t in self.topics
                for p in sorted(self._consumer.partitions_for_topic(t) or ())
            ]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def poll(self) -> int:
        batch = await self._consumer.getmany(timeout_ms=200, max_records=10_000)
        n = 0
        for tp, records in batch.items():
            for r in records:
                self.records.append(
                    Output(
                        tp.topic,
                        tp.partition,
                        r.offset,
                        r.key,
                        r.value or b"",
                        dict(r.headers or ()),
                    )
                )
                n += 1
        return n

    async def at_end(self) -> bool:
        """Read everything committed so far (end offsets are the last stable offsets)."""
        await self.poll()
        tps = list(self._consumer.assignment())
        ends = await self._consumer.end_offsets(tps)
        for tp in tps:
            if await self._consumer.position(tp) < ends[tp]:
                return False
        return True

    def of(self, topic: str) -> list[Output]:
        return [r for r in self.records if r.topic == topic]


async def group_done(engine: Engine) -> bool:
    """Has the worker committed every input, and every internal record but a trailing
    transaction marker? Then every output it will ever make for them is committed. A group
    whose coordinator is not ready yet (a broker just started) is not done."""
    try:
        return not await group_lag(engine)
    except (CoordinatorNotAvailableError, CoordinatorLoadInProgressError, NotCoordinatorError):
        return False


async def group_lag(engine: Engine) -> dict[str, tuple[int, int]]:
    """Partitions the worker has not committed to the end: ``topic/p: (committed, end)``.

    The end of an input is its end offset. The changes topic is written in transactions, so
    its end offset is followed by commit markers (one per producer that wrote to it, which no
    consumer ever sees): its end is the offset after its last record.
    """
    s = engine.settings
    admin = AIOKafkaAdminClient(bootstrap_servers=list(s.bootstrap_servers), **client_options())
    consumer = AIOKafkaConsumer(
        bootstrap_servers=list(s.bootstrap_servers),
        isolation_level="read_committed",
        enable_auto_commit=False,
        **client_options(),
    )
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(s.app_id)
        inputs = [TopicPartition(t, p) for t in engine.inputs for p in range(s.partitions)]
        changes = [TopicPartition(s.topic_changes, p) for p in range(s.partitions)]
        ends = await consumer.end_offsets(inputs)
        ends.update(await _after_last_record(consumer, changes))
        lag: dict[str, tuple[int, int]] = {}
        for tp in (*inputs, *changes):
            meta = committed.get(tp)
            done = meta.offset if meta is not None else 0
            if done < ends[tp]:
                lag[f"{tp.topic}/{tp.partition}"] = (done, ends[tp])
        return lag
    finally:
        await consumer.stop()
        await admin.close()


async def _after_last_record(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition]
) -> dict[TopicPartition, int]:
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    ends = await consumer.end_offsets(tps)
    after = dict.fromkeys(tps, 0)
    while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
        batch = await consumer.getmany(timeout_ms=200, max_records=50_000)
        for tp, records in batch.items():
            if records:
                after[tp] = max(after[tp], records[-1].offset + 1)
    return after


async def stage2_committed(engine: Engine) -> bool:
    """Has stage 2 committed input on every partition of the changes topic (time flows)?"""
    s = engine.settings
    admin = AIOKafkaAdminClient(bootstrap_servers=list(s.bootstrap_servers), **client_options())
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(s.app_id)
    finally:
        await admin.close()
    return all(
        (meta := committed.get(TopicPartition(s.topic_changes, p))) is not None and meta.offset > 0
        for p in range(s.partitions)
    )


async def stable_offsets(engine: Engine, topic: str) -> dict[int, tuple[int, int]]:
    """``partition: (last stable offset, high watermark)``: they differ while a transaction
    is open (read_committed consumers cannot read past the first open one)."""
    s = engine.settings
    out: dict[int, tuple[int, int]] = {}
    tps = [TopicPartition(topic, p) for p in range(s.partitions)]
    ends: dict[str, dict[TopicPartition, int]] = {}
    for isolation in ("read_committed", "read_uncommitted"):
        consumer = AIOKafkaConsumer(
            bootstrap_servers=list(s.bootstrap_servers),
            isolation_level=isolation,
            **client_options(),
        )
        await consumer.start()
        try:
            ends[isolation] = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
    for tp in tps:
        out[tp.partition] = (ends["read_committed"][tp], ends["read_uncommitted"][tp])
    return out


async def group_assignment(engine: Engine) -> tuple[str, list[set[TopicPartition]]]:
    """The consumer group's state (``Stable``, ``PreparingRebalance``, ...) and, for each
    member, the partitions of the input topics the group gave it (DescribeGroups)."""
    s = engine.settings
    admin = AIOKafkaAdminClient(bootstrap_servers=list(s.bootstrap_servers), **client_options())
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([s.app_id])
    except CoordinatorNotAvailableError:  # the group's coordinator is not loaded yet
        return "", []
    finally:
        await admin.close()
    ((error, _group, state, _protocol_type, _protocol, members, *_),) = response.groups
    assert error == 0, f"DescribeGroups of {s.app_id}: error code {error}"
    inputs = set(engine.inputs)
    assigned: list[set[TopicPartition]] = []
    for _member_id, _client_id, _host, _metadata, raw_assignment, *_ in members:
        partitions = (
            ConsumerProtocolMemberAssignment.decode(raw_assignment).partitions()
            if raw_assignment
            else []
        )
        assigned.append({tp for tp in partitions if tp.topic in inputs})
    return str(state), assigned
