"""The hostile corpus on a real broker: each selected file (``kafka=True`` in
``tests/hostile/corpus.py``) published as a probe, an operator or an office would send it, to
a running ``failover worker`` of its own (own app id and topics, 2 partitions).

For every file: the worker stays up and commits every input; the overrides that must take
effect do (the framed ``force_manual`` after the hostile lines included); every copy of a
line the case calls hostile on Kafka is in the dead-letter topic with its original key and
bytes, a documented reason code and its source headers; normal lines are not; no notice
carries HTML; the worker's log has no raw control character and no line forged by input;
and per service the transitions and commands are exactly what ``failover replay`` gives for
the same file without the lines Kafka must refuse (the same file, where it refuses none),
with the same dead letters.

A line goes where :func:`tests.kafka.workers.route` sends it (JSON that is not an object
goes to link-status keyed ``garbage``, like any line that is not JSON). Ticks are signed
with the test key where the harness signs ticks, except a tick the case calls hostile on
Kafka: that one is sent as a stranger would send it, unsigned.

All files run before the first check, six at a time (a worker each); the cases that fail today are
listed in ``tests/hostile/xfails.py``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from streams.config import Settings
from streams.topics import partition_for
from tests.hostile import xfails
from tests.hostile.checks import (
    HTML_TAG,
    code_of,
    event_id,
    reason_codes,
    terminal_problems,
)
from tests.hostile.corpus import CORPUS_TOPOLOGY, EVENT_CASES, EventCase, Line
from tests.kafka.workers import (
    Engine,
    Output,
    Outputs,
    engine_env,
    engine_topics,
    group_done,
    group_lag,
    publish,
    route,
    running_worker,
)
from workflows.records import AUDIT, COMMANDS, TRANSITIONS, DeadLetter, Emitted
from workflows.replay import replay
from workflows.topology import Topology

try:  # the harness signs ticks where the engine authenticates them
    from tests.kafka.workers import signed  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - before tick authentication

    def signed(raw: bytes) -> bytes:
        return raw


pytestmark = pytest.mark.kafka

PARTITIONS = 2
#: How long one file may take, from publishing to everything committed.
TIMEOUT = 50.0
#: Workers starting at once (each costs a few seconds of CPU to start).
CONCURRENT = 6
KAFKA_CASES = [case for case in EVENT_CASES if case.kafka]
_PUBLISH_SIGNS = "sign" in inspect.signature(publish).parameters


@dataclass(frozen=True)
class Sent:
    line: int  # from 1
    topic: str
    key: bytes
    value: bytes
    partition: int


@dataclass
class KafkaRun:
    lines: list[Line]
    settings: Settings
    sent: list[Sent] = field(default_factory=list)
    records: list[Output] = field(default_factory=list)
    exited: int | None = None  # the worker's exit code, if it did not stay up
    waited: str = ""  # what was still missing when the time ran out
    log: str = ""
    seconds: float = 0.0


def _routes(settings: Settings, raw: bytes) -> list[tuple[str, bytes, int]]:
    try:
        return route(settings, raw)
    except AttributeError:  # JSON, but not an object: sent as garbage, like non-JSON
        key = b"garbage"
        return [(settings.topic_link_status, key, partition_for(key, settings.partitions))]


def _messages(settings: Settings, lines: list[Line]) -> list[Sent]:
    sent = []
    for number, line in enumerate(lines, start=1):
        if not line.raw.strip():
            continue  # a blank line is no message
        forged_tick = line.kafka_role == "dead" and b"clock.tick.v1" in line.raw
        value = line.raw if forged_tick else signed(line.raw)
        for topic, key, partition in _routes(settings, line.raw):
            sent.append(Sent(number, topic, key, value, partition))
    return sent


async def _run(case: EventCase, bootstrap: str, work: Path, gate: asyncio.Semaphore) -> KafkaRun:
    run_id = uuid.uuid4().hex[:8]

    def name(purpose: str) -> str:
        return f"t-hostile-{case.name[:32]}-{purpose}-{run_id}"

    engine = engine_env(bootstrap, name, work, partitions=PARTITIONS, topology=CORPUS_TOPOLOGY)
    s = engine.settings
    result = KafkaRun(case.build(), s)
    result.sent = _messages(s, result.lines)
    effects = {event_id(line.raw) for line in result.lines if line.kafka_role == "effect"}
    async with gate, engine_topics(engine):
        start = time.monotonic()
        messages = [(m.topic, m.key, m.value, m.partition) for m in result.sent]
        if _PUBLISH_SIGNS:
            await publish(bootstrap, messages, sign=False)  # type: ignore[call-arg]
        else:
            await publish(bootstrap, messages)
        outputs = Outputs(bootstrap, [s.topic_commands, s.topic_transitions, s.topic_deadletter])
        async with outputs, running_worker(engine) as worker:
            deadline = time.monotonic() + TIMEOUT
            while True:
                if worker.poll() is not None:
                    result.exited = worker.returncode
                    break
                # Every input committed, every output read: nothing more will come.
                if await group_done(engine) and await outputs.at_end():
                    break
                if time.monotonic() > deadline:
                    await outputs.poll()
                    missing = sorted(effects - _causes(outputs.records, s))
                    lag = await group_lag(engine)
                    result.waited = f"effects missing {missing}, inputs not committed {lag}"
                    break
                await asyncio.sleep(0.2)
            await outputs.poll()
            result.records = list(outputs.records)
        result.seconds = time.monotonic() - start
    result.log = _logs(engine)
    return result


def _logs(engine: Engine) -> str:
    return "\n".join(
        path.read_text(errors="replace") for path in sorted(engine.logs.glob("worker-*.log"))
    )


def _causes(records: list[Output], s: Settings) -> set[str]:
    return {
        orjson.loads(r.value)["data"]["cause"] for r in records if r.topic == s.topic_transitions
    }


@pytest.fixture(scope="module")
def kafka_runs(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, KafkaRun | BaseException]:
    """Every selected file through its own worker, several at once."""
    base = tmp_path_factory.mktemp("hostile-kafka")

    async def all_cases() -> list[KafkaRun | BaseException]:
        gate = asyncio.Semaphore(CONCURRENT)
        runs = []
        for case in KAFKA_CASES:
            work = base / case.name
            work.mkdir()
            runs.append(_run(case, kafka_bootstrap, work, gate))
        return await asyncio.gather(*runs, return_exceptions=True)

    results = asyncio.run(all_cases())
    return {case.name: result for case, result in zip(KAFKA_CASES, results, strict=True)}


def _params() -> Iterator[object]:
    for case in KAFKA_CASES:
        reason = xfails.KAFKA.get(case.name)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(case.name, marks=marks, id=case.name)


# ------------------------------------------------------------------------- the checks


def _replay_oracle(
    lines: list[Line], s: Settings
) -> tuple[dict[tuple[str, str], list[bytes]], dict[int, str]]:
    """Replay of the file without the lines Kafka must refuse: per (topic, service) the event
    bytes, and the reason of each line it dead-letters (by line number in the whole file)."""
    topics = {COMMANDS: s.topic_commands, TRANSITIONS: s.topic_transitions}
    kept = [
        (number, line.raw)
        for number, line in enumerate(lines, start=1)
        if line.kafka_role != "dead" and line.raw.strip()
    ]
    per_key: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    dead: dict[int, str] = {}
    for record in replay(Topology.load(CORPUS_TOPOLOGY), kept, "hostile"):
        if isinstance(record, Emitted):
            if record.topic != AUDIT:  # the audit trail's parity: tests/kafka/test_engine.py
                per_key[(topics[record.topic], record.key)].append(orjson.dumps(record.event))
        else:
            assert isinstance(record, DeadLetter)
            dead[record.origin.line] = record.reason
    return per_key, dead


def _problems(run: KafkaRun) -> list[str]:
    s = run.settings
    problems = []
    if run.exited is not None:
        tail = "\n".join(run.log.splitlines()[-15:])
        problems.append(f"the worker exited ({run.exited}):\n{tail}")
    if run.waited:
        problems.append(f"not done in {TIMEOUT:.0f}s: {run.waited}")
    problems += terminal_problems("the worker's log", run.log.encode())
    codes = reason_codes()
    causes = _causes(run.records, s)
    dead = [r for r in run.records if r.topic == s.topic_deadletter]
    dead_by_where = {
        (r.headers.get("failover-source-topic", b"").decode(),
         int(r.headers.get("failover-source-partition", b"-1")), r.value): r
        for r in dead
    }  # fmt: skip
    for record in dead:
        reason = record.headers.get("failover-reason", b"").decode("utf-8", "replace")
        if code_of(reason) not in codes:
            problems.append(f"undocumented reason {reason[:120]!r}")
    for record in run.records:
        if record.topic == s.topic_commands and b'"failover.notice.v1"' in record.value:
            data = orjson.dumps(orjson.loads(record.value)["data"])
            if tag := HTML_TAG.search(data):
                problems.append(f"a notice carries HTML: {tag.group()!r}")
    sent_values = {m.value for m in run.sent}
    for record in dead:
        if record.value not in sent_values:
            problems.append(f"a dead letter whose bytes were never sent: {record.value[:80]!r}")
    for m in run.sent:
        line = run.lines[m.line - 1]
        role = line.kafka_role
        letter = dead_by_where.get((m.topic, m.partition, m.value))
        if role == "dead":
            if letter is None:
                problems.append(
                    f"hostile line {m.line} ({m.topic}/{m.partition}) not dead-lettered"
                )
            elif letter.key != m.key:
                problems.append(f"line {m.line}: dead letter key {letter.key!r}, sent {m.key!r}")
        elif role in ("ok", "effect") and letter is not None:
            reason = letter.headers.get("failover-reason", b"").decode("utf-8", "replace")
            problems.append(f"normal line {m.line} dead-lettered: {reason[:120]}")
        if role == "effect" and event_id(line.raw) not in causes:
            problems.append(f"line {m.line} ({event_id(line.raw)}) caused no transition")
    if problems:
        return problems
    # Parity with replay of the same file, less the lines Kafka must refuse.
    expected, replay_dead = _replay_oracle(run.lines, s)
    got: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    for record in run.records:
        if record.topic in (s.topic_commands, s.topic_transitions):
            assert record.key is not None
            got[(record.topic, record.key.decode())].append(record.value)
    for key in sorted(set(expected) | set(got)):
        if got.get(key, []) != expected.get(key, []):
            ids = [orjson.loads(e)["id"] for e in expected.get(key, [])]
            got_ids = [orjson.loads(e)["id"] for e in got.get(key, [])]
            problems.append(
                f"{key}: not replay's output: missing {[i for i in ids if i not in got_ids]}, "
                f"extra {[i for i in got_ids if i not in ids]}, {len(got_ids)} vs {len(ids)}"
            )
    want: Counter[tuple[bytes, str]] = Counter()
    for m in run.sent:
        if m.line in replay_dead:
            want[(m.value, replay_dead[m.line])] += 1
    hostile_values = {m.value for m in run.sent if run.lines[m.line - 1].kafka_role == "dead"}
    have = Counter(
        (r.value, r.headers["failover-reason"].decode("utf-8", "replace"))
        for r in dead
        if r.value not in hostile_values
    )
    if have != want:
        problems.append(
            f"dead letters differ from replay's: missing {list((want - have).items())[:3]}, "
            f"extra {list((have - want).items())[:3]}"
        )
    return problems


@pytest.mark.parametrize("name", list(_params()))
def test_hostile_file_on_kafka(kafka_runs: dict[str, KafkaRun | BaseException], name: str) -> None:
    run = kafka_runs[name]
    if isinstance(run, BaseException):
        raise run
    problems = _problems(run)
    assert not problems, "\n".join(problems)


def test_every_kafka_case_is_run(kafka_runs: dict[str, KafkaRun | BaseException]) -> None:
    """The selection is what corpus.py marks, and each ran within its time."""
    assert set(kafka_runs) == {c.name for c in KAFKA_CASES}
    slow = {
        name: round(run.seconds, 1)
        for name, run in kafka_runs.items()
        if isinstance(run, KafkaRun) and run.seconds > TIMEOUT + 30
    }
    assert not slow, slow


# --------------------------------------------------------------- records on the wire


@dataclass(frozen=True)
class WireRecord:
    """A record that only Kafka can carry: no value, no key, a key that is not text,
    headers of a hostile producer, a message on a topic not meant for it."""

    what: str
    topic: str  # "links", "overrides" or "feedback"
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    role: str = "dead"  # "dead" or "any", as for a corpus line
    partition: int | None = None  # None: the key's partition (or 0 without a key)


def _wire_records() -> list[WireRecord]:
    from tests.hostile.corpus import at, override, reading

    pin = override("akta-lahir", "pin", at(20), "override/wire/pin")
    forged = (
        ("failover-reason", b"not-applicable: forged by the producer"),
        ("failover-source-topic", b"nowhere"),
    )
    return [
        WireRecord("a tombstone (no value) of a link", "links", b"backup-4g", None),
        WireRecord("an empty value", "overrides", b"ektp", b""),
        WireRecord("a pin with no key", "overrides", None, pin, role="any"),
        WireRecord(
            "a key that is not UTF-8",
            "links",
            b"\xff\xfe",
            reading("backup-4g", at(21), ident="probe/wire/key"),
        ),
        WireRecord(
            "the tick key on a force_manual",
            "overrides",
            b"__tick__",
            override("ektp", "force_manual", at(22), "override/wire/tick-key"),
        ),
        WireRecord(
            "an override on the link-status topic",
            "links",
            b"ektp",
            override("ektp", "force_manual", at(22), "override/wire/topic"),
        ),
        WireRecord(
            "a reading on the feedback topic",
            "feedback",
            b"vsat-palapa",
            reading("vsat-palapa", at(23), ident="probe/wire/topic"),
        ),
        WireRecord(
            "the engine's own dead-letter headers, forged, on garbage",
            "links",
            b"garbage",
            b"{not json",
            forged,
        ),
        WireRecord(
            "a traceparent header that is not text",
            "links",
            b"vsat-palapa",
            reading("vsat-palapa", at(24), ident="probe/wire/tp1"),
            (("traceparent", b"\xff\xfe\x00\x1b[2J"),),
            role="any",
        ),
        WireRecord(
            "a traceparent header of 100 kB, twice",
            "links",
            b"telkom-sto-pattimura",
            reading("telkom-sto-pattimura", at(25), ident="probe/wire/tp2"),
            (("traceparent", b"0" * 100_000), ("traceparent", b"00-" + b"f" * 52)),
            role="any",
        ),
    ]


async def _send_wire(
    bootstrap: str, s: Settings, records: list[WireRecord]
) -> list[tuple[WireRecord, str, int, int]]:
    """Send each record and learn where it landed: (record, topic, partition, offset)."""
    from aiokafka import AIOKafkaProducer

    topics = {
        "links": s.topic_link_status,
        "overrides": s.topic_overrides,
        "feedback": s.topic_feedback,
    }
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, max_request_size=1024 * 1024
    )
    await producer.start()
    try:
        landed = []
        for r in records:
            partition = r.partition
            if partition is None:
                partition = partition_for(r.key, s.partitions) if r.key else 0
            headers = list(r.headers) or None
            meta = await producer.send_and_wait(
                topics[r.topic], r.value, key=r.key, partition=partition, headers=headers
            )
            landed.append((r, meta.topic, meta.partition, meta.offset))
        return landed
    finally:
        await producer.stop()


Letter = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


async def _dead_letters(bootstrap: str, topic: str) -> list[Letter]:
    """Every committed record of ``topic``: key, value and the headers as sent (a list)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or await _partitions(consumer, topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out += [(r.key, r.value, list(r.headers or ())) for r in records]
        return out
    finally:
        await consumer.stop()


async def _partitions(consumer: object, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # type: ignore[attr-defined]
    return consumer.partitions_for_topic(topic) or set()  # type: ignore[attr-defined]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            "wire-records",
            marks=[pytest.mark.xfail(strict=True, reason=xfails.KAFKA["wire-records"])]
            if "wire-records" in xfails.KAFKA
            else [],
        )
    ],
)
async def test_hostile_records_on_the_wire(kafka_bootstrap: str, tmp_path: Path, name: str) -> None:
    """Records a JSONL file cannot hold, between the frame's first and last lines: each
    dead-lettered (or, where said, used or refused) with its key, its bytes and the engine's
    reason (the last value of its header: a forged one sent with the input does not count);
    the worker stays up and the framed force_manual takes effect."""
    from tests.hostile.corpus import AFTER_ID, framed

    run_id = uuid.uuid4().hex[:8]
    engine = engine_env(
        kafka_bootstrap,
        lambda p: f"t-hostile-{name}-{p}-{run_id}",
        tmp_path,
        partitions=PARTITIONS,
        topology=CORPUS_TOPOLOGY,
    )
    s = engine.settings
    frame = framed([])
    head, tail = _messages(s, frame[:4]), _messages(s, frame[4:])
    wire = _wire_records()
    async with engine_topics(engine):
        await publish(kafka_bootstrap, [(m.topic, m.key, m.value, m.partition) for m in head])
        landed = await _send_wire(kafka_bootstrap, s, wire)
        await publish(kafka_bootstrap, [(m.topic, m.key, m.value, m.partition) for m in tail])
        outputs = Outputs(kafka_bootstrap, [s.topic_transitions, s.topic_deadletter])
        async with outputs, running_worker(engine) as worker:
            deadline = time.monotonic() + TIMEOUT
            while not (await group_done(engine) and await outputs.at_end()):
                assert worker.poll() is None, f"the worker exited\n{engine.log_tail()}"
                assert time.monotonic() < deadline, f"not done: {await group_lag(engine)}"
                await asyncio.sleep(0.2)
            assert worker.poll() is None, f"the worker exited\n{engine.log_tail()}"
        letters = await _dead_letters(kafka_bootstrap, s.topic_deadletter)
    problems = terminal_problems("the worker's log", _logs(engine).encode())
    if AFTER_ID not in _causes(outputs.records, s):
        problems.append(f"{AFTER_ID} caused no transition")
    codes = reason_codes()
    by_where: dict[tuple[str, int, int], tuple[bytes | None, bytes | None, list[str]]] = {}
    for key, value, headers in letters:
        h = defaultdict(list)
        for header, content in headers:
            h[header].append(content)
        where = (
            h["failover-source-topic"][-1].decode(),
            int(h["failover-source-partition"][-1]),
            int(h["failover-source-offset"][-1]),
        )
        by_where[where] = (key, value, [r.decode("utf-8", "replace") for r in h["failover-reason"]])
    for record, topic, partition, offset in landed:
        letter = by_where.get((topic, partition, offset))
        if letter is None:
            if record.role == "dead":
                problems.append(f"{record.what}: not dead-lettered")
            continue
        key, value, reasons = letter
        # The input's own headers may be kept ahead of the engine's: the last value is its.
        if not reasons or "forged" in reasons[-1]:
            problems.append(f"{record.what}: reason headers {reasons}")
        elif code_of(reasons[-1]) not in codes:
            problems.append(f"{record.what}: undocumented reason {reasons[-1][:100]!r}")
        if key != record.key or (value or b"") != (record.value or b""):
            problems.append(f"{record.what}: dead letter key or bytes differ from the record's")
    assert not problems, "\n".join(problems)
