"""(b) The engine over the input topics, input to committed output, checked against the pure
core, with a py-spy profile of each worker (see bench/kafka.py)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import (  # type: ignore[import-untyped]
    TopicPartition,
)

from bench.kafkabench.common import (
    Bench,
    Inputs,
    Output,
    Worker,
    after_last_record,
    cpu_seconds,
    note,
)
from streams.config import Settings
from workflows.engine import Engine
from workflows.records import AUDIT, COMMANDS, TRANSITIONS, DeadLetter, Emitted
from workflows.topology import Topology


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
    names = {
        settings.topic_commands: COMMANDS,
        settings.topic_transitions: TRANSITIONS,
        settings.topic_audit: AUDIT,  # an accepted override's audit record
    }
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
    outputs = bench.reader(
        [s.topic_transitions, s.topic_commands, s.topic_audit, s.topic_deadletter]
    )
    await outputs.start(s.partitions)
    broker = bench.broker_pid()
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
        ends = await after_last_record(bench.bootstrap, changes, bench.client_options())
        target = {**data.ends, **ends}
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
