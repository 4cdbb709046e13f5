"""Benchmark of the engine on Kafka: ``failover worker`` against the consumer ceiling.

Not a test: a script that prints one table from one run on one broker (infra/kafka/up's
unless --bootstrap or KAFKA_BOOTSTRAP_SERVERS says otherwise)::

    .venv/bin/python bench/kafka.py [--events N] [--partitions N]
        [--skip a,b,c,d,tracing,profile] [--guarantee both|exactly_once|at_least_once]
        [--load RATE@TICK,...] [--trace-ratio R] [--worker-env K=V] [--baseline DIR]
        [--misroute SHARE] [--secure-env FILE [--secure-bootstrap HOST:PORT] [--secure-repeat N]]

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
    (c) takes it too: each load runs with that code first, then with this one.
    With ``--misroute SHARE``, each guarantee also runs over a second copy of the inputs in
    which every reading of that share of the links is on the partition after its link's, and
    every sentinel override after its service's (as from a producer whose partitioner is not
    murmur2, but keeps a key on one partition): the engine forwards them through its
    repartition topics (its row says "on a wrong partition"); the output must still be the
    pure core's.
    With ``--secure-env FILE`` (the secured broker's ``KAFKA_SECURITY_PROTOCOL``,
    ``KAFKA_SASL_*`` and ``KAFKA_SSL_*`` lines, as in the ``client.env`` that ``infra/kafka/up
    --secure`` writes; its ``KAFKA_BOOTSTRAP_SERVERS`` unless ``--secure-bootstrap``), the
    inputs are published to that broker too, and each guarantee also runs there after its
    plaintext run: the worker and every client of the bench (publishing, reading outputs and
    offsets) connect with those settings (its row names the protocol); one more row gives its
    rate as a share of the plaintext one's, and its worker CPU time against it. With
    ``--secure-repeat N`` the two take turns N times, and the best of each counts. (a) is
    measured on both brokers.
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
import dataclasses
import importlib.metadata
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is not a package: make bench.core and harness importable
    sys.path.insert(0, str(ROOT))

from bench.kafkabench.ceiling import ceiling, ceiling_child, ceiling_processes  # noqa: E402
from bench.kafkabench.common import (  # noqa: E402
    GUARANTEES,
    PARTS,
    Bench,
    make_inputs,
    note,
    pct,
    publish_inputs,
    read_env_file,
)
from bench.kafkabench.engine import EngineResult, engine_run, expected_outputs  # noqa: E402
from bench.kafkabench.latency import (  # noqa: E402
    LatencyResult,
    latency_run,
    latency_summary,
    quantile,
)
from bench.kafkabench.profile import summarize_profile  # noqa: E402
from bench.kafkabench.restore import restore_run  # noqa: E402
from bench.kafkabench.tracing import TracingResult, tracing_runs  # noqa: E402
from streams.config import Settings  # noqa: E402
from streams.security import SecurityError  # noqa: E402

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
    try:
        bench = Bench(bootstrap, outdir, args.partitions, dict(args.worker_env))
        secure = secure_bench(args, outdir)
    except SecurityError as exc:  # its message names the variable, never a secret
        raise SystemExit(f"bench/kafka.py: {exc}") from None
    if bench.security.protocol != "PLAINTEXT":
        out(f"broker {bootstrap}: {bench.security}")
    if secure is not None:
        # str(KafkaSecurity) shows the protocol, mechanism, user and files; never the password.
        out(f"secured broker {secure.bootstrap}: {secure.security}")
    if args.worker_env:
        out("worker environment added: " + " ".join(f"{k}={v}" for k, v in args.worker_env))
    await bench.admin.start()
    if secure is not None:
        await secure.admin.start()
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
        core_seconds: float | None = None  # the pure core over the same input (replay's work)
        need_t = "tracing" not in skip
        expected = None
        if need_b or need_t:
            wall = time.perf_counter()
            expected = expected_outputs(topology, data.lines)
            core_seconds = time.perf_counter() - wall
            note(f"pure core over the same input: {core_seconds:.1f} s")
        if "a" not in skip or need_b:
            elapsed = await publish_inputs(bench, data)
            out(
                f"(a)(b) on Kafka: {data.messages:,} messages (ticks copied to every partition of "
                f"the 3 inputs), {data.link_messages:,} in link-status, "
                f"{data.bytes / data.link_messages:.0f} B each on average; published in "
                f"{elapsed:.1f} s"
            )
        secured = data
        if secure is not None and need_b:
            # The same inputs (the same lines, ticks signed alike), on the secured broker.
            secured = dataclasses.replace(
                data,
                settings=Settings.from_env(secure.env("input", data.topology_path)),
                ends={},
                sampled=0,
                misrouted=0,
            )
            elapsed = await publish_inputs(secure, secured)
            out(
                f"(a)(b) on the secured broker ({secure.security.protocol}): the same "
                f"{secured.messages:,} messages, published in {elapsed:.1f} s"
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
                f"on the partition after their link's (--misroute {args.misroute:g}), and the "
                f"{misrouted.misrouted_overrides} sentinel overrides after their service's"
            )
        ceilings: list[tuple[float, float]] = []
        ceilings_n: list[tuple[float, float]] = []  # in args.workers processes
        secure_ceilings: list[tuple[float, float]] = []  # (a) on the secured broker
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
            # With --secure-env, the plaintext run and the secured one take turns, each
            # --secure-repeat times (each run with its own app id, topics and group).
            turns = args.secure_repeat if secure is not None else 1
            for turn in range(turns if guarantee is not None else 0):
                short = "eos" if guarantee == "exactly_once" else "alo"
                again = f"-{turn + 1}" if turn else ""
                profile = args.profile_seconds if "profile" not in skip and not turn else 0
                engines.append(
                    await engine_run(
                        bench,
                        data,
                        guarantee,
                        expected,
                        profile,
                        args.offsets_wait,
                        label=f"b-{short}{again}",
                        workers=args.workers,
                    )
                )
                if secure is not None:
                    # The same (b) run on the secured broker, right after the plaintext one.
                    result = await engine_run(
                        secure,
                        secured,
                        guarantee,
                        expected,
                        0,
                        args.offsets_wait,
                        label=f"b-{short}-secure{again}",
                        workers=args.workers,
                    )
                    engines.append(
                        dataclasses.replace(
                            result, guarantee=f"{result.guarantee}, {secure.security.protocol}"
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
                if secure is not None and need_b:
                    secure_ceilings.append(await ceiling(secure, secured))
                    note(
                        f"(a) ceiling, {secure.security.protocol}: "
                        f"{data.probes / secure_ceilings[-1][0]:,.0f} events/s"
                    )
        tracings: list[TracingResult] = []
        if need_t:
            profile = args.profile_seconds if "profile" not in skip else 0
            tracings = await tracing_runs(bench, data, args, expected, profile)
        latencies: list[LatencyResult] = []
        if "c" not in skip:
            for number, (value, tick) in enumerate(args.load):
                if args.baseline:  # before and after, one right after the other
                    label = f"c{number}-baseline"
                    latencies.append(
                        await latency_run(bench, args, value, tick, label, baseline=True)
                    )
                latencies.append(await latency_run(bench, args, value, tick, f"c{number}"))
        restore = await restore_run(bench, args) if "d" not in skip else None
    finally:
        try:
            await bench.cleanup()
        finally:
            await bench.admin.close()
            if secure is not None:
                try:
                    await secure.cleanup()
                finally:
                    await secure.admin.close()

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
    if secure is not None and secure_ceilings and best:
        secure_best = min(c[0] for c in secure_ceilings)
        runs = ", ".join(f"{n / c[0]:,.0f}" for c in secure_ceilings)
        what = f"(a) ceiling over {secure.security.protocol}"
        out(
            f"{what:<58}{rate(n, secure_best)}  {best / secure_best:>7.0%}  (best of "
            f"{len(secure_ceilings)}: {runs})"
        )
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
        # No target of its own (docs/performance.md): reported against the read+core limit,
        # reading the input as (a) does and then doing the pure core's work over it.
        limit = (
            f"{(against + core_seconds) / e.to_outputs:.0%} of read+core "
            f"({rate(n, against + core_seconds).strip()})"
            if against and core_seconds
            else ""
        )
        also = (
            f" ({best / e.to_outputs:.1%} of the 1-process (a))" if best and against != best else ""
        )
        out(
            f"{f'(b) engine {e.guarantee}: ready -> last output committed':<58}"
            f"{rate(n, e.to_outputs)}  {ratio:>7}  {limit}{also}"
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
    if secure is not None:
        plain_name = bench.security.protocol
        secure_name = secure.security.protocol
        for guarantee in args.guarantees:
            # Best against best, as for (a): the one the shared machine disturbed least.
            plain_runs = [e for e in engines if e.guarantee == guarantee]
            secure_runs = [e for e in engines if e.guarantee == f"{guarantee}, {secure_name}"]
            if not plain_runs or not secure_runs:
                continue
            share = min(e.to_outputs for e in plain_runs) / min(e.to_outputs for e in secure_runs)
            cpu = min(e.worker_cpu for e in secure_runs) / min(e.worker_cpu for e in plain_runs)
            runs = f"best of {len(plain_runs)} each; " if len(plain_runs) > 1 else ""
            what = f"(b) {guarantee}: {secure_name} as a share of {plain_name}"
            out(
                f"{what:<58}{share:>10.1%}  {'':>7}  {runs}cost {1 - share:.1%}; worker CPU "
                f"per event x{cpu:.2f}"
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
                tag = ", baseline" if c.baseline else ""
                out(
                    f"{f'(c) {what} -> first command, {c.achieved:,.0f}/s offered{tag}':<58}"
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
            f"{args.main_guarantee}" + (f"; the code of {args.baseline}" if c.baseline else "")
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


def secure_bench(args: argparse.Namespace, outdir: Path) -> Bench | None:
    """The secured broker's :class:`Bench` of ``--secure-env`` (None without it): its
    security variables from that file alone, its broker's CPU time from the data dir the
    file is in when a broker runs there (as ``infra/kafka/up --secure`` writes it).

    Raises:
        SystemExit: no address, or a plaintext protocol (nothing secured to compare).
        SecurityError: the file's settings do not fit together.
    """
    if args.secure_env is None:
        return None
    path = Path(args.secure_env)
    env = read_env_file(path)
    address = args.secure_bootstrap or env.get("KAFKA_BOOTSTRAP_SERVERS")
    if not address:
        raise SystemExit(
            f"bench/kafka.py: --secure-env {path} has no KAFKA_BOOTSTRAP_SERVERS: give "
            "--secure-bootstrap HOST:PORT"
        )
    data_dir = path.resolve().parent
    secure = Bench(
        address,
        outdir,
        args.partitions,
        dict(args.worker_env),
        security=env,
        broker_data=data_dir if (data_dir / "broker.pid").is_file() else None,
    )
    if secure.security.protocol == "PLAINTEXT":
        raise SystemExit(
            f"bench/kafka.py: --secure-env {path}: KAFKA_SECURITY_PROTOCOL is PLAINTEXT (or "
            "unset): nothing secured to compare with"
        )
    return secure


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
        help="(b) also run each guarantee, (c) each load, with the code of the checkout DIR "
        "(its streams/ and workflows/ first on the worker's PYTHONPATH), e.g. a git worktree "
        "of an older commit",
    )
    parser.add_argument(
        "--misroute",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="(b) also run each guarantee over inputs with the readings of this share of the "
        "links on a partition that is not theirs (forwarded by the engine), e.g. 0.1",
    )
    parser.add_argument(
        "--secure-env",
        default=None,
        metavar="FILE",
        help="(a)(b) also run on a secured broker: FILE holds its KAFKA_SECURITY_PROTOCOL, "
        "KAFKA_SASL_* and KAFKA_SSL_* (and KAFKA_BOOTSTRAP_SERVERS) as NAME=VALUE lines, e.g. "
        "the client.env that infra/kafka/up --secure writes in its data dir",
    )
    parser.add_argument(
        "--secure-repeat",
        type=int,
        default=1,
        metavar="N",
        help="(b) with --secure-env: runs of each guarantee on each broker, taking turns; the "
        "share row compares the best of each",
    )
    parser.add_argument(
        "--secure-bootstrap",
        default=None,
        metavar="HOST:PORT",
        help="the secured broker (default: --secure-env's KAFKA_BOOTSTRAP_SERVERS)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bootstrap", default=None, help="broker (default: infra/kafka/up)")
    parser.add_argument("--out", default=None, help="directory for worker logs and profiles")
    args = parser.parse_args(argv)
    unknown = set(args.skip) - set(PARTS)
    if unknown:
        parser.error(f"--skip: unknown part(s) {', '.join(sorted(unknown))}")
    if args.secure_bootstrap and not args.secure_env:
        parser.error(
            "--secure-bootstrap needs --secure-env FILE: the secured broker's security "
            "settings (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*)"
        )
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
