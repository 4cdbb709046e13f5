"""(c) Probe-to-command latency under a paced load with the live ticker (see bench/kafka.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaProducer,
    TopicPartition,
)

from bench.core import topology_yaml
from bench.kafkabench.common import (
    SECOND,
    Bench,
    end_offsets,
    note,
    override,
    pct,
    reading,
    with_bench_operator,
)
from streams.config import Settings
from streams.topics import partition_for
from workflows.timeutil import parse_time
from workflows.topology import Topology


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
    baseline: bool = False  # run with the code of --baseline DIR


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
    bench: Bench,
    args: argparse.Namespace,
    rate: float,
    tick: float,
    label: str,
    baseline: bool = False,
) -> LatencyResult:
    """One (c) run; ``baseline``: the worker runs the code of ``--baseline DIR``."""
    text, links = topology_yaml(args.sites)
    text = text.replace("policy: {degrade_after: 60s", "policy: {degrade_after: 2s")
    text = with_bench_operator(text, args.sites)
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
    if baseline:
        env["PYTHONPATH"] = args.baseline
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
        bootstrap_servers=bench.bootstrap,
        enable_idempotence=True,
        linger_ms=1,
        **bench.client_options(),
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
        ends = await end_offsets(bench.bootstrap, links_tps, bench.client_options())
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
        baseline,
    )
