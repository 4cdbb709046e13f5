"""What every experiment of bench/kafka.py shares: the run (its topics, its workers, their
cleanup), reading outputs, and the inputs (the topology, the events, publishing them)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import nacl.signing
import orjson
import yaml
from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaConsumer,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

from bench.core import SERVICES, START, make_stream, topology_yaml
from harness.broker import Message, isolated_env, publish, signed
from harness.broker import route as line_route
from streams.codec import tick_event
from streams.config import Settings
from streams.security import VARIABLES as SECURITY_VARIABLES
from streams.security import KafkaSecurity
from streams.topics import TopicSpec, ensure_topics, partition_for, topic_specs
from workflows.engine import TICK_KEY
from workflows.operators import sign_override
from workflows.timeutil import format_time
from workflows.topology import Topology

ROOT: Final = Path(__file__).resolve().parents[2]


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


def broker_pid(data_dir: Path | None = None) -> int | None:
    """The pid of the broker infra/kafka/up started in ``data_dir`` (by default
    ``KAFKA_DATA_DIR``'s), to report its CPU time (or None)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    data = data_dir or Path(os.environ.get("KAFKA_DATA_DIR") or Path(cache) / "failover-kafka")
    with contextlib.suppress(OSError, ValueError):
        return int((data / "broker.pid").read_text().split()[0])
    return None


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=VALUE`` lines of a file such as the ``client.env`` that ``infra/kafka/up
    --secure`` writes (blank lines, ``#`` comments, ``export`` and quotes allowed).

    Raises:
        SystemExit: the file cannot be read, or a line is not ``NAME=VALUE`` (the message
            names the line's number, never its value).
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise SystemExit(f"{path}: cannot read it: {exc.strerror}") from None
    env: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise SystemExit(f"{path}, line {number}: not NAME=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[name] = value
    return env


class Bench:
    """What one run of the benchmark created on one broker, so that it can all be undone.

    ``security`` holds the ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*`` and ``KAFKA_SSL_*``
    variables of this broker (by default this process's): every client of the bench (admin,
    producers, readers, the ceiling's processes) and every worker it starts connect with
    them, and with no other security variable of this process's environment."""

    def __init__(
        self,
        bootstrap: str,
        out: Path,
        partitions: int,
        extra_env: dict[str, str] | None = None,
        *,
        security: Mapping[str, str] | None = None,
        broker_data: Path | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.out = out
        self.partitions = partitions
        self.extra_env = extra_env or {}
        source = os.environ if security is None else security
        self.security_env = {v: source[v] for v in SECURITY_VARIABLES if source.get(v)}
        self.security = KafkaSecurity.from_env(self.security_env)
        self.broker_data = broker_data
        self.run = uuid.uuid4().hex[:8]
        self.topics: set[str] = set()
        self.workers: list[Worker] = []
        self.helpers: list[subprocess.Popen[bytes]] = []
        self.readers: list[Outputs] = []
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **self.client_options())
        self.failover = self._failover_command()

    def client_options(self) -> dict[str, Any]:
        """aiokafka's connection arguments for this broker (a new TLS context each call)."""
        return self.security.client_options()

    def process_env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """A child process's environment: this process's, without its security variables,
        then this broker's, then ``env``."""
        inherited = {k: v for k, v in os.environ.items() if k not in SECURITY_VARIABLES}
        return {**inherited, **self.security_env, **(env or {})}

    def broker_pid(self) -> int | None:
        return broker_pid(self.broker_data)

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
        for variable in SECURITY_VARIABLES:  # this broker's, not this process's
            env.pop(variable, None)
        env.update(self.security_env)
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
        await ensure_topics(
            settings.bootstrap_servers, specs, settings.replication, security=settings.security
        )

    def start_worker(self, label: str, env: dict[str, str], *, own_otel: bool = False) -> Worker:
        """Start ``failover worker``; with ``own_otel``, the ``OTEL_*`` variables are those of
        ``env`` alone (none inherited from this process)."""
        log = self.out / f"worker-{label}.log"
        inherited = {
            k: v
            for k, v in self.process_env(env).items()
            if not (own_otel and k.startswith("OTEL_") and k not in env)
        }
        with log.open("wb") as handle:
            spawned = time.time()
            process = subprocess.Popen(
                self.failover,
                env={**inherited, "PYTHONUNBUFFERED": "1"},
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
        reader = Outputs(self.bootstrap, topics, self.client_options())
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


async def end_offsets(
    bootstrap: str, tps: list[TopicPartition], options: Mapping[str, Any] | None = None
) -> dict[TopicPartition, int]:
    """The end offset of each partition; ``options``: aiokafka's connection arguments."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **(options or {}))
    try:
        await consumer.start()
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def after_last_record(
    bootstrap: str, tps: list[TopicPartition], options: Mapping[str, Any] | None = None
) -> dict[TopicPartition, int]:
    """The offset after the last record of each partition, read_committed: a topic written
    in transactions ends with commit markers, which no consumer sees and none commits."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        **(options or {}),
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

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        options: Mapping[str, Any] | None = None,
    ) -> None:
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
            **(options or {}),
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
    misrouted_overrides: int = 0  # (b) --misroute: sentinels on a partition not their service's


def route(settings: Settings, raw: bytes) -> list[tuple[str, bytes, bytes, int]]:
    """Where an input line goes on Kafka (as the engine's producers must send it)."""
    raw = signed(raw)  # a tick with the workers' tick key (isolated_env), as their ticker does
    return [(topic, key, raw, p) for topic, key, p in line_route(settings, raw)]


#: The operator the bench's overrides come from, granted ``force_manual`` on every site. Its
#: key is derived from a public text, as the demo operators' are: for benchmarks only.
BENCH_OPERATOR: Final = "bench"
_BENCH_KEY: Final = nacl.signing.SigningKey(hashlib.sha256(b"failover bench key").digest())


def bench_operator(sites: int) -> dict[str, Any]:
    """The topology's ``operators`` section for bench/core.py's generated ``sites`` sites: an
    override is refused unless an operator signed it and holds a grant for its site."""
    return {
        BENCH_OPERATOR: {
            "name": "Benchmark",
            "role": "on-call",
            "keys": {"bench": base64.b64encode(bytes(_BENCH_KEY.verify_key)).decode()},
            "grants": [
                {"actions": ["force_manual"], "sites": [f"site-{i:04d}" for i in range(sites)]}
            ],
        }
    }


def with_bench_operator(text: str, sites: int) -> str:
    """bench/core.py's topology ``text`` with :func:`bench_operator` added."""
    return text + yaml.safe_dump({"operators": bench_operator(sites)}, sort_keys=False)


def override(service: str, ident: str, micros: int) -> bytes:
    """A ``force_manual`` of ``service``, signed by :data:`BENCH_OPERATOR`."""
    event = {
        "specversion": "1.0",
        "id": ident,
        "source": "/bench/operator",
        "type": "operator.override.v1",
        "time": format_time(micros),
        "subject": service,
        "data": {
            "action": "force_manual",
            "actor": BENCH_OPERATOR,
            "role": "on-call",
            "reason": "benchmark",
        },
    }
    return orjson.dumps(sign_override(event, f"{BENCH_OPERATOR}/bench", _BENCH_KEY))


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
    text = with_bench_operator(text, args.sites)
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
    to the partition after its link's (murmur2), and every sentinel override to the partition
    after its service's: the engine forwards them."""
    s = data.settings
    specs = [
        spec
        for spec in topic_specs(s)
        if spec.name in (s.topic_link_status, s.topic_overrides, s.topic_feedback)
    ]
    bench.topics.update(spec.name for spec in specs)
    await ensure_topics(s.bootstrap_servers, specs, s.replication, security=s.security)
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
        elif misroute and routed[0][0] == s.topic_overrides and routed[0][1] != tick_key:
            [(topic, key, value, partition)] = routed
            data.misrouted_overrides += 1
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
    # route signed the ticks
    await publish(bench.bootstrap, messages, sign=False, security=bench.security)
    elapsed = time.perf_counter() - began
    tps = [
        TopicPartition(t, p)
        for t in (s.topic_link_status, s.topic_overrides, s.topic_feedback)
        for p in range(s.partitions)
    ]
    data.ends = await end_offsets(bench.bootstrap, tps, bench.client_options())
    assert sum(data.ends.values()) == data.messages
    return elapsed
