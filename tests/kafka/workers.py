"""Helpers for tests of the engine on Kafka: its settings with unique names, the worker as a
subprocess (``failover worker``, as in production), publishing inputs, reading outputs."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    NotCoordinatorError,
)

from harness.broker import BIG as BIG
from harness.broker import TEST_TICK_SECRET as TEST_TICK_SECRET
from harness.broker import client_options, isolated_env
from harness.broker import publish as publish
from harness.broker import route as route
from harness.broker import signed as signed
from streams.config import Settings
from streams.demokeys import DEMO_OPERATORS, demo_key, sign_as
from streams.topics import ensure_topics, topic_specs
from tests.kafka.kafkatools import wait_for
from workflows.engine import TICK_KEY
from workflows.timeutil import SECOND, format_time

ROOT = Path(__file__).resolve().parents[2]
DEMO_TOPOLOGY = ROOT / "streams" / "demo" / "ambon.yaml"
DEMO_EVENTS = ROOT / "streams" / "demo" / "ambon-events.jsonl"


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


async def kill_twice(engine: Engine, outputs: Outputs, total: int, what: str) -> None:
    """Start the worker and SIGKILL it while it works, twice: once ``outputs`` holds a quarter
    of ``total`` records, once half (its open transactions left hanging). The caller then
    runs a worker to the end and compares."""
    for kill_at in (total // 4, total // 2):
        worker = start_worker(engine)

        async def progressed(
            worker: subprocess.Popen[bytes] = worker, kill_at: int = kill_at
        ) -> bool:
            assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
            await outputs.poll()
            return len(outputs.records) >= kill_at

        await wait_for(progressed, timeout=120, what=f"{kill_at} {what}")
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)


@asynccontextmanager
async def one_of_two_killed(
    engine: Engine,
    outputs: Outputs,
    total: int,
    second: Callable[[], Awaitable[object]],
    rest: Callable[[], Awaitable[object]],
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """Two workers in one group share the partitions and work on what is published; then
    ``second`` is published, and as its first outputs come one worker is SIGKILLed (its open
    transactions left hanging); then ``rest``. Yields the survivor once the group has dropped
    the killed one and it owns every partition, before ``outputs`` holds all ``total``
    records: the caller runs it to the end and compares. Both are stopped on the way out."""
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

        try:
            await wait_for(shared, timeout=60, what="two workers sharing the partitions")
        except AssertionError:
            print(engine.log_tail())
            print("lag:", await group_lag(engine))
            raise
        # Both work on the second part; the kill comes as its first outputs do.
        before = len(outputs.records)
        await second()

        async def progressed() -> bool:
            await shared()
            return len(outputs.records) > before

        await wait_for(progressed, timeout=60, what="output of the second part")
        state, members = await group_assignment(engine)
        assert (state, len(members)) == ("Stable", 2), "a rebalance before the kill"
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        # The rest is all the survivor's, on the victim's partitions too.
        await rest()

        async def taken_over() -> bool:
            assert survivor.poll() is None, f"survivor exited\n{engine.log_tail()}"
            state, members = await group_assignment(engine)
            return state == "Stable" and len(members) == 1

        await wait_for(taken_over, timeout=30, what="the group to drop the killed worker")
        (owned,) = (await group_assignment(engine))[1]
        partitions = engine.settings.partitions
        assert owned == {TopicPartition(t, p) for t in engine.inputs for p in range(partitions)}
        assert len(outputs.records) < total
        yield survivor
    finally:
        for worker in (victim, survivor):
            if worker.poll() is None:
                await stop_worker(worker)


def demo_key_file(tmp_path: Path, operator: str) -> Path:
    """The demo ``operator``'s private key in a file of its own (mode 600), as
    ``failover override`` and ``failover maintenance`` read it with ``--key-file``."""
    path = tmp_path / f"{operator.replace(' ', '-').replace('.', '')}.key"
    path.write_text(base64.b64encode(bytes(demo_key(operator))).decode() + "\n")
    path.chmod(0o600)
    return path


def wall_time(offset: float = 0.0) -> str:
    """The wall clock (plus ``offset`` seconds) to the second, as an event's time."""
    return format_time(int((time.time() + offset) * 1_000_000) // SECOND * SECOND)


class Ticker:
    """Ticks at the wall clock on every input partition, as the worker's ticker would."""

    def __init__(self, bootstrap: str, engine: Engine) -> None:
        self.bootstrap, self.engine, self.number = bootstrap, engine, 0

    async def tick(self) -> None:
        self.number += 1
        tick = cloud_event("clock.tick.v1", f"tick/{self.number}", wall_time(), None, {})
        n = self.engine.settings.partitions
        await publish(
            self.bootstrap,
            [(t, TICK_KEY.encode(), tick, p) for t in self.engine.inputs for p in range(n)],
        )


async def run_cli(
    command: list[str], engine: Engine, ticker: Ticker, worker: subprocess.Popen[bytes], what: str
) -> tuple[int, str, str]:
    """Run a ``failover`` command that waits for the engine's verdict (``override``,
    ``maintenance``) against a running ``worker``, ticking until it exits (the engine applies
    an operator's order at the first tick past its time): its exit code, stdout and stderr."""
    cli = await asyncio.create_subprocess_exec(
        *command,
        env={**os.environ, **engine.env},
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )

    async def answered() -> bool:
        assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
        await ticker.tick()
        if cli.returncode is not None:
            return True
        try:
            await asyncio.wait_for(cli.wait(), 0.5)
        except TimeoutError:
            return False
        return True

    await wait_for(answered, timeout=120, what=what)
    stdout, stderr = await cli.communicate()
    assert cli.returncode is not None
    return cli.returncode, stdout.decode(), stderr.decode()
