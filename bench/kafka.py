"""Benchmark of the engine on Kafka: ``failover worker`` against the consumer ceiling.

Not a test: a script that prints one table from one run on one broker (infra/kafka/up's
unless --bootstrap or KAFKA_BOOTSTRAP_SERVERS says otherwise)::

    .venv/bin/python bench/kafka.py [--events N] [--partitions N]
        [--skip a,b,c,d,tracing,profile] [--guarantee both|exactly_once|at_least_once]
        [--load RATE@TICK,...] [--trace-ratio R] [--worker-env K=V] [--baseline DIR]
        [--misroute SHARE]

Every topic it creates is deleted at the end and every worker it starts is stopped, also on
Ctrl-C, SIGTERM or failure. Worker logs and py-spy profiles stay in --out (a temp dir).

(a) The ceiling: aiokafka ``getmany(max_records=10000)`` + ``orjson.loads`` of every record of
    the link-status topic: ``--events`` ``link.status.v1`` events made by bench/core.py's
    generator over ``--sites`` sites (keyed by link, 6 partitions), plus the ticks routed
    there. Measured twice before, between and after the engine runs; the best counts.
(b) The engine over the same input topics: ``failover worker`` in a subprocess (memory store,
    FAILOVER_TICK_INTERVAL=0: the generator's ticks are in the input, as in replay), once per
    processing guarantee, each with its own app id, changes and output topics. The input
    ends with one ``force_manual`` per stage-2 partition and a last tick; their transitions
    are the sentinel. Timed from faust's "Worker ready" log line (recovery done, streams
    resumed) to (1) the last sentinel transition at a read_committed consumer: every input
    processed and its output committed; (2) the group's offsets committed at the end of every
    input partition and of the changes topic. The output is compared with the pure core's.
    py-spy (blocking, 100 Hz, --idle) samples ``--profile-seconds`` of each run. With
    ``--baseline DIR``, each guarantee also runs first with the code of the checkout DIR
    (``git worktree add DIR COMMIT``; its row says "baseline"): before and after in one run.
    With ``--misroute SHARE``, each guarantee also runs over a second copy of the inputs in
    which every reading of that share of the links is on the partition after its link's (as
    from a producer whose partitioner is not murmur2, but keeps a key on one partition): the
    engine forwards them through its repartition topic (its row says "on a wrong
    partition"); the output must still be the pure core's.
(c) Latency: a fresh engine with the live ticker; for ``--duration`` s a paced producer offers
    RATE link events/s, 20 ``force_manual`` overrides/s (each on another service) and takes
    one site's fiber link down each second (``degrade_after`` is 2 s in this topology).
    Override latency: from its send to the first command of the incident it opens. Link
    latency: from the tick that completed ``degrade_after`` (the transition's event time, the
    ticker's wall clock) to the first command. Arrival: when a read_committed ``getmany`` in
    this process returned the command. One run per RATE@TICK of ``--load``.
(d) Restore: ``--restore-sites`` x 10 services, the topology as JSON (as a deployment that
    large keeps it: workflows/topology.py). The two tables' changelogs are filled with
    what the worker writes (its ``LinkPartition`` and ``ServicePartition`` run here over a
    degraded then an up reading of every link, 1% forced to manual, and ticks: every service
    has a state), a new override and tick wait in the input, and a fresh worker with an empty
    store starts. Timed from process start to the override's first command.
(t) Tracing (part ``tracing``): what traces cost on the Kafka path. Three engine runs as in
    (b), exactly_once, over the same events, except that every ``link.status.v1`` record
    carries a W3C ``traceparent`` Kafka header, as from probes that trace their readings: a
    random trace id and span id, the sampled flag set when the trace id falls in the
    ``--trace-ratio`` share (``TraceIdRatioBased``'s rule: its low 64 bits below ratio x 2^64,
    so that a ratio sampler anywhere agrees). Ticks and overrides carry none. The inputs are
    published twice more for it: once flagged at ``--trace-ratio`` (default 1%), once with
    every reading sampled. The runs (worker environment; inherited ``OTEL_*`` are dropped):
    (i) off: no ``OTEL_*`` at all, over the ``--trace-ratio`` input; (ii) parent-based
    ``--trace-ratio``: ``OTEL_TRACES_SAMPLER=parentbased_traceidratio``,
    ``OTEL_TRACES_SAMPLER_ARG=R`` over the same input (the engine follows each probe's
    decision; its own roots, the batch spans, are sampled at R); (iii) 100%:
    ``parentbased_always_on`` over the all-sampled input. (ii) and (iii) export over OTLP/HTTP
    (``OTEL_TRACES_EXPORTER=otlp``, the SDK's default batch processor settings) to a receiver
    in this process, which decodes each request, counts its spans and discards them; metrics
    are off (``OTEL_METRICS_EXPORTER=none``): this is the cost of traces. Each row: events/s
    as in (b), as a share of (i), and the spans received. Target: (ii) at most 15% below (i).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import itertools
import logging
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import orjson
import yaml
from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaConsumer,
    AIOKafkaProducer,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is not a package: make bench.core importable
    sys.path.insert(0, str(ROOT))

from bench.core import SERVICES, START, make_stream, topology_yaml  # noqa: E402
from streams.codec import Origin, tick_event  # noqa: E402
from streams.config import INPUT_MAX_MESSAGE_BYTES, Settings  # noqa: E402
from streams.partitions import (  # noqa: E402
    FEEDBACK_SOURCE,
    OVERRIDES_SOURCE,
    LinkPartition,
    Record,
    Routing,
    ServicePartition,
)
from streams.topics import TopicSpec, ensure_topics, partition_for, topic_specs  # noqa: E402
from tests.kafka.workers import isolated_env, signed  # noqa: E402
from tests.otlp import Receiver, serve  # noqa: E402
from workflows.engine import TICK_KEY, Engine  # noqa: E402
from workflows.records import COMMANDS, TRANSITIONS, DeadLetter, Emitted  # noqa: E402
from workflows.timeutil import format_time, parse_time  # noqa: E402
from workflows.topology import Topology  # noqa: E402

BIG: Final = 8 * 1024 * 1024
SECOND: Final = 1_000_000  # event time is in microseconds
PARTS: Final = ("a", "b", "c", "d", "tracing", "profile")
GUARANTEES: Final = ("exactly_once", "at_least_once")


def note(text: str) -> None:
    """Progress, on stderr: stdout is the report."""
    print(f"  .. {text}", file=sys.stderr, flush=True)


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


# -- the run: topics, workers, cleanup --------------------------------------------------------


@dataclass
class Worker:
    """One ``failover worker`` subprocess and its log."""

    label: str
    process: subprocess.Popen[bytes]
    log: Path
    spawned: float  # time.time() just before the process was started

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_mb(self) -> float:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def log_time(self, marker: str) -> float | None:
        """The time of the first log line that contains ``marker`` (epoch seconds)."""
        with contextlib.suppress(OSError), self.log.open("rb") as handle:
            for raw in handle:
                if marker.encode() in raw and raw.startswith(b"[20"):
                    text = raw[1:24].decode()
                    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        return None

    def first_log_time(self) -> float | None:
        return self.log_time("] [")

    def tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_pid() -> int | None:
    """The pid of the broker infra/kafka/up started, to report its CPU time (or None)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    data = Path(os.environ.get("KAFKA_DATA_DIR") or Path(cache) / "failover-kafka")
    with contextlib.suppress(OSError, ValueError):
        return int((data / "broker.pid").read_text().split()[0])
    return None


class Bench:
    """What one run of the benchmark created, so that it can all be undone."""

    def __init__(
        self, bootstrap: str, out: Path, partitions: int, extra_env: dict[str, str] | None = None
    ) -> None:
        self.bootstrap = bootstrap
        self.out = out
        self.partitions = partitions
        self.extra_env = extra_env or {}
        self.run = uuid.uuid4().hex[:8]
        self.topics: set[str] = set()
        self.workers: list[Worker] = []
        self.helpers: list[subprocess.Popen[bytes]] = []
        self.readers: list[Outputs] = []
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self.failover = self._failover_command()

    @staticmethod
    def _failover_command() -> list[str]:
        script = Path(sys.executable).with_name("failover")
        if script.is_file():
            return [str(script), "worker"]
        return [sys.executable, "-c", "from streams.cli import main; main()", "worker"]

    def name(self, purpose: str) -> str:
        return f"bench-{self.run}-{purpose}"

    def env(
        self, label: str, topology: Path, inputs: Settings | None = None, **extra: str
    ) -> dict[str, str]:
        """A worker's environment: its own app id and topics (the inputs of ``inputs`` when
        given), memory store, this run's partitions."""
        env = isolated_env(
            self.bootstrap,
            topology,
            self.partitions,
            self.out / f"{label}-data",
            lambda purpose: self.name(f"{label}-{purpose}"),
        )
        if inputs is not None:
            env["FAILOVER_TOPIC_LINK_STATUS"] = inputs.topic_link_status
            env["FAILOVER_TOPIC_OVERRIDES"] = inputs.topic_overrides
            env["FAILOVER_TOPIC_FEEDBACK"] = inputs.topic_feedback
        env.update(extra)
        env.update(self.extra_env)
        return env

    async def create(self, settings: Settings, extra: Iterable[TopicSpec] = ()) -> None:
        """Create the engine's topics (as the worker would), and remember faust's own."""
        specs = [*topic_specs(settings), *extra]
        self.topics.update(spec.name for spec in specs)
        self.topics.update(
            f"{settings.app_id}-{suffix}"
            for suffix in (
                "link-health-changelog",
                "service-state-changelog",
                "__assignor-__leader",
            )
        )
        await ensure_topics(settings.bootstrap_servers, specs, settings.replication)

    def start_worker(self, label: str, env: dict[str, str], *, own_otel: bool = False) -> Worker:
        """Start ``failover worker``; with ``own_otel``, the ``OTEL_*`` variables are those of
        ``env`` alone (none inherited from this process)."""
        log = self.out / f"worker-{label}.log"
        inherited = {
            k: v for k, v in os.environ.items() if not (own_otel and k.startswith("OTEL_"))
        }
        with log.open("wb") as handle:
            spawned = time.time()
            process = subprocess.Popen(
                self.failover,
                env={**inherited, **env, "PYTHONUNBUFFERED": "1"},
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=self.out,
                start_new_session=True,  # Ctrl-C reaches the bench, which stops it
            )
        worker = Worker(label, process, log, spawned)
        self.workers.append(worker)
        return worker

    async def stop_worker(self, worker: Worker, timeout: float = 30.0) -> None:
        """SIGTERM, a clean exit; SIGKILL after ``timeout``."""
        if worker.alive():
            worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while worker.alive():
            if time.monotonic() > deadline:
                worker.process.kill()
                worker.process.wait()
                note(f"worker {worker.label} did not stop within {timeout:.0f} s: killed")
                return
            await asyncio.sleep(0.05)

    def reader(self, topics: Sequence[str]) -> Outputs:
        """An :class:`Outputs` that :meth:`cleanup` stops if its user did not."""
        reader = Outputs(self.bootstrap, topics)
        self.readers.append(reader)
        return reader

    async def cleanup(self) -> None:
        for reader in self.readers:
            await reader.stop()
        for helper in self.helpers:
            if helper.poll() is None:
                helper.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    helper.wait(timeout=10)
        for worker in self.workers:
            await self.stop_worker(worker)
        if self.topics:
            existing = set(await self.admin.list_topics())
            doomed = sorted(self.topics & existing)
            if doomed:
                await self.admin.delete_topics(doomed)
            note(f"deleted {len(doomed)} topics")

    async def committed(self, group: str) -> dict[TopicPartition, int]:
        offsets = await self.admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


Headers = list[tuple[str, bytes]]
Message = tuple[str, bytes | None, bytes, int] | tuple[str, bytes | None, bytes, int, Headers]


async def publish(bootstrap: str, messages: Iterable[Message]) -> int:
    """Send (topic, key, value, partition[, headers]) in order with one idempotent producer."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=BIG,
        max_batch_size=1024 * 1024,
    )
    try:
        await producer.start()
        futures = [
            await producer.send(
                topic, value, key=key, partition=partition, headers=rest[0] if rest else None
            )
            for topic, key, value, partition, *rest in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(futures)


async def end_offsets(bootstrap: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    try:
        await consumer.start()
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def after_last_record(bootstrap: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """The offset after the last record of each partition, read_committed: a topic written
    in transactions ends with commit markers, which no consumer sees and none commits."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    try:
        await consumer.start()
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        after = dict.fromkeys(tps, 0)
        for tp in tps:
            consumer.seek(tp, max(0, ends[tp] - 500))
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, records in batch.items():
                if records:
                    after[tp] = max(after[tp], records[-1].offset + 1)
        return after
    finally:
        await consumer.stop()


@dataclass
class Output:
    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    arrived: float  # time.time() when getmany returned it


class Outputs:
    """A read_committed reader of output topics, from the beginning, noting arrival times."""

    def __init__(self, bootstrap: str, topics: Sequence[str]) -> None:
        self.topics = list(topics)
        self.records: list[Output] = []
        self.stopped = False
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=BIG,
            fetch_max_wait_ms=20,
        )

    async def start(self, partitions: int) -> None:
        await self.consumer.start()
        tps = [TopicPartition(t, p) for t in self.topics for p in range(partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.consumer.stop()

    async def poll(self, timeout_ms: int = 100) -> list[Output]:
        batch = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=10_000)
        now = time.time()
        new = [
            Output(tp.topic, r.key, r.value or b"", dict(r.headers or ()), now)
            for tp, records in batch.items()
            for r in records
        ]
        self.records.extend(new)
        return new

    async def drain(self, timeout: float = 30.0) -> None:
        """Read everything committed so far."""
        deadline = time.monotonic() + timeout
        tps = list(self.consumer.assignment())
        while time.monotonic() < deadline:
            await self.poll()
            ends = await self.consumer.end_offsets(tps)
            if not [tp for tp in tps if await self.consumer.position(tp) < ends[tp]]:
                return


# -- inputs ---------------------------------------------------------------------------------


def topology_document(sites: int) -> dict[str, Any]:
    """What ``yaml.safe_load(topology_yaml(sites))`` gives, built directly: the pure-Python
    YAML parser takes over a minute for 100,000 services (see :func:`check_document`)."""
    document: dict[str, Any] = {"sites": {}, "links": {}, "services": {}}
    zones = ("Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura")
    for i in range(sites):
        document["sites"][f"site-{i:04d}"] = {"name": f"Kantor {i}", "timezone": zones[i % 3]}
    for region in range((sites + 9) // 10):
        document["links"][f"r{region:03d}.uplink"] = {
            "provider": "telkom",
            "description": f"regional uplink {region}",
        }
    for i in range(sites):
        document["links"][f"site-{i:04d}.fiber"] = {"provider": "telkom"}
        document["links"][f"site-{i:04d}.4g"] = {"provider": "seluler"}
    for i in range(sites):
        site = f"site-{i:04d}"
        names = {"A": f"{site}.fiber", "B": f"{site}.4g", "U": f"r{i // 10:03d}.uplink"}
        for name, name_id, name_en, requires, offline, manual_after in SERVICES:
            service: dict[str, Any] = {
                "site": site,
                "name": {"id": name_id, "en": name_en},
                "requires": [
                    names[item] if isinstance(item, str) else [names[x] for x in item]
                    for item in requires
                ],
                "offline": offline,
            }
            if not offline:
                service["queue"] = f"{site}.{name}.counter"
            if manual_after:
                service["policy"] = {"manual_after": manual_after}
            document["services"][f"{site}.{name}"] = service
    document["policy"] = {"degrade_after": "60s", "manual_after": "300s", "stale_after": "120s"}
    return document


def check_document() -> None:
    """:func:`topology_document` must stay bench/core.py's topology."""
    text, _ = topology_yaml(23)
    assert yaml.safe_load(text) == topology_document(23), "topology_document drifted from core"


@dataclass
class Inputs:
    """The input of (a) and (b), published once to one set of input topics."""

    settings: Settings  # its input topic names
    topology: Topology
    topology_path: Path
    lines: list[bytes]  # in order, as replay reads them: probes, ticks, sentinels, last tick
    probes: int
    ticks: int
    seconds: int
    spells: int
    sentinels: dict[str, str]  # override id -> service, one per stage-2 partition
    parse_seconds: float  # Topology.parse of this topology, in this process
    messages: int = 0  # on Kafka: ticks are copied to every partition of the three inputs
    link_messages: int = 0  # of which in the link-status topic
    bytes: int = 0
    ends: dict[TopicPartition, int] = field(default_factory=dict)
    sampled: int = 0  # (t): link events whose traceparent has the sampled flag
    misrouted: int = 0  # (b) --misroute: link events on a partition not their link's


def route(settings: Settings, raw: bytes) -> list[tuple[str, bytes, bytes, int]]:
    """Where an input line goes on Kafka (as the engine's producers must send it)."""
    n = settings.partitions
    event = orjson.loads(raw)
    if event["type"] == "clock.tick.v1":
        key = TICK_KEY.encode()
        topics = (settings.topic_link_status, settings.topic_overrides, settings.topic_feedback)
        raw = signed(raw)  # with the workers' tick key (isolated_env), as their ticker does
        return [(t, key, raw, p) for t in topics for p in range(n)]
    key = str(event["subject"]).encode()
    topic = (
        settings.topic_overrides
        if event["type"] == "operator.override.v1"
        else settings.topic_link_status
    )
    return [(topic, key, raw, partition_for(key, n))]


def override(service: str, ident: str, micros: int) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": ident,
            "source": "/bench/operator",
            "type": "operator.override.v1",
            "time": format_time(micros),
            "subject": service,
            "data": {
                "action": "force_manual",
                "actor": "bench",
                "role": "on-call",
                "reason": "benchmark",
            },
        }
    )


def reading(link: str, ident: str, micros: int, status: str, latency: float | None) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": ident,
            "source": "/bench/probe",
            "type": "link.status.v1",
            "time": format_time(micros),
            "subject": link,
            "data": {"status": status, "latency_ms": latency, "loss_pct": 0.0},
        }
    )


def make_inputs(bench: Bench, args: argparse.Namespace) -> Inputs:
    text, links = topology_yaml(args.sites)
    # The sentinels are unsigned overrides from the bench itself: taken as in development
    # (without this line the engine refuses them, and (b) would wait for them for ever).
    text += "unsigned_overrides: accept\n"
    path = bench.out / "topology.yaml"
    path.write_text(text)
    wall = time.perf_counter()
    topology = Topology.parse(text, str(path))
    parse_seconds = time.perf_counter() - wall
    stream = make_stream(links, args.events, args.seed)
    settings = Settings.from_env(bench.env("input", path))
    # Sentinels: one force_manual per stage-2 partition, on a service whose links have no
    # spell (it is online), after everything else; the last tick applies them.
    n = settings.partitions
    flaky = set(stream.spells)
    calm = [
        sid
        for sid, service in topology.services.items()
        if not any(link in flaky for group in service.requires for link in group)
    ]
    chosen: dict[int, str] = {}
    for sid in calm:
        chosen.setdefault(partition_for(sid, n), sid)
    assert len(chosen) == n, "not enough calm services for one sentinel per partition"
    end = (START + stream.seconds) * SECOND
    sentinels = {f"sentinel/{q}/{bench.run}": chosen[q] for q in range(n)}
    lines = list(stream.inputs)
    lines.extend(override(sid, ident, end + 5 * SECOND) for ident, sid in sentinels.items())
    lines.append(tick_event(end + 15 * SECOND)[1])
    return Inputs(
        settings,
        topology,
        path,
        lines,
        stream.probes,
        stream.ticks + 1,
        stream.seconds,
        sum(len(v) for v in stream.spells.values()),
        sentinels,
        parse_seconds,
    )


def probe_traceparents(ratio: float, seed: int) -> Iterator[Headers]:
    """``traceparent`` headers of probes that sample ``ratio`` of their traces: random ids,
    the sampled flag set as ``TraceIdRatioBased(ratio)`` would decide for the trace id."""
    rng = random.Random(seed)
    bound = round(ratio * (1 << 64))
    while True:
        trace_id = rng.getrandbits(128) or 1
        span_id = rng.getrandbits(64) or 1
        flags = "01" if trace_id & 0xFFFF_FFFF_FFFF_FFFF < bound else "00"
        yield [("traceparent", f"00-{trace_id:032x}-{span_id:016x}-{flags}".encode())]


async def publish_inputs(
    bench: Bench, data: Inputs, traced: float | None = None, misroute: float = 0.0
) -> float:
    """Publish ``data`` to its input topics; with ``traced``, every link event carries a
    probe's ``traceparent`` header, sampled at that ratio (:func:`probe_traceparents`); with
    ``misroute``, every link event of that share of the links (chosen at random, seeded) goes
    to the partition after its link's (murmur2): the engine forwards them."""
    s = data.settings
    specs = [
        spec
        for spec in topic_specs(s)
        if spec.name in (s.topic_link_status, s.topic_overrides, s.topic_feedback)
    ]
    bench.topics.update(spec.name for spec in specs)
    await ensure_topics(s.bootstrap_servers, specs, s.replication)
    messages: list[Message] = []
    parents = probe_traceparents(traced or 0.0, len(data.lines))
    tick_key = TICK_KEY.encode()
    # Misrouted: every reading of that share of the links (a producer that keeps a key on one
    # partition, not murmur2's), chosen by a seeded draw per link.
    chance = random.Random(len(data.lines))
    wrong = {link for link in sorted(data.topology.links) if chance.random() < misroute}
    for raw in data.lines:
        routed = route(s, raw)
        if misroute and routed[0][0] == s.topic_link_status and routed[0][1] != tick_key:
            [(topic, key, value, partition)] = routed
            if key.decode() in wrong:
                data.misrouted += 1
                routed = [(topic, key, value, (partition + 1) % s.partitions)]
        if traced is None or routed[0][0] != s.topic_link_status or routed[0][1] == tick_key:
            messages.extend(routed)
            continue
        [(topic, key, value, partition)] = routed
        headers = next(parents)
        data.sampled += headers[0][1].endswith(b"-01")
        messages.append((topic, key, value, partition, headers))
    data.messages = len(messages)
    data.link_messages = sum(m[0] == s.topic_link_status for m in messages)
    data.bytes = sum(len(m[2]) for m in messages if m[0] == s.topic_link_status)
    began = time.perf_counter()
    await publish(bench.bootstrap, messages)
    elapsed = time.perf_counter() - began
    tps = [
        TopicPartition(t, p)
        for t in (s.topic_link_status, s.topic_overrides, s.topic_feedback)
        for p in range(s.partitions)
    ]
    data.ends = await end_offsets(bench.bootstrap, tps)
    assert sum(data.ends.values()) == data.messages
    return elapsed


# -- (a) the ceiling ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def ceiling_reader(
    bootstrap: str, topic: str, partitions: Iterable[int]
) -> AsyncIterator[tuple[AIOKafkaConsumer, int]]:
    """A plain consumer assigned ``partitions`` of ``topic`` from the beginning, start offsets
    resolved (before any timing), and how many records they hold."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=INPUT_MAX_MESSAGE_BYTES + 64 * 1024,
    )
    try:
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        starts = {tp: await consumer.position(tp) for tp in tps}
        ends = await consumer.end_offsets(tps)
        yield consumer, sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await consumer.stop()


async def read_ceiling(consumer: AIOKafkaConsumer, wanted: int) -> None:
    """The ceiling's work: ``getmany(max_records=10000)`` and ``orjson.loads`` of each record,
    until ``wanted`` records are read."""
    loads = orjson.loads
    count = 0
    while count < wanted:
        batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
        for records in batch.values():
            for record in records:
                loads(record.value)
            count += len(records)


async def ceiling(bench: Bench, data: Inputs) -> tuple[float, float]:
    """aiokafka getmany + orjson.loads of the whole link-status topic: (seconds, CPU s)."""
    s = data.settings
    async with ceiling_reader(bench.bootstrap, s.topic_link_status, range(s.partitions)) as (
        consumer,
        wanted,
    ):
        assert wanted == data.link_messages, (wanted, data.link_messages)
        wall, cpu = time.perf_counter(), time.process_time()
        await read_ceiling(consumer, wanted)
        return time.perf_counter() - wall, time.process_time() - cpu


async def ceiling_child(bootstrap: str, topic: str, partitions: list[int]) -> None:
    """One process of :func:`ceiling_processes`: read ``partitions`` of ``topic`` as
    :func:`ceiling` does, once told to go; print ``ready``, then ``done <CPU seconds>``."""
    async with ceiling_reader(bootstrap, topic, partitions) as (consumer, wanted):
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        cpu = time.process_time()
        await read_ceiling(consumer, wanted)
        print(f"done {time.process_time() - cpu}", flush=True)


async def ceiling_processes(bench: Bench, data: Inputs, processes: int) -> tuple[float, float]:
    """:func:`ceiling` in ``processes`` processes, partitions dealt round-robin, started
    together once all are assigned: (seconds until the last is done, CPU s of all)."""
    s = data.settings
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).resolve()), "--ceiling-child", bench.bootstrap,
            s.topic_link_status,
            ",".join(str(p) for p in range(s.partitions) if p % processes == number),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        for number in range(processes)
    ]  # fmt: skip
    try:
        for child in children:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), 60)
            if line.strip() != b"ready":
                raise RuntimeError(f"a ceiling process did not start: {line!r}")
        wall = time.perf_counter()
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            await child.stdin.drain()
        cpu = 0.0
        for child in children:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), 300)
            if not line.startswith(b"done "):
                raise RuntimeError(f"a ceiling process failed: {line!r}")
            cpu += float(line.split()[1])
        return time.perf_counter() - wall, cpu
    finally:
        for child in children:
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
            await child.wait()


# -- (b) the engine -------------------------------------------------------------------------


@dataclass
class EngineResult:
    guarantee: str
    startup: float  # process start to "Worker ready"
    to_outputs: float  # "Worker ready" to the last sentinel output
    to_offsets: float | None  # "Worker ready" to every offset committed (None: not in time)
    offsets_lag: int  # records not committed when the wait for offsets ended
    worker_cpu: float  # CPU seconds of the worker, "Worker ready" to the last output
    broker_cpu: float | None
    outputs: Counter[str]
    parity: str
    profile: Path | None
    log: Path


def expected_outputs(
    topology: Topology, lines: Iterable[bytes]
) -> tuple[dict[tuple[str, str], list[bytes]], Counter[str]]:
    """The pure core over the same input, in order: per (topic, service) the event bytes."""
    engine = Engine(topology)
    per_key: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    dead: Counter[str] = Counter()

    def take() -> None:
        for record in engine.drain():
            if isinstance(record, Emitted):
                per_key[(record.topic, record.key)].append(orjson.dumps(record.event))
            else:
                assert isinstance(record, DeadLetter)
                dead[record.reason.split(":", 1)[0]] += 1

    for number, raw in enumerate(lines):
        engine.feed(raw)
        if number % 10_000 == 0:
            take()
    engine.finish()
    take()
    return per_key, dead


def parity(
    settings: Settings,
    records: list[Output],
    expected: tuple[dict[tuple[str, str], list[bytes]], Counter[str]],
) -> str:
    names = {settings.topic_commands: COMMANDS, settings.topic_transitions: TRANSITIONS}
    got: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    dead: Counter[str] = Counter()
    for r in records:
        if r.topic in names and r.key is not None:
            got[(names[r.topic], r.key.decode())].append(r.value)
        elif r.topic == settings.topic_deadletter:
            dead[r.headers.get("failover-reason", b"").decode().split(":", 1)[0]] += 1
    want, want_dead = expected
    keys = set(got) | set(want)
    differ = sum(got.get(k, []) != want.get(k, []) for k in keys)
    if differ == 0 and dead == want_dead:
        return "identical to the pure core's (per service and topic)"
    return f"DIFFERENT from the pure core's: {differ} of {len(keys)} (topic, service) differ"


def output_counts(settings: Settings, records: list[Output]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for r in records:
        if r.topic == settings.topic_deadletter:
            counts["dead letters"] += 1
        else:
            kind = r.headers.get("failover-type", b"?").decode().removeprefix("failover.")
            counts[kind] += 1
    return counts


async def engine_run(
    bench: Bench,
    data: Inputs,
    guarantee: str,
    expected: tuple[dict[tuple[str, str], list[bytes]], Counter[str]] | None,
    profile_seconds: float,
    offsets_wait: float,
    *,
    label: str | None = None,
    extra_env: dict[str, str] | None = None,
    own_otel: bool = False,
    workers: int = 1,
) -> EngineResult:
    """One worker over ``data`` (published), timed; ``label`` names its app, topics and log
    (``b-eos``/``b-alo`` by default), ``extra_env`` is added to its environment, and with
    ``own_otel`` its ``OTEL_*`` variables are those of ``extra_env`` alone. ``workers``
    workers in one group share the partitions: timed from the first one's "Worker ready"
    (their rebalances included), CPU the sum of theirs, the first one profiled."""
    label = label or ("b-eos" if guarantee == "exactly_once" else "b-alo")
    what = f"({label})" if label.startswith("t") else f"(b) {guarantee}"
    env = bench.env(
        label,
        data.topology_path,
        data.settings,
        FAILOVER_PROCESSING_GUARANTEE=guarantee,
        FAILOVER_TICK_INTERVAL="0",
    )
    env.update(extra_env or {})
    s = Settings.from_env(env)
    await bench.create(s)
    outputs = bench.reader([s.topic_transitions, s.topic_commands, s.topic_deadletter])
    await outputs.start(s.partitions)
    broker = broker_pid()
    group = [
        bench.start_worker(label if i == 0 else f"{label}-{i}", env, own_otel=own_otel)
        for i in range(workers)
    ]
    worker = group[0]
    for w in group:
        note(f"{what}: worker pid {w.pid} started, log {w.log}")
    waiting = set(data.sentinels)
    ready: float | None = None
    cpu0 = broker0 = 0.0
    spy: subprocess.Popen[bytes] | None = None
    profile = bench.out / f"profile-{label}.txt" if profile_seconds > 0 else None
    limit = time.monotonic() + 120 + data.messages / 200
    try:
        while waiting:
            for w in group:
                if not w.alive():
                    raise RuntimeError(f"a worker exited:\n{w.tail()}")
            if time.monotonic() > limit:
                raise RuntimeError(f"no sentinel output in time:\n{worker.tail()}")
            for record in await outputs.poll():
                if record.topic == s.topic_transitions:
                    waiting.discard(orjson.loads(record.value)["data"]["cause"])
            if ready is None:
                readies = [t for w in group if (t := w.log_time("Worker ready")) is not None]
                if readies:
                    ready = min(readies)
                    cpu0 = sum(w.cpu_seconds() for w in group)
                    broker0 = cpu_seconds(broker) if broker else 0.0
            elif profile is not None and spy is None and time.time() > ready + 3:
                spy = start_profiler(bench, worker, profile, profile_seconds)
        done = time.time()
        assert ready is not None
        cpu = sum(w.cpu_seconds() for w in group) - cpu0
        broker_cpu = cpu_seconds(broker) - broker0 if broker else None
        note(f"{what}: every sentinel output after {done - ready:.1f} s; offsets...")
        changes = [TopicPartition(s.topic_changes, p) for p in range(s.partitions)]
        target = {**data.ends, **await after_last_record(bench.bootstrap, changes)}
        to_offsets: float | None = None
        lag = 0
        deadline = done + offsets_wait
        while True:
            committed = await bench.committed(s.app_id)
            lag = sum(max(0, end - committed.get(tp, 0)) for tp, end in target.items())
            if lag == 0:
                to_offsets = time.time() - ready
                break
            if time.time() > deadline:
                break
            await asyncio.sleep(0.2)
        if spy is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(timeout=profile_seconds + 30)
        for w in group:
            await bench.stop_worker(w)
        await outputs.drain()
    finally:
        await outputs.stop()
    return EngineResult(
        guarantee if workers == 1 else f"{guarantee}, {workers} workers",
        ready - worker.spawned,
        done - ready,
        to_offsets,
        lag,
        cpu,
        broker_cpu,
        output_counts(s, outputs.records),
        parity(s, outputs.records, expected) if expected is not None else "not checked",
        profile if spy is not None and spy.returncode == 0 else None,
        worker.log,
    )


def start_profiler(
    bench: Bench, worker: Worker, path: Path, seconds: float
) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).is_file():
        note("py-spy not found: no profile (pip install py-spy)")
        return None
    process = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(worker.pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "100",
            "--idle",
            "--format",
            "raw",
            "-o",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=(bench.out / f"{path.stem}.py-spy.log").open("wb"),
    )
    bench.helpers.append(process)
    return process


# -- (t) tracing --------------------------------------------------------------------------------


def span_kinds(requests: Sequence[Any]) -> Counter[str]:
    """Spans of OTLP trace export requests by kind: the first word of their names
    (process, transition, send)."""
    return Counter(
        span.name.split(" ", 1)[0]
        for request in requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    )


@dataclass
class TracingResult:
    mode: str
    environment: dict[str, str]  # the worker's OTEL_* variables
    ratio: float  # the share of link events whose traceparent is sampled, as generated
    sampled: int  # link events whose traceparent is sampled
    engine: EngineResult
    spans: Counter[str]  # received over OTLP, by kind
    requests: int
    queue_full: bool  # the SDK's batch processor said it dropped spans


async def tracing_runs(
    bench: Bench,
    data: Inputs,
    args: argparse.Namespace,
    expected: tuple[dict[tuple[str, str], list[bytes]], Counter[str]] | None,
    profile_seconds: float,
) -> list[TracingResult]:
    """(t): the inputs of (b) with probes' traceparent headers, twice (sampled at
    ``--trace-ratio``, and all sampled); one exactly_once run per mode, ``--trace-repeat``
    times in turn."""
    ratio = args.trace_ratio
    inputs: dict[float, Inputs] = {}
    for name, share in (("t-in-ratio", ratio), ("t-in-all", 1.0)):
        settings = Settings.from_env(bench.env(name, data.topology_path))
        copy = dataclasses.replace(
            data, settings=settings, messages=0, link_messages=0, bytes=0, ends={}, sampled=0
        )
        elapsed = await publish_inputs(bench, copy, traced=share)
        note(
            f"(t) input with traceparent headers, {copy.sampled:,} of {data.probes:,} sampled: "
            f"published in {elapsed:.1f} s"
        )
        inputs[share] = copy
    # The tests' OTLP/HTTP receiver (tests/otlp.py), in this process.
    receiver = Receiver()
    results: list[TracingResult] = []
    with serve(receiver) as endpoint:
        exporting = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "none",
        }
        modes: list[tuple[str, str, float, dict[str, str]]] = [
            ("off", "t-off", ratio, {}),
            (
                f"parent-based {ratio:.0%}",
                "t-ratio",
                ratio,
                {
                    **exporting,
                    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": f"{ratio:g}",
                },
            ),
            ("100%", "t-all", 1.0, {**exporting, "OTEL_TRACES_SAMPLER": "parentbased_always_on"}),
        ]
        for repeat in range(args.trace_repeat):
            for mode, label, share, env in modes:
                with receiver.changed:
                    before = len(receiver.traces)
                engine = await engine_run(
                    bench,
                    inputs[share],
                    "exactly_once",
                    expected,
                    profile_seconds,
                    args.offsets_wait,
                    label=f"{label}{repeat or ''}",
                    extra_env=env,
                    own_otel=True,
                )
                with receiver.changed:  # the worker flushed its spans as it stopped
                    received = receiver.traces[before:]
                spans, requests = span_kinds(received), len(received)
                full = "Queue is full" in engine.log.read_text(errors="replace")
                results.append(
                    TracingResult(
                        mode, env, share, inputs[share].sampled, engine, spans, requests, full
                    )
                )
                note(
                    f"(t) {mode}: {data.probes / engine.to_outputs:,.0f} events/s, "
                    f"{sum(spans.values()):,} spans received"
                )
    return results


# -- the profile summary ----------------------------------------------------------------------

_IDLE: Final = ("EpollSelector.select", "select (selectors.py", "Condition.wait", "Event.wait")


def _frames(line: str) -> tuple[list[str], int]:
    stack, count = line.rstrip("\n").rsplit(" ", 1)
    return [f for f in stack.split(";") if f], int(count)


def _function(frame: str) -> tuple[str, str]:
    """``("Consumer.getmany", "faust/transport/consumer.py:739")`` of a py-spy frame."""
    if " (" in frame and frame.endswith(")"):
        name, where = frame[:-1].split(" (", 1)
        return name, where
    return frame, ""


def _task(frames: list[str]) -> str:
    """What a main-thread sample was running: the task or callback the event loop was in."""
    joined = ";".join(frames)
    for marker, label in (
        ("FailoverApp._stage1", "stage-1 agent (links)"),
        ("FailoverApp._stage2", "stage-2 agent (services)"),
        ("Consumer._drain_messages", "faust Consumer._drain_messages (fetch, deliver)"),
        ("Sender._sender_routine", "aiokafka producer Sender"),
        ("Sender._send_produce_req", "aiokafka producer Sender"),
        ("commit_transactions", "commit (faust commit timer)"),
        ("force_commit", "commit (faust commit timer)"),
    ):
        if marker in joined:
            return label
    runs = [i for i, frame in enumerate(frames) if frame.startswith("Handle._run")]
    if runs and runs[-1] + 1 < len(frames):
        return "other callback: " + _function(frames[runs[-1] + 1])[0]
    if frames[0].startswith("<module>"):
        return "event loop itself (_run_once, Handle._run)"
    return "unattributed (stack not unwound to its root)"


def summarize_profile(path: Path) -> list[str]:
    """Where the worker's time went, from py-spy's raw (collapsed) stacks, with --idle."""
    main: Counter[str] = Counter()  # busy main-thread samples by task
    stage1: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    leaf_line: dict[str, Counter[str]] = defaultdict(Counter)
    inclusive: Counter[str] = Counter()
    idle = {"main": 0, "thread": 0}
    busy = {"main": 0, "thread": 0}
    for raw in path.read_text().splitlines():
        if not raw.strip():
            continue
        frames, count = _frames(raw)
        if not frames:
            continue
        thread = "thread" if frames[0].startswith("Thread._bootstrap") else "main"
        if any(marker in frames[-1] for marker in _IDLE):
            idle[thread] += count
            continue
        busy[thread] += count
        name, where = _function(frames[-1])
        function = f"{name} ({where.rsplit(':', 1)[0]})"
        leaf[function] += count
        leaf_line[function][where] += count
        for frame in {f"{n} ({w.rsplit(':', 1)[0]})" for n, w in map(_function, frames)}:
            inclusive[frame] += count
        if thread == "thread":
            continue
        task = _task(frames)
        main[task] += count
        if task.startswith("stage-1"):
            joined = ";".join(frames)
            inner = joined.split("FailoverApp._stage1", 1)[1]
            if "LinkPartition.handle" in inner:
                stage1["engine: LinkPartition.handle (decode, link stage, state JSON)"] += count
            elif "Outbox.send" in inner:
                stage1["Outbox.send (faust Producer.send, aiokafka send)"] += count
            elif "Outbox.acquire" in inner or "FailoverApp._begin" in inner:
                stage1["Outbox lock, generation check"] += count
            elif "faust/" in inner:
                stage1["faust stream iteration (Stream.__anext__: events, ack)"] += count
            else:
                stage1["the agent's own loop body"] += count
    total = busy["main"] + busy["thread"]
    if total == 0:
        return ["  (no busy samples)"]

    def share(part: str) -> str:
        return f"{busy[part] / max(1, busy[part] + idle[part]):.0%}"

    out = [
        f"  {sum(busy.values()) + sum(idle.values()):,} samples at 100/s; busy: main thread "
        f"{share('main')} of the time, aiokafka consumer thread {share('thread')}",
        "  main thread, busy samples by task or callback:",
    ]
    out += [f"    {n / busy['main']:6.1%}  {task}" for task, n in main.most_common(10)]
    s1 = sum(stage1.values())
    if s1:
        out.append(f"  inside the stage-1 agent ({s1 / busy['main']:.0%} of the main thread):")
        out += [f"    {n / s1:6.1%}  {what}" for what, n in stage1.most_common()]
    out.append("  top functions by self time (% of busy samples, both threads), hottest line:")
    for function, n in leaf.most_common(15):
        line = leaf_line[function].most_common(1)[0][0]
        out.append(f"    {n / total:6.1%}  {function.split(' (')[0]}  {line}")
    out.append("  faust, aiokafka and mode functions by inclusive time (% of busy samples):")
    libraries = [
        (function, n)
        for function, n in inclusive.most_common()
        if any(lib in function for lib in ("faust/", "aiokafka/", "mode/"))
        and "execute_from_commandline" not in function  # the root of every main-thread stack
    ]
    out += [f"    {n / total:6.1%}  {function}" for function, n in libraries[:16]]
    return out


# -- (c) latency ----------------------------------------------------------------------------


@dataclass
class LatencyResult:
    rate: float
    achieved: float
    duration: float
    tick: float
    commit: float
    idle_cpu: float  # share of one core, ticker only, before the load
    load_cpu: float  # share of one core during the load
    input_lag_end: int  # link-status records not committed when the load ended
    settle: float
    override: list[float]  # seconds; missing ones are inf
    link: list[float]
    log: Path


def quantile(values: Sequence[float], q: float, settle: float) -> str:
    """A quantile, ``1,234 ms``; ``>30 s`` when it falls among the outputs that never came
    (the load's end plus ``settle`` seconds passed without them)."""
    value = pct(values, q)
    return f">{settle:.0f} s" if value == float("inf") else f"{value * 1000:,.0f} ms"


def latency_summary(values: Sequence[float], settle: float) -> str:
    got = [v for v in values if v != float("inf")]
    missing = len(values) - len(got)
    text = (
        f"n={len(values):<5,} p50 {quantile(values, 0.5, settle):>9}  p90 "
        f"{quantile(values, 0.9, settle):>9}  p99 {quantile(values, 0.99, settle):>9}  max "
        f"{max(got) * 1000 if got else 0:,.0f} ms"
    )
    if missing:
        text += f"\n{'':<32}({missing:,} had no command {settle:.0f} s after the load ended)"
    return text


async def latency_run(
    bench: Bench, args: argparse.Namespace, rate: float, tick: float, label: str
) -> LatencyResult:
    text, links = topology_yaml(args.sites)
    text = text.replace("policy: {degrade_after: 60s", "policy: {degrade_after: 2s")
    path = bench.out / "topology-latency.yaml"
    path.write_text(text)
    topology = Topology.parse(text, str(path))
    env = bench.env(
        label,
        path,
        FAILOVER_TICK_INTERVAL=str(tick),
        FAILOVER_PROCESSING_GUARANTEE=args.main_guarantee,
    )
    if args.commit_interval is not None:
        env["FAILOVER_COMMIT_INTERVAL"] = str(args.commit_interval)
    s = Settings.from_env(env)
    await bench.create(s)
    n = s.partitions
    outputs = bench.reader([s.topic_transitions, s.topic_commands])
    await outputs.start(n)
    worker = bench.start_worker(label, env)
    note(f"(c) {rate:,.0f}/s: worker pid {worker.pid}, waiting for ticks through both stages")
    changes = [TopicPartition(s.topic_changes, p) for p in range(n)]
    deadline = time.monotonic() + 90
    while True:
        if not worker.alive():
            raise RuntimeError(f"the worker exited:\n{worker.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"ticks did not reach stage 2:\n{worker.tail()}")
        committed = await bench.committed(s.app_id)
        if all(committed.get(tp, 0) > 0 for tp in changes):
            break
        await asyncio.sleep(0.2)
    cpu0, wall0 = worker.cpu_seconds(), time.monotonic()
    await asyncio.sleep(3)
    idle_cpu = (worker.cpu_seconds() - cpu0) / (time.monotonic() - wall0)
    await outputs.poll(0)

    # The plan: sites 0.. lose their fiber link, one a second (their services that need it
    # alone degrade 2 s later, at a tick); overrides go to services of other sites, each
    # once (force_manual applies from online or degraded only).
    sites = sorted(topology.sites)
    downs = [f"{site}.fiber" for site in sites[: int(args.duration)]]
    others = [
        sid
        for sid, svc in topology.services.items()
        if svc.site not in sites[: int(args.duration) + 1]
    ]
    random.Random(args.seed).shuffle(others)
    wanted = int(args.duration * 20)
    targets = others[:wanted]
    if len(targets) < wanted:
        note(f"(c) only {len(targets)} services for {wanted} overrides: --sites is small")
    order = [link.id for link in links]
    producer = AIOKafkaProducer(
        bootstrap_servers=bench.bootstrap, enable_idempotence=True, linger_ms=1
    )
    sent_at: dict[str, float] = {}
    down_at: dict[str, float] = {}
    futures: list[asyncio.Future[Any]] = []

    async def read_outputs() -> None:
        # Outputs are stamped on arrival by a reader of their own, so that nothing the load
        # loop does (or the bookkeeping after it: admin requests take a second) delays the
        # stamp: an earlier version read in the load loop, and the last overrides of every
        # run waited out that second, the whole p99.
        while True:
            await outputs.poll(10)

    reader = asyncio.create_task(read_outputs())
    try:
        await producer.start()
        loop = asyncio.get_running_loop()
        cpu0 = worker.cpu_seconds()
        began = loop.time()
        started_at = time.time()
        phases: list[tuple[float, str]] = []
        sent = overrides = downed = 0
        while (elapsed := loop.time() - began) < args.duration:
            now_us = time.time_ns() // 1000
            for _ in range(int(elapsed * rate) - sent):
                link = order[sent % len(order)]
                status, latency = ("down", None) if link in down_at else ("up", 20.0)
                raw = reading(link, f"probe/{link}/{bench.run}/{sent}", now_us, status, latency)
                key = link.encode()
                partition = partition_for(key, n)
                futures.append(
                    await producer.send(s.topic_link_status, raw, key=key, partition=partition)
                )
                sent += 1
            while overrides < min(len(targets), int(elapsed * 20)):
                service = targets[overrides]
                ident = f"override/{service}/{bench.run}"
                raw = override(service, ident, time.time_ns() // 1000)
                key = service.encode()
                sent_at[ident] = time.time()
                futures.append(
                    await producer.send(
                        s.topic_overrides, raw, key=key, partition=partition_for(key, n)
                    )
                )
                overrides += 1
            while downed < min(len(downs), int(elapsed)):
                down_at[downs[downed]] = time.time()
                downed += 1
            await asyncio.sleep(0.005)
        load_end = loop.time()
        phases.append((time.time(), "load ended"))
        load_cpu = (worker.cpu_seconds() - cpu0) / (load_end - began)
        # Only the pending ones: a gather of all 100,000 futures held this event loop, and
        # with it the reader's stamps, for half a second (the whole p99 of a run).
        for future in futures:
            if future.done():
                future.result()
        await asyncio.gather(*(future for future in futures if not future.done()))
        phases.append((time.time(), "every input acked"))
        links_tps = [TopicPartition(s.topic_link_status, p) for p in range(n)]
        ends = await end_offsets(bench.bootstrap, links_tps)
        committed = await bench.committed(s.app_id)
        phases.append((time.time(), "lag read"))
        lag = sum(ends[tp] - committed.get(tp, 0) for tp in links_tps)
        note(f"(c) {rate:,.0f}/s: load done, stage-1 input lag {lag:,}; waiting for outputs")
        # Services that need a downed link alone: each should degrade.
        affected = {
            sid
            for link in down_at
            for sid in topology.services_by_link[link]
            if [link] in [list(group) for group in topology.services[sid].requires]
        }
        settle = time.monotonic() + args.settle
        while time.monotonic() < settle:
            await asyncio.sleep(0.1)
            causes = set()
            degraded = set()
            for r in outputs.records:
                if r.topic == s.topic_transitions:
                    data = orjson.loads(r.value)["data"]
                    causes.add(data["cause"])
                    if data["to"] == "degraded":
                        degraded.add(data["service"])
            if set(sent_at) <= causes and affected <= degraded:
                break
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await producer.stop()
        await outputs.stop()
        await bench.stop_worker(worker)

    # An override: from its send to the first command of its incident. A link down: from
    # the tick that completed degrade_after (the transition's event time, the ticker's wall
    # clock) to the first command of that incident. Arrival: when a read_committed getmany
    # in this process returned it. Missing: inf.
    first_command: dict[tuple[str, str], float] = {}
    transitions: list[dict[str, Any]] = []
    for r in outputs.records:
        event = orjson.loads(r.value)
        if r.topic == s.topic_commands:
            data = event["data"]
            first_command.setdefault((data["service"], data["incident"]), r.arrived)
        else:
            transitions.append(event)
    inf = float("inf")
    by_override = dict.fromkeys(sent_at, inf)
    by_link = dict.fromkeys(affected, inf)
    link_from: dict[str, float] = {}
    for event in transitions:
        data = event["data"]
        command = first_command.get((data["service"], data["incident"]))
        if command is None:
            continue
        if data["cause"] in sent_at:
            by_override[data["cause"]] = command - sent_at[data["cause"]]
        elif data["service"] in affected and data["to"] == "degraded":
            assert data["cause"].startswith("tick/"), data["cause"]
            by_link[data["service"]] = command - parse_time(event["time"]) / SECOND
            link_from[data["service"]] = parse_time(event["time"]) / SECOND
    # Every sample, by when it began, for looking at where the tail falls in the run.
    samples = bench.out / f"latency-{label}.tsv"
    with samples.open("w") as f:
        f.write("kind\tbegan_s\tlatency_ms\n")
        for ident, value in by_override.items():
            f.write(f"override\t{sent_at[ident] - started_at:.3f}\t{value * 1000:.1f}\n")
        for service, value in by_link.items():
            at = link_from.get(service)
            shown = "" if at is None else f"{at - started_at:.3f}"
            f.write(f"link\t{shown}\t{value * 1000:.1f}\n")
        for moment, what in phases:
            f.write(f"phase\t{moment - started_at:.3f}\t{what}\n")
    return LatencyResult(
        rate,
        sent / args.duration,
        args.duration,
        tick,
        s.commit_interval,
        idle_cpu,
        load_cpu,
        lag,
        args.settle,
        list(by_override.values()),
        list(by_link.values()),
        worker.log,
    )


# -- (d) restore ----------------------------------------------------------------------------


class DictTable:
    """A partition's table, as a dict: what the worker keeps in its store."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.data[key] = value


@dataclass
class RestoreResult:
    services: int
    links: int
    changelog_records: int
    changelog_bytes: int
    states: Counter[str]
    simulate: float
    total: float
    marks: list[tuple[str, float]]
    rss_mb: float
    log: Path


def simulate_tables(
    topology: Topology, settings: Settings, t0: int, forced: set[str]
) -> tuple[list[DictTable], list[DictTable], Counter[str]]:
    """Run the worker's two stages, partition by partition, over: a tick; a degraded then an
    up reading of every link (every service gets two health changes); ``force_manual`` for
    ``forced``; a tick that applies it all. Returns the tables they wrote."""
    routing = Routing(settings)
    n = settings.partitions
    links_tables = [DictTable() for _ in range(n)]
    service_tables = [DictTable() for _ in range(n)]
    stage1 = [LinkPartition(topology, routing, p, links_tables[p]) for p in range(n)]
    stage2 = [ServicePartition(topology, routing, q, service_tables[q]) for q in range(n)]
    offsets = itertools.count()
    outputs: Counter[str] = Counter()

    def forward(records: list[Record]) -> None:
        for r in records:
            if r.topic == settings.topic_changes:
                origin = Origin(r.topic, r.partition, next(offsets))
                outputs.update(
                    r.topic for r in stage2[r.partition].handle_change(r.value, r.key, origin)
                )

    def tick(micros: int) -> None:
        _, raw = tick_event(micros)
        key = TICK_KEY.encode()
        for p in range(n):
            forward(stage1[p].handle(raw, key, Origin(settings.topic_link_status, p, 0)))
        for q in range(n):
            for source in (OVERRIDES_SOURCE, FEEDBACK_SOURCE):
                origin = Origin(settings.topic_overrides, q, 0)
                outputs.update(r.topic for r in stage2[q].handle_input(source, raw, key, origin))

    tick(t0)
    for status, at in (("degraded", t0 + SECOND), ("up", t0 + 5 * SECOND)):
        for link in topology.links:
            p = partition_for(link, n)
            raw = reading(link, f"probe/{link}/{at}", at, status, 1500.0 if status != "up" else 20)
            forward(stage1[p].handle(raw, link.encode(), Origin(settings.topic_link_status, p, 0)))
    for service in sorted(forced):
        q = partition_for(service, n)
        raw = override(service, f"override/{service}/restore", t0 + 6 * SECOND)
        origin = Origin(settings.topic_overrides, q, 0)
        outputs.update(
            r.topic for r in stage2[q].handle_input(OVERRIDES_SOURCE, raw, service.encode(), origin)
        )
    tick(t0 + 10 * SECOND)
    states: Counter[str] = Counter()
    for q in range(n):
        for sid in stage2[q].services:
            raw_state = service_tables[q].get(sid)
            states[orjson.loads(raw_state)[0] if raw_state else "(no state)"] += 1
    return links_tables, service_tables, states


async def restore_run(bench: Bench, args: argparse.Namespace) -> RestoreResult:
    began = time.perf_counter()
    check_document()
    # As JSON (which YAML includes): the form a deployment this large keeps its topology in,
    # read by orjson in 0.1 s where libyaml takes 21 s (workflows/topology.py).
    document = topology_document(args.restore_sites)
    path = bench.out / "topology-restore.json"
    path.write_bytes(orjson.dumps(document))
    topology = Topology.from_document(document, str(path))
    env = bench.env(
        "d", path, FAILOVER_TICK_INTERVAL="0", FAILOVER_PROCESSING_GUARANTEE=args.main_guarantee
    )
    s = Settings.from_env(env)
    n = s.partitions
    rng = random.Random(args.seed)
    services = sorted(topology.services)
    forced = set(rng.sample(services, len(services) // 100))
    probe = next(sid for sid in services[len(services) // 2 :] if sid not in forced)
    t0 = START * SECOND
    note(
        f"(d) running both stages in-process over {len(topology.links):,} links, "
        f"{len(services):,} services"
    )
    links_tables, service_tables, states = simulate_tables(topology, s, t0, forced)
    simulate = time.perf_counter() - began
    missing = states.get("(no state)", 0)
    assert missing == 0, f"{missing} services have no state"
    link_changelog = f"{s.app_id}-link-health-changelog"
    service_changelog = f"{s.app_id}-service-state-changelog"
    compact = ("cleanup.policy", "compact")
    await bench.create(
        s,
        [
            TopicSpec(link_changelog, n, (compact,)),
            TopicSpec(
                service_changelog, n, (compact, ("max.message.bytes", str(INPUT_MAX_MESSAGE_BYTES)))
            ),
        ],
    )
    records = [
        (topic, key.encode(), value, p)
        for topic, tables in ((link_changelog, links_tables), (service_changelog, service_tables))
        for p, table in enumerate(tables)
        for key, value in table.data.items()
    ]
    await publish(bench.bootstrap, records)
    # The new input, waiting when the worker starts: an override, and the tick that applies it.
    _, tick = tick_event(t0 + 30 * SECOND)
    new = [override(probe, f"override/{probe}/{bench.run}", t0 + 20 * SECOND), tick]
    await publish(bench.bootstrap, [m for raw in new for m in route(s, raw)])
    outputs = bench.reader([s.topic_commands])
    await outputs.start(n)
    note(f"(d) {len(records):,} changelog records written; starting a fresh worker")
    worker = bench.start_worker("d", env)
    try:
        deadline = time.monotonic() + 600
        done: float | None = None
        while done is None:
            if not worker.alive():
                raise RuntimeError(f"the worker exited:\n{worker.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no command in time:\n{worker.tail()}")
            for r in await outputs.poll(100):
                if r.key == probe.encode():
                    done = r.arrived
                    break
        rss = worker.rss_mb()
        marks: list[tuple[str, float]] = []
        for label, marker in (
            ("first log line: imports, topology parsed, app built", "] ["),
            ("group joined, partitions assigned", "Joined group"),
            ("restoring tables from changelogs", "Restoring state from changelog"),
            ("changelogs read", "Done reading from changelog"),
            ("faust: Worker ready (streams resumed)", "Worker ready"),
        ):
            at = worker.log_time(marker)
            if at is not None:
                marks.append((label, at - worker.spawned))
        marks.append(
            ("the override's first command at a read_committed consumer", done - worker.spawned)
        )
    finally:
        await outputs.stop()
        await bench.stop_worker(worker)
    return RestoreResult(
        len(services),
        len(topology.links),
        len(records),
        sum(len(r[2]) + len(r[1]) for r in records),
        states,
        simulate,
        done - worker.spawned,
        marks,
        rss,
        worker.log,
    )


# -- report ---------------------------------------------------------------------------------


def kafka_up() -> str:
    started = subprocess.run(
        [str(ROOT / "infra" / "kafka" / "up")], capture_output=True, text=True, check=False
    )
    if started.returncode != 0:
        raise SystemExit(f"infra/kafka/up failed:\n{started.stdout}\n{started.stderr}")
    return started.stdout.strip().splitlines()[-1]


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>10,.0f}"


async def run(args: argparse.Namespace, out: Any) -> int:
    skip = set(args.skip)
    bootstrap = args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or kafka_up()
    outdir = Path(args.out or tempfile.mkdtemp(prefix="failover-bench-"))
    outdir.mkdir(parents=True, exist_ok=True)
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}"
        for name in ("faust-streaming", "aiokafka", "mode-streaming", "orjson")
    )
    out(f"python {sys.version.split()[0]}, {versions}; broker {bootstrap}; {os.cpu_count()} cores")
    out(f"worker logs and profiles: {outdir}")
    began = time.perf_counter()
    bench = Bench(bootstrap, outdir, args.partitions, dict(args.worker_env))
    if args.worker_env:
        out("worker environment added: " + " ".join(f"{k}={v}" for k, v in args.worker_env))
    await bench.admin.start()
    task = asyncio.current_task()
    if task is not None:  # SIGTERM like Ctrl-C: cancel, and clean up on the way out
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        data = make_inputs(bench, args)
        topology = data.topology
        out(
            f"(a)(b) topology: {len(topology.sites):,} sites, {len(topology.links):,} links, "
            f"{len(topology.services):,} services (bench/core.py's generator), "
            f"{args.partitions} partitions"
        )
        out(
            f"(a)(b) input: {data.probes:,} link.status.v1 + {data.ticks:,} clock.tick.v1 + "
            f"{len(data.sentinels)} sentinel overrides; {data.seconds / 3600:.1f} h of event "
            f"time, {data.spells} link spells"
        )
        need_b = "b" not in skip
        need_t = "tracing" not in skip
        expected = None
        if need_b or need_t:
            wall = time.perf_counter()
            expected = expected_outputs(topology, data.lines)
            note(f"pure core over the same input: {time.perf_counter() - wall:.1f} s")
        if "a" not in skip or need_b:
            elapsed = await publish_inputs(bench, data)
            out(
                f"(a)(b) on Kafka: {data.messages:,} messages (ticks copied to every partition of "
                f"the 3 inputs), {data.link_messages:,} in link-status, "
                f"{data.bytes / data.link_messages:.0f} B each on average; published in "
                f"{elapsed:.1f} s"
            )
        misrouted = data
        if need_b and args.misroute:
            input_env = bench.env("input-misrouted", data.topology_path)
            misrouted = dataclasses.replace(
                data, settings=Settings.from_env(input_env), ends={}, sampled=0, misrouted=0
            )
            await publish_inputs(bench, misrouted, misroute=args.misroute)
            out(
                f"(b) misrouted input: {misrouted.misrouted:,} of {data.probes:,} link.status.v1 "
                f"on the partition after their link's (--misroute {args.misroute:g})"
            )
        ceilings: list[tuple[float, float]] = []
        ceilings_n: list[tuple[float, float]] = []  # in args.workers processes
        engines: list[EngineResult] = []
        # The ceiling before, between and after the engine runs: the best of them counts.
        for guarantee in [None, *(args.guarantees if need_b else [])]:
            if guarantee is not None and args.baseline:
                # The same (b) run with the code of another checkout, side by side.
                short = "eos" if guarantee == "exactly_once" else "alo"
                result = await engine_run(
                    bench,
                    data,
                    guarantee,
                    expected,
                    0,
                    args.offsets_wait,
                    label=f"b-{short}-baseline",
                    extra_env={"PYTHONPATH": args.baseline},
                    workers=args.workers,
                )
                engines.append(
                    dataclasses.replace(result, guarantee=f"{result.guarantee}, baseline")
                )
            if guarantee is not None and args.misroute:
                # The same (b) run over inputs with --misroute of the readings elsewhere.
                short = "eos" if guarantee == "exactly_once" else "alo"
                result = await engine_run(
                    bench,
                    misrouted,
                    guarantee,
                    expected,
                    0,
                    args.offsets_wait,
                    label=f"b-{short}-misrouted",
                    workers=args.workers,
                )
                engines.append(
                    dataclasses.replace(
                        result,
                        guarantee=f"{result.guarantee}, {args.misroute:.0%} on a wrong partition",
                    )
                )
            if guarantee is not None:
                profile = args.profile_seconds if "profile" not in skip else 0
                engines.append(
                    await engine_run(
                        bench,
                        data,
                        guarantee,
                        expected,
                        profile,
                        args.offsets_wait,
                        workers=args.workers,
                    )
                )
            for _ in range(0 if "a" in skip else 2):
                ceilings.append(await ceiling(bench, data))
                note(f"(a) ceiling: {data.probes / ceilings[-1][0]:,.0f} events/s")
                if args.workers > 1:
                    # Like against like: N engine processes against N reading processes.
                    ceilings_n.append(await ceiling_processes(bench, data, args.workers))
                    note(
                        f"(a) ceiling, {args.workers} processes: "
                        f"{data.probes / ceilings_n[-1][0]:,.0f} events/s"
                    )
        tracings: list[TracingResult] = []
        if need_t:
            profile = args.profile_seconds if "profile" not in skip else 0
            tracings = await tracing_runs(bench, data, args, expected, profile)
        latencies: list[LatencyResult] = []
        if "c" not in skip:
            for number, (value, tick) in enumerate(args.load):
                latencies.append(await latency_run(bench, args, value, tick, f"c{number}"))
        restore = await restore_run(bench, args) if "d" not in skip else None
    finally:
        try:
            await bench.cleanup()
        finally:
            await bench.admin.close()

    # ---- the table
    n = data.probes
    out("")
    versus = "vs (a)" if ceilings or engines else "vs off"
    out(f"{'':<58}{'events/s':>10}  {versus:>7}  target")
    out("-" * 92)
    best: float | None = None
    if ceilings:
        best = min(c[0] for c in ceilings)
        runs = ", ".join(f"{n / c[0]:,.0f}" for c in ceilings)
        out(
            f"{'(a) ceiling: getmany(10000) + orjson.loads, link-status':<58}{rate(n, best)}"
            f"  {'100%':>7}  (best of {len(ceilings)}: {runs})"
        )
        cpu_ceiling = min(c[1] for c in ceilings) / n
    # With --workers N, (b) is judged against the ceiling in N processes: like against like.
    against = best
    if ceilings_n and best:
        against = min(c[0] for c in ceilings_n)
        runs = ", ".join(f"{n / c[0]:,.0f}" for c in ceilings_n)
        out(
            f"{f'(a) ceiling in {args.workers} processes, partitions dealt out':<58}"
            f"{rate(n, against)}  {best / against:>7.0%}  (best of {len(ceilings_n)}: {runs})"
        )
    for e in engines:
        tag = "EOS" if e.guarantee.startswith("exactly_once") else "ALO"
        ratio = f"{against / e.to_outputs:.1%}" if against else "-"
        met = ("met" if against / e.to_outputs >= 0.5 else "NOT met") if against else ""
        also = (
            f" ({best / e.to_outputs:.1%} of the 1-process (a))" if best and against != best else ""
        )
        out(
            f"{f'(b) engine {e.guarantee}: ready -> last output committed':<58}"
            f"{rate(n, e.to_outputs)}  {ratio:>7}  >= 50%: {met}{also}"
        )
        if e.to_offsets is not None:
            ratio = f"{against / e.to_offsets:.1%}" if against else "-"
            out(
                f"{f'    {tag}: ready -> every offset committed (inputs, changes)':<58}"
                f"{rate(n, e.to_offsets)}  {ratio:>7}"
            )
        else:
            out(
                f"    {tag}: ready -> every offset committed: NOT reached "
                f"{args.offsets_wait:.0f} s after the last output ({e.offsets_lag:,} "
                "records not committed)"
            )
    off = [t.engine.to_outputs for t in tracings if not t.environment]
    for t in tracings:
        e = t.engine
        spans = sum(t.spans.values())
        share = f"{min(off) / e.to_outputs:.1%}" if off else "-"
        out(
            f"{f'(t) engine exactly_once, tracing {t.mode}':<58}{rate(n, e.to_outputs)}"
            f"  {share:>7}  of off; {spans:,} spans exported; "
            f"{e.worker_cpu / n * 1e6:.0f} µs CPU/event"
        )
    sampled = [t.engine for t in tracings if t.environment and t.ratio < 1]
    if off and sampled:
        # Best against best, as for (a): the runs alternate, and the best of each is the one
        # the shared machine disturbed least.
        best = min(e.to_outputs for e in sampled)
        cost = 1 - min(off) / best
        by_cpu = 1 - min(t.engine.worker_cpu for t in tracings if not t.environment) / min(
            e.worker_cpu for e in sampled
        )
        out(
            f"{'(t) cost of parent-based sampling, best run against best off':<58}"
            f"{cost:>8.1%}  by CPU {by_cpu:.1%}  cost <= 15%: "
            f"{'met' if cost <= 0.15 else 'NOT met'}"
        )
    for c in latencies:
        for what, values in (("override", c.override), ("link down", c.link)):
            if values:
                p99 = pct(values, 0.99)
                out(
                    f"{f'(c) {what} -> first command, {c.achieved:,.0f}/s offered':<58}"
                    f"p50 {quantile(values, 0.5, c.settle)}, p99 "
                    f"{quantile(values, 0.99, c.settle)}   p99 <= 100 ms: "
                    f"{'met' if p99 <= 0.1 else 'NOT met'}"
                )
    if restore is not None:
        out(
            f"(d) restore {restore.services:,} services: process start -> first command of a "
            f"new input: {restore.total:.1f} s  target <= 10 s: "
            f"{'met' if restore.total <= 10 else 'NOT met'}"
        )
    out("-" * 92)

    # ---- details
    for e in engines:
        out(
            f"(b) {e.guarantee}: process start -> 'Worker ready' {e.startup:.1f} s; ready -> "
            f"last output {e.to_outputs:.1f} s; worker CPU {e.worker_cpu:.1f} s "
            f"({e.worker_cpu / n * 1e6:.0f} µs per event)"
            + (f", broker CPU {e.broker_cpu:.1f} s" if e.broker_cpu is not None else "")
        )
        if ceilings:
            out(
                f"    by CPU time: ceiling {cpu_ceiling * 1e6:.1f} µs per event (bench process), "
                f"worker {e.worker_cpu / n * 1e6:.0f} µs: {cpu_ceiling * n / e.worker_cpu:.1%}"
            )
        if e.guarantee.startswith("exactly_once") and (e.to_offsets or 1e9) > e.to_outputs + 5:
            out(
                "    EOS offsets trail the work: the changes topic is written in transactions, "
                "and faust 0.15.3's\n    Consumer._new_offset commits past one transaction "
                "marker per commit (Consumer._add_gap's\n    gap includes the record after "
                "it: a duplicate in _acked ends consecutive_numbers' run)"
            )
        out("    outputs: " + ", ".join(f"{k} {v:,}" for k, v in sorted(e.outputs.items())))
        out(f"    {e.parity}")
    for t in tracings:
        e = t.engine
        env = " ".join(f"{k}={v}" for k, v in t.environment.items() if "ENDPOINT" not in k)
        out(
            f"(t) {t.mode}: {env or 'no OTEL_* variables'}; input: {t.sampled:,} of {n:,} link "
            f"events with a sampled traceparent ({t.ratio:.0%} generated)"
        )
        out(
            f"    ready -> last output {e.to_outputs:.1f} s, every offset "
            + (f"{e.to_offsets:.1f} s" if e.to_offsets is not None else "NOT reached")
            + f"; worker CPU {e.worker_cpu:.1f} s ({e.worker_cpu / n * 1e6:.0f} µs per event)"
        )
        if t.environment:
            kinds = ", ".join(f"{k} {v:,}" for k, v in t.spans.most_common())
            out(
                f"    spans received over OTLP/HTTP: {sum(t.spans.values()):,} in {t.requests:,} "
                f"requests ({kinds or 'none'})"
                + ("; the SDK's span queue was full: spans were dropped" if t.queue_full else "")
            )
        out(f"    {e.parity}")
    for c in latencies:
        out(
            f"(c) offered {c.rate:,.0f} link events/s for {c.duration:.0f} s (achieved "
            f"{c.achieved:,.0f}/s) + 20 overrides/s + a link down each second; "
            f"FAILOVER_TICK_INTERVAL={c.tick:g}, FAILOVER_COMMIT_INTERVAL={c.commit:g}, "
            f"{args.main_guarantee}"
        )
        out(
            f"    worker: {c.idle_cpu:.0%} of a core with the ticker alone, {c.load_cpu:.0%} "
            f"under the load; link-status records not yet committed when the load ended: "
            f"{c.input_lag_end:,}"
        )
        out(f"    override -> first command   {latency_summary(c.override, c.settle)}")
        out(f"    link down -> first command  {latency_summary(c.link, c.settle)}")
    if restore is not None:
        r = restore
        out(
            f"(d) {r.services:,} services, {r.links:,} links: {r.changelog_records:,} changelog "
            f"records ({r.changelog_bytes / 1e6:.1f} MB) written by the worker's own stage code "
            f"in {r.simulate:.0f} s; states: "
            + ", ".join(f"{k} {v:,}" for k, v in r.states.most_common())
        )
        for label, at in r.marks:
            out(f"    {at:6.1f} s  {label}")
        out(f"    worker peak RSS {r.rss_mb:,.0f} MB")
        per = data.parse_seconds / len(data.topology.services)
        out(
            f"    for scale, had it been YAML: Topology.parse took "
            f"{data.parse_seconds:.1f} s here for the {len(data.topology.services):,} services "
            f"of (a)(b): {per * r.services:.0f} s at this size if linear"
        )
    for t in tracings:
        if t.engine.profile is not None:
            out(f"profile of the (t) {t.mode} worker (py-spy raw, {t.engine.profile}):")
            for line in summarize_profile(t.engine.profile):
                out(line)
    for e in engines:
        if e.profile is not None:
            out(
                f"profile of the (b) {e.guarantee} worker ({args.profile_seconds:.0f} s from 3 s "
                f"after ready; py-spy raw, {e.profile}):"
            )
            for line in summarize_profile(e.profile):
                out(line)
    out(f"\ntotal wall time {time.perf_counter() - began:.0f} s")
    return 0


def loads(text: str) -> list[tuple[float, float]]:
    """``5000@0.05,200`` -> [(5000.0, 0.05), (200.0, 0.05)]: rate @ tick interval."""
    out: list[tuple[float, float]] = []
    for item in text.split(","):
        rate_text, _, tick_text = item.partition("@")
        out.append((float(rate_text), float(tick_text) if tick_text else 0.05))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["--ceiling-child"]:  # a process of ceiling_processes
        bootstrap, topic, partitions = raw[1:4]
        asyncio.run(ceiling_child(bootstrap, topic, [int(p) for p in partitions.split(",")]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=200_000, help="(a)(b) link events")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of every topic")
    parser.add_argument("--sites", type=int, default=100, help="(a)(b)(c) sites, 10 services each")
    parser.add_argument(
        "--skip",
        type=lambda v: [p for p in v.split(",") if p],
        default=[],
        help=f"parts to skip, comma-separated: {','.join(PARTS)}",
    )
    parser.add_argument(
        "--guarantee",
        choices=("both", *GUARANTEES),
        default="both",
        help="(b) rows; (c) and (d) use exactly_once unless only at_least_once",
    )
    parser.add_argument(
        "--load",
        type=loads,
        default=loads("5000@0.05,200@0.25"),
        help="(c) runs, comma-separated: offered link events/s @ FAILOVER_TICK_INTERVAL",
    )
    parser.add_argument("--duration", type=float, default=30.0, help="(c) seconds of load")
    parser.add_argument(
        "--settle", type=float, default=30.0, help="(c) seconds to wait for outputs after the load"
    )
    parser.add_argument(
        "--commit-interval",
        type=float,
        default=None,
        help="(c) FAILOVER_COMMIT_INTERVAL (default: the worker's, 0.5)",
    )
    parser.add_argument(
        "--restore-sites", type=int, default=10_000, help="(d) sites (x10 services)"
    )
    parser.add_argument("--profile-seconds", type=float, default=20.0, help="py-spy window in (b)")
    parser.add_argument(
        "--offsets-wait",
        type=float,
        default=30.0,
        help="(b) seconds to wait for committed offsets after the last output",
    )
    parser.add_argument(
        "--worker-env",
        type=lambda v: tuple(v.split("=", 1)),
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of every worker (a faust setting as FAILOVER_FAUST_<NAME>, "
        "e.g. FAILOVER_FAUST_PRODUCER_LINGER=0.005); repeatable",
    )
    parser.add_argument(
        "--trace-ratio",
        type=float,
        default=0.01,
        help="(t) share of probes' traces sampled, and the engine's parent-based ratio",
    )
    parser.add_argument(
        "--trace-repeat", type=int, default=1, help="(t) runs of each mode, in turn"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="(b) workers in the group (one per core, say)"
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="DIR",
        help="(b) also run each guarantee with the code of the checkout DIR (its streams/ and "
        "workflows/ first on the worker's PYTHONPATH), e.g. a git worktree of an older commit",
    )
    parser.add_argument(
        "--misroute",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="(b) also run each guarantee over inputs with the readings of this share of the "
        "links on a partition that is not theirs (forwarded by the engine), e.g. 0.1",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bootstrap", default=None, help="broker (default: infra/kafka/up)")
    parser.add_argument("--out", default=None, help="directory for worker logs and profiles")
    args = parser.parse_args(argv)
    unknown = set(args.skip) - set(PARTS)
    if unknown:
        parser.error(f"--skip: unknown part(s) {', '.join(sorted(unknown))}")
    args.guarantees = list(GUARANTEES) if args.guarantee == "both" else [args.guarantee]
    args.main_guarantee = args.guarantees[0]
    print("$ " + shlex.join(sys.orig_argv), flush=True)
    # aiokafka warns about every retried request while new topics get their leaders.
    # (ListOffsets before a new topic's leaders are known: retried, harmless).
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    def out(text: str) -> None:
        print(text, flush=True)

    try:
        return asyncio.run(run(args, out))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: workers stopped, topics deleted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
