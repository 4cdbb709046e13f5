"""Benchmark of the pure core: ``Engine.feed`` against the decode-and-validate ceiling.

Not a test: a script that prints one table from one run::

    .venv/bin/python bench/core.py [--events N] [--sites N] [--repeat N] [--seed N]

What it does, in order:

1. Generates a topology of ``--sites`` sites as YAML text (10 services and 3 links per site:
   two links of the site's own, one regional uplink shared by about 10 sites; some services
   need a redundant pair) and loads it with :meth:`Topology.parse`, so it is validated like an
   operator's file.
2. Generates ``--events`` ``link.status.v1`` events as JSON bytes, every link probed every
   10 s of event time, plus a ``clock.tick.v1`` every 10 s (counted apart). Mostly ``up``
   readings; a few links have spells (degraded, down, silent, flapping) and every link the
   odd latency spike, so that health changes, transitions and commands do happen. All bytes
   exist before any timing starts.
3. Times, ``--repeat`` times, the ceiling (``orjson.loads`` and the jsonschema-rs validator of
   the event's type, ``is_valid``, as ``decode`` does), the core's fast path for readings
   alone (``read_status``: msgspec, parse and check in one pass) and the core
   (``Engine.feed`` on a fresh engine over the same bytes, draining ``engine.out`` every
   10,000 inputs as a consumer would), interleaved batch by batch; keeps each batch's best
   time. The target is judged against the ceiling (docs/performance.md).
4. Measures the memory the engine keeps per service with ``tracemalloc``, in a separate
   untimed pass (see the method printed with the result).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import random
import shlex
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from streams.demokeys import sign_as
from workflows import timeutil
from workflows.engine import Engine
from workflows.inputs import _VALIDATORS, MAX_EVENT_BYTES
from workflows.operators import judge_override
from workflows.readings import read_status
from workflows.records import COMMANDS, DEADLETTER, STATE, TRANSITIONS, DeadLetter, Emitted
from workflows.replay import encode
from workflows.topology import Topology

SLOT = 10  # seconds between two probes of one link, and between two ticks
SITES_PER_REGION = 10  # sites behind one regional uplink
DRAIN_EVERY = 10_000  # inputs between two drains of engine.out
START = 1_714_521_600  # 2024-05-01T00:00:00Z, in seconds
ZONES = ("Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura")

# The 10 services of every site: name, requires (with "A", "B" the site's own links and "U"
# the regional uplink; a list is a redundant group), offline-capable, policy override.
SERVICES: tuple[tuple[str, str, str, list[Any], bool, str | None], ...] = (
    ("ektp", "KTP elektronik", "Electronic ID card", ["U", "A"], False, None),
    ("akta", "Akta kelahiran", "Birth certificate", ["U", "A"], False, None),
    ("kk", "Kartu keluarga", "Family card", ["U", ["A", "B"]], True, None),
    ("legalisasi", "Legalisasi", "Legalisation", [["A", "B"]], True, None),
    ("pindah", "Surat pindah", "Change of address", ["U", ["A", "B"]], True, "120s"),
    ("pajak", "Pajak daerah", "Local tax", ["B"], False, None),
    ("izin", "Perizinan", "Permits", ["U", "B"], True, None),
    ("bpjs", "BPJS", "Health insurance", [["A", "B"]], False, None),
    ("arsip", "Arsip", "Archive", ["A"], True, None),
    ("aduan", "Pengaduan", "Complaints", ["U"], True, None),
)


# -- topology -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkSpec:
    id: str
    region: str
    latency: float  # typical latency of an up reading, ms
    phase: int  # second within each 10 s slot at which its probe reports


def topology_yaml(sites: int) -> tuple[str, list[LinkSpec]]:
    """The topology as YAML text, and the links in a fixed order."""
    lines = ["sites:"]
    for i in range(sites):
        lines.append(f"  site-{i:04d}: {{name: Kantor {i}, timezone: {ZONES[i % len(ZONES)]}}}")
    links: list[LinkSpec] = []
    lines.append("links:")
    for region in range((sites + SITES_PER_REGION - 1) // SITES_PER_REGION):
        link = f"r{region:03d}.uplink"
        links.append(LinkSpec(link, f"r{region:03d}", 30.0, len(links) % SLOT))
        lines.append(f"  {link}: {{provider: telkom, description: regional uplink {region}}}")
    for i in range(sites):
        for suffix, provider, latency in (("fiber", "telkom", 20.0), ("4g", "seluler", 90.0)):
            link = f"site-{i:04d}.{suffix}"
            links.append(
                LinkSpec(link, f"r{i // SITES_PER_REGION:03d}", latency, len(links) % SLOT)
            )
            lines.append(f"  {link}: {{provider: {provider}}}")
    lines.append("services:")
    for i in range(sites):
        site = f"site-{i:04d}"
        names = {
            "A": f"{site}.fiber",
            "B": f"{site}.4g",
            "U": f"r{i // SITES_PER_REGION:03d}.uplink",
        }
        for name, name_id, name_en, requires, offline, manual_after in SERVICES:
            groups = [
                names[item] if isinstance(item, str) else [names[x] for x in item]
                for item in requires
            ]
            lines.append(f"  {site}.{name}:")
            lines.append(f"    site: {site}")
            lines.append(f"    name: {{id: {name_id}, en: {name_en}}}")
            lines.append(f"    requires: {orjson.dumps(groups).decode()}")
            lines.append(f"    offline: {'true' if offline else 'false'}")
            if not offline:
                lines.append(f"    queue: {site}.{name}.counter")
            if manual_after:
                lines.append(f"    policy: {{manual_after: {manual_after}}}")
    lines.append("policy: {degrade_after: 60s, manual_after: 300s, stale_after: 120s}")
    return "\n".join(lines) + "\n", links


# -- events ---------------------------------------------------------------------------------

Reading = tuple[str, float | None, float | None] | None  # None: the probe is silent


@dataclass(frozen=True)
class Spell:
    start: int
    end: int
    kind: str  # "degraded", "down", "silent" or "flapping"
    period: int  # flapping: seconds per up or down half


SPELL_KINDS = ("degraded", "down", "silent", "flapping")
SPELL_MINUTES = {"degraded": (5, 40), "down": (2, 30), "silent": (3, 20), "flapping": (10, 25)}


def plan_spells(links: Sequence[LinkSpec], span: int, rng: random.Random) -> dict[str, list[Spell]]:
    """About 6% of links get one or two spells somewhere in the run."""
    spells: dict[str, list[Spell]] = {}
    flaky = rng.sample(list(links), max(1, round(len(links) * 0.06)))
    for link in flaky:
        for _ in range(rng.choice((1, 1, 2))):
            kind = rng.choice(SPELL_KINDS)
            low, high = SPELL_MINUTES[kind]
            length = rng.randint(low, high) * 60
            start = START + rng.randrange(max(1, span - length))
            spells.setdefault(link.id, []).append(
                Spell(start, start + length, kind, rng.choice((60, 120, 180)))
            )
    return spells


def reading(link: LinkSpec, spells: list[Spell] | None, t: int, rng: random.Random) -> Reading:
    if spells:
        for spell in spells:
            if spell.start <= t < spell.end:
                if spell.kind == "degraded":
                    return "degraded", 1500.0, 12.0
                if spell.kind == "down":
                    return "down", None, 100.0
                if spell.kind == "silent":
                    return None
                if (t - spell.start) // spell.period % 2:
                    return "down", None, 100.0
                return "up", link.latency, 0.0
    if rng.random() < 0.0005:  # a one-reading latency spike: impaired for 10 s
        return "up", 950.0, 7.0
    return "up", round(link.latency + rng.random() * 10, 1), round(rng.random(), 1)


def stamp(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass
class Stream:
    inputs: list[bytes]  # probes and ticks, in event-time order
    probes: int
    ticks: int
    seconds: int  # event time covered
    spells: dict[str, list[Spell]]


def stream_lines(
    links: Sequence[LinkSpec], events: int, seed: int, stream: Stream | None = None
) -> Iterator[bytes]:
    """``events`` probe readings, every link every 10 s, and a tick every 10 s, one at a time
    (a file of 10 million is written without holding it); ``stream``, if given, gets the
    counts and the spells when the last one is made (its ``inputs`` stay as they are)."""
    rng = random.Random(seed)
    span = events * SLOT // len(links) + SLOT
    spells = plan_spells(links, span, rng)
    by_phase: list[list[LinkSpec]] = [[] for _ in range(SLOT)]
    for link in links:
        by_phase[link.phase].append(link)
    dumps = orjson.dumps
    probes = ticks = 0
    t = START
    while probes < events:
        when = stamp(t)
        for link in by_phase[(t - START) % SLOT]:
            value = reading(link, spells.get(link.id), t, rng)
            if value is None:
                continue
            status, latency, loss = value
            yield (
                dumps(
                    {
                        "specversion": "1.0",
                        "id": f"probe/{link.id}/{when}",
                        "source": f"/probes/{link.region}",
                        "type": "link.status.v1",
                        "time": when,
                        "subject": link.id,
                        "data": {"status": status, "latency_ms": latency, "loss_pct": loss},
                    }
                )
            )
            probes += 1
            if probes == events:
                break
        if (t - START) % SLOT == 0:  # after the probes of the same second: it evaluates them
            yield (
                dumps(
                    {
                        "specversion": "1.0",
                        "id": f"tick/{when}",
                        "source": "/failover/ticker",
                        "type": "clock.tick.v1",
                        "time": when,
                        "data": {},
                    }
                )
            )
            ticks += 1
        t += 1
    if stream is not None:
        stream.probes, stream.ticks, stream.spells = probes, ticks, spells
        stream.seconds = t - START


def make_stream(links: Sequence[LinkSpec], events: int, seed: int) -> Stream:
    """``events`` probe readings, every link every 10 s, and a tick every 10 s, in a list."""
    stream = Stream([], 0, 0, 0, {})
    stream.inputs.extend(stream_lines(links, events, seed, stream))
    return stream


# -- measurements ---------------------------------------------------------------------------


class Clock:
    """Wall time and this process's CPU time of one measurement."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


Times = list[tuple[float, float]]  # (wall, cpu) seconds, one pair per batch


@dataclass
class Round:
    ceiling: Times
    fast: Times
    core: Times
    state: Times
    outputs: list[Emitted | DeadLetter]
    state_records: int


def run_round(topology: Topology, chunks: list[list[bytes]], core_first: bool) -> Round:
    """The ceiling and the core over every batch of :data:`DRAIN_EVERY` inputs, the two
    interleaved batch by batch, so that a burst of load from elsewhere on the machine lands
    on one batch of one of them, not on a whole run.

    The ceiling: ``orjson.loads`` and ``is_valid`` with the validator of the event's type, as
    :func:`workflows.inputs.decode` does (the core's ceiling: docs/performance.md). The
    fast path: :func:`workflows.readings.read_status` alone, the one pass of parse and check
    the core uses for readings instead (ticks are refused by it at once and cost nothing
    more). The core: ``Engine.feed`` on a fresh engine, draining ``engine.out`` after each
    batch as a consumer would. The state: the same with the read model's records on, as the
    Kafka worker runs it (``state_records=True``).
    """
    validators = _VALIDATORS  # the engine's own, compiled from schemas/
    loads = orjson.loads
    engine = Engine(topology)
    feed = engine.feed
    drain = engine.drain
    with_state = Engine(topology, state_records=True)
    state: Times = []
    state_records = 0
    ceiling: Times = []
    fast: Times = []
    core: Times = []
    status = read_status
    max_bytes = MAX_EVENT_BYTES
    readings = 0
    outputs: list[Emitted | DeadLetter] = []
    invalid = 0
    for index, chunk in enumerate(chunks):
        order = ("core", "state", "fast", "ceiling")
        for part in order if core_first else reversed(order):
            clock = Clock()
            if part == "ceiling":
                for raw in chunk:
                    event = loads(raw)
                    if not validators[event["type"]].is_valid(event):
                        invalid += 1
                ceiling.append(clock.stop())
            elif part == "fast":
                for raw in chunk:
                    if status(raw, None, max_bytes) is not None:
                        readings += 1
                fast.append(clock.stop())
            elif part == "state":
                for raw in chunk:
                    with_state.feed(raw)
                if index == len(chunks) - 1:
                    with_state.finish()
                out = with_state.drain()
                state.append(clock.stop())
                state_records += sum(isinstance(r, Emitted) and r.topic == STATE for r in out)
            else:
                for raw in chunk:
                    feed(raw)
                if index == len(chunks) - 1:
                    engine.finish()
                outputs.extend(drain())
                core.append(clock.stop())
    assert invalid == 0, f"{invalid} generated events are invalid"
    probes = sum(raw.find(b'"link.status.v1"') >= 0 for chunk in chunks for raw in chunk)
    assert readings == probes, f"the fast path took {readings} of {probes} readings"
    return Round(ceiling, fast, core, state, outputs, state_records)


def summed(times: Times) -> tuple[float, float]:
    return sum(t[0] for t in times), sum(t[1] for t in times)


def best(rounds: list[Round], part: str) -> tuple[float, float]:
    """The sum over batches of each batch's best time in any round."""
    per_round = [getattr(r, part) for r in rounds]
    batches = range(len(per_round[0]))
    return (
        sum(min(times[i][0] for times in per_round) for i in batches),
        sum(min(times[i][1] for times in per_round) for i in batches),
    )


@dataclass
class Memory:
    total: int  # bytes kept after the run, all of the engine
    indexes: int  # bytes kept by Engine(topology) before any input
    by_file: list[tuple[str, int]]  # where the kept bytes were allocated
    topology: int  # the topology object itself, for reference (not in ``total``)
    health_changes: int
    fanned_out: int
    parsed_times: int  # entries in the time-parse cache at the end


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def measure_memory(topology: Topology, text: str, chunks: list[list[bytes]]) -> Memory:
    """Bytes the engine keeps, traced by ``tracemalloc`` (the method is printed with them)."""
    tracemalloc.start()
    try:
        # The topology's own size, for reference: the C YAML loader, since the pure-Python
        # one that Topology.parse uses takes a minute under tracemalloc; same document.
        before = _traced()
        copy = Topology.from_document(yaml.load(text, Loader=yaml.CSafeLoader), "<bench>")
        topology_bytes = _traced() - before
        del copy
        # The time caches are the engine's too: empty them, so that they are counted.
        timeutil._PARSED.clear()
        timeutil.format_time.cache_clear()
        timeutil.format_duration.cache_clear()
        counts = [0, 0]

        def counting(change: Any) -> None:  # the engine's public hook: each health change
            counts[0] += 1
            counts[1] += len(topology.services_by_link[change.link])

        base = _traced()
        engine = Engine(topology, on_health=counting)
        indexes = _traced() - base
        start = tracemalloc.take_snapshot()
        for chunk in chunks:
            for raw in chunk:
                engine.feed(raw)
            engine.drain()
        engine.finish()
        engine.drain()
        for service in topology.services:  # every service with a state of its own
            engine.services.state_of(service)
        assert len(engine.links.states) == len(topology.links)
        total = _traced() - base
        end = tracemalloc.take_snapshot()
        by_file: Counter[str] = Counter()
        for stat in end.compare_to(start, "filename"):
            by_file[_short(stat.traceback[0].filename)] += stat.size_diff
        by_file["(Engine(topology): indexes, machine)"] = indexes
        del engine
    finally:
        tracemalloc.stop()
    changes, fanned_out = counts
    return Memory(
        total,
        indexes,
        by_file.most_common(),
        topology_bytes,
        changes,
        fanned_out,
        len(timeutil._PARSED),
    )


def _short(filename: str) -> str:
    for marker in ("/workflows/", "/site-packages/", "/lib/python"):
        if marker in filename:
            return filename[filename.index(marker) + 1 :]
    return filename


# -- report ---------------------------------------------------------------------------------


def digest(outputs: list[Emitted | DeadLetter]) -> str:
    sha = hashlib.sha256()
    for record in outputs:
        sha.update(encode(record))
        sha.update(b"\n")
    return sha.hexdigest()[:16]


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>12,.0f}"


def verification_cost(repeat: int, count: int = 1000) -> float:
    """Microseconds to judge one signed override of the demo (signature, actor, role, grant):
    the best of ``repeat`` runs of ``count``. bench/operators.py has the other cases and the
    flood."""
    root = Path(__file__).resolve().parent.parent
    topology = Topology.load(root / "streams" / "demo" / "ambon.yaml")
    event = sign_as(
        {
            "specversion": "1.0",
            "id": "override/bench",
            "source": "/operators/bench",
            "type": "operator.override.v1",
            "time": "2019-02-04T23:15:30Z",
            "subject": "ektp",
            "data": {"action": "pin", "actor": "Plt. Kepala Dinas", "role": "acting-head",
                     "reason": "bench"},
        }
    )  # fmt: skip
    site, operators = topology.services["ektp"].site, topology.operators
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(count):
            verdict = judge_override(event, 0, None, operators, site, False, 1)
        best = min(best, time.perf_counter() - started)
    assert verdict is None, verdict
    return best / count * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="link.status.v1 events")
    parser.add_argument("--sites", type=int, default=500, help="sites (10 services each)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each (best kept)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated readings")
    args = parser.parse_args(argv)
    out = print

    out("$ " + shlex.join(sys.orig_argv))
    out(f"python {sys.version.split()[0]}, orjson {orjson.__version__}")
    began = time.perf_counter()
    text, links = topology_yaml(args.sites)
    topology = Topology.parse(text, "<bench>")
    stream = make_stream(links, args.events, args.seed)
    size = sum(map(len, stream.inputs))
    chunks = [stream.inputs[i : i + DRAIN_EVERY] for i in range(0, len(stream.inputs), DRAIN_EVERY)]
    out(
        f"topology: {len(topology.sites):,} sites, {len(topology.links):,} links "
        f"({len(links) - 2 * args.sites} regional uplinks), {len(topology.services):,} services "
        f"({sum(not s.offline for s in topology.services.values()):,} online-only, "
        f"{sum(any(len(g) > 1 for g in s.requires) for s in topology.services.values()):,} "
        f"with a redundant group); {len(text):,} bytes of YAML"
    )
    flaky = sum(len(v) for v in stream.spells.values())
    kinds = Counter(s.kind for v in stream.spells.values() for s in v)
    out(
        f"inputs: {stream.probes:,} link.status.v1 + {stream.ticks:,} clock.tick.v1 = "
        f"{len(stream.inputs):,} messages, {size / len(stream.inputs):.0f} bytes on average, "
        f"{stream.seconds / 3600:.2f} h of event time"
    )
    out(
        f"spells: {flaky} on {len(stream.spells)} links ("
        + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        + "), plus one-reading latency spikes"
    )
    out(f"generated in {time.perf_counter() - began:.1f} s, before any timing")
    out("")

    n = len(stream.inputs)
    rounds: list[Round] = []
    for number in range(1, args.repeat + 1):
        rounds.append(run_round(topology, chunks, core_first=number % 2 == 0))
        ceiling, core = summed(rounds[-1].ceiling), summed(rounds[-1].core)
        out(
            f"  run {number}: ceiling {rate(n, ceiling[0]).strip()}/s, "
            f"core {rate(n, core[0]).strip()}/s, ratio {ceiling[0] / core[0]:.1%}"
            f"   (by CPU time: {ceiling[1] / core[1]:.1%})"
        )
    out("")

    best_ceiling, cpu_ceiling = best(rounds, "ceiling")
    best_fast, _ = best(rounds, "fast")
    best_core, cpu_core = best(rounds, "core")
    best_state, _ = best(rounds, "state")
    ratio = best_ceiling / best_core
    digests = {digest(r.outputs) for r in rounds}
    outputs = rounds[-1].outputs
    topics = Counter(r.topic if isinstance(r, Emitted) else DEADLETTER for r in outputs)
    commands = Counter(
        r.event["type"] for r in outputs if isinstance(r, Emitted) and r.topic == COMMANDS
    )
    moves = Counter(
        f"{r.event['data']['from']}->{r.event['data']['to']}"
        for r in outputs
        if isinstance(r, Emitted) and r.topic == TRANSITIONS
    )

    memory = measure_memory(topology, text, chunks)
    verify = verification_cost(args.repeat)
    services = len(topology.services)
    per_service = memory.total / services

    out(
        f"{'best of ' + str(args.repeat) + ' runs (see timing), one core':<44}{'messages/s':>12}"
        f"{'µs/message':>12}"
    )
    out("-" * 68)
    out(
        f"{'ceiling: orjson.loads + is_valid':<44}{rate(n, best_ceiling)}"
        f"{best_ceiling / n * 1e6:>12.2f}"
    )
    out(
        f"{'  fast path alone: read_status (msgspec)':<44}{rate(n, best_fast)}"
        f"{best_fast / n * 1e6:>12.2f}"
    )
    out(
        f"{'core: Engine.feed (+ drain every 10,000)':<44}{rate(n, best_core)}"
        f"{best_core / n * 1e6:>12.2f}"
    )
    out(
        f"{'  with state records (as the worker runs)':<44}{rate(n, best_state)}"
        f"{best_state / n * 1e6:>12.2f}"
    )
    out(
        f"{'override verification (Ed25519, grants)':<44}{rate(1, verify / 1e6)}"
        f"{verify:>12.2f}   per override; bench/operators.py: a flood"
    )
    out(
        f"{'core / ceiling':<44}{ratio:>12.1%}   target >= 50%: "
        f"{'met' if ratio >= 0.5 else 'NOT met'}"
    )
    out(
        f"{'  the same by CPU time (process_time)':<44}{cpu_ceiling / cpu_core:>12.1%}"
        f"   ceiling {rate(n, cpu_ceiling).strip()}/s, core {rate(n, cpu_core).strip()}/s"
    )
    out(
        f"{'engine memory per service':<44}{per_service:>12,.0f} B   target <= 2,048 B: "
        f"{'met' if per_service <= 2048 else 'NOT met'}"
    )
    out("-" * 68)
    out(f"timing: {len(chunks)} batches of up to {DRAIN_EVERY:,} messages, ticks included; the")
    out("  ceiling, the fast path, the core and the core with state records alternate batch by")
    out("  batch (the core first in even runs). Each figure sums, over the batches, a batch's")
    out(f"  best wall time in the {args.repeat} runs: load from elsewhere on a shared machine")
    out("  then spoils one batch, not the result.")
    out(
        f"outputs of one core run: {topics[TRANSITIONS]:,} transitions, "
        f"{topics[COMMANDS]:,} commands, {topics[DEADLETTER]:,} dead letters; "
        f"{memory.health_changes:,} link health changes fanned out to "
        f"{memory.fanned_out:,} service inputs"
    )
    out(
        f"  with state records: {rounds[-1].state_records:,} failover.service.state.v1 "
        f"besides (not in the digest); their cost {best_state / best_core - 1:+.1%} of the core's"
    )
    out("  transitions: " + ", ".join(f"{k} {v:,}" for k, v in sorted(moves.items())))
    out(
        "  commands:    "
        + ", ".join(f"{k.removeprefix('failover.')} {v:,}" for k, v in sorted(commands.items()))
    )
    same = "identical" if len(digests) == 1 else f"DIFFERENT ({len(digests)} digests)"
    out(f"  output digest {next(iter(sorted(digests)))}, {same} across the {args.repeat} runs")
    out("")
    out(
        f"memory: {memory.total:,} bytes kept by the engine for {services:,} services and "
        f"{len(topology.links):,} links = {per_service:,.0f} B per service"
    )
    out("  method: tracemalloc, in a separate untimed pass after the timed runs. Tracing")
    out("  starts after the topology is loaded; the bytes still allocated after")
    out("  Engine(topology), every input fed and drained, finish(), and state_of() for every")
    out("  service (so each service and each link has a state), after gc.collect(), are the")
    out("  engine's: link states, service states, stage indexes, the transitions machine,")
    out("  time caches. Divided by the number of services. Where they were allocated:")
    for name, bytes_ in memory.by_file:
        if bytes_ >= 1024:
            out(f"    {bytes_:>12,} B  {name}")
    out(
        f"  the time-parse cache held {memory.parsed_times:,} entries at the end (it is emptied"
        f" at {timeutil._PARSED_MAX:,}), about 140 B each"
    )
    out(
        f"  not included: the Topology itself, {memory.topology:,} B "
        f"({memory.topology / services:,.0f} B per service), configuration shared by any engine"
    )
    out(f"\ntotal wall time {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
