"""(d) A fresh worker restoring its tables from the changelogs, to its first command (see
bench/kafka.py)."""

from __future__ import annotations

import argparse
import itertools
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.core import START
from bench.kafkabench.common import (
    SECOND,
    Bench,
    bench_operator,
    check_document,
    note,
    override,
    reading,
    route,
    topology_document,
)
from harness.broker import publish
from streams.codec import Origin, tick_event
from streams.config import INPUT_MAX_MESSAGE_BYTES, Settings
from streams.partitions import (
    FEEDBACK_SOURCE,
    OVERRIDES_SOURCE,
    DictTable,
    LinkPartition,
    Record,
    Routing,
    ServicePartition,
)
from streams.topics import TopicSpec, partition_for
from workflows.engine import TICK_KEY
from workflows.topology import Topology


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
    document["operators"] = bench_operator(args.restore_sites)
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
    await publish(bench.bootstrap, records, sign=False, security=bench.security)
    # The new input, waiting when the worker starts: an override, and the tick that applies it.
    _, tick = tick_event(t0 + 30 * SECOND)
    new = [override(probe, f"override/{probe}/{bench.run}", t0 + 20 * SECOND), tick]
    await publish(
        bench.bootstrap,
        [m for raw in new for m in route(s, raw)],
        sign=False,
        security=bench.security,
    )
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
