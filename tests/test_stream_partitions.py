"""The Kafka path's routing without a broker: the demo file split over partitions the way the
worker splits it, consumed in random interleavings (and with restarts from the state tables),
gives every service exactly what replay gives it."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from streams.codec import Origin
from streams.config import Settings
from streams.partitions import (
    FEEDBACK_SOURCE,
    OVERRIDES_SOURCE,
    LinkPartition,
    Record,
    Routing,
    ServicePartition,
)
from streams.topics import partition_for
from tests.binary import binary as to_binary
from workflows.engine import TICK_KEY
from workflows.records import DeadLetter, Emitted
from workflows.replay import read_lines, replay
from workflows.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "streams" / "demo" / "ambon.yaml"
EVENTS = ROOT / "streams" / "demo" / "ambon-events.jsonl"


class DictTable:
    """A partition's state table: what a faust table holds for it."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.data[key] = value


def route(settings: Settings, raw: bytes) -> list[tuple[str, bytes, int]]:
    """Where a producer would put a line of the demo file: (topic, key, partition)."""
    n = settings.partitions
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return [(settings.topic_link_status, b"garbage", partition_for(b"garbage", n))]
    type_ = event.get("type")
    topics = settings.input_topics(type_ if isinstance(type_, str) else "")
    if type_ == "clock.tick.v1":
        return [(t, TICK_KEY.encode(), p) for t in topics for p in range(n)]
    key = str(event.get("subject")).encode()
    if type_ == "operator.maintenance.v1":  # to every partition, keyed by the window id
        return [(topic, key, p) for topic in topics for p in range(n)]
    return [(topic, key, partition_for(key, n)) for topic in topics]


def oracle(
    topology: Topology | None = None, lines: list[bytes] | None = None
) -> tuple[dict[str, list[bytes]], Counter[str]]:
    """What replay gives per key (the demo by default), and its dead letters' reasons."""
    per_service: dict[str, list[bytes]] = defaultdict(list)
    reasons: Counter[str] = Counter()
    topology = topology or Topology.load(TOPOLOGY)
    numbered = list(enumerate(lines, 1)) if lines is not None else read_lines(EVENTS)
    # With the read model: the worker always writes it, replay does with state=True.
    for record in replay(topology, numbered, EVENTS.name, state=True):
        if isinstance(record, Emitted):
            per_service[record.key].append(orjson.dumps(record.event))
        else:
            assert isinstance(record, DeadLetter)
            reasons[record.reason] += 1
    return per_service, reasons


def simulate(
    partitions: int,
    seed: int,
    restart_every: int | None,
    batched: bool = False,
    binary: bool = False,
    topology: Topology | None = None,
    lines: list[bytes] | None = None,
) -> tuple[dict[str, list[bytes]], Counter[str]]:
    """Every input through the partitions in a random interleaving of the partitions' logs,
    as Kafka could deliver them. ``batched``: as the worker does, several records of one
    partition at once through ``handle_batch``, state written only at "commits" (a flush of
    every partition), restarts only right after a commit. ``binary`` (batched only): every
    input the CloudEvents SDK takes is sent in binary mode (tests/binary.py). ``topology``
    and ``lines``: another case than the demo."""
    assert batched or not binary
    settings = Settings(partitions=partitions)
    topology = topology or Topology.load(TOPOLOGY)
    routing = Routing(settings)
    logs: dict[tuple[str, int], list[tuple[bytes, bytes, list[tuple[str, bytes]]]]]
    logs = defaultdict(list)
    for _, raw in read_lines(EVENTS) if lines is None else enumerate(lines, 1):
        converted = to_binary(raw) if binary else None
        value, headers = converted if converted is not None else (raw, [])
        for topic, key, partition in route(settings, raw):
            logs[(topic, partition)].append((key, value, headers))
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    tables = {("links", p): DictTable() for p in range(partitions)} | {
        ("services", p): DictTable() for p in range(partitions)
    }
    links = {
        p: LinkPartition(topology, routing, p, tables[("links", p)]) for p in range(partitions)
    }
    services = {
        p: ServicePartition(topology, routing, p, tables[("services", p)])
        for p in range(partitions)
    }
    per_service: dict[str, list[bytes]] = defaultdict(list)
    reasons: Counter[str] = Counter()
    rng = random.Random(seed)
    steps = 0

    def emit(records: list[Record]) -> None:
        for r in records:
            if r.topic == settings.topic_changes:
                logs[(r.topic, r.partition)].append((r.key or b"", r.value, []))
            elif r.topic == settings.topic_deadletter:
                reasons[dict(r.headers)["failover-reason"].decode()] += 1
            else:
                assert r.key is not None
                per_service[r.key.decode()].append(r.value)

    while True:
        ready = [tp for tp, log in logs.items() if offsets[tp] < len(log)]
        if not ready:
            break
        tp = rng.choice(ready)
        topic, p = tp
        if batched:
            size = rng.randint(1, 40)
            batch = [
                SimpleNamespace(topic=topic, partition=p, offset=o, key=k, value=v, headers=h)
                for o, (k, v, h) in enumerate(logs[tp][offsets[tp] : offsets[tp] + size],
                                              start=offsets[tp])
            ]  # fmt: skip
            offsets[tp] += len(batch)
            if topic == settings.topic_link_status:
                emit(links[p].handle_batch(batch))
            elif topic == settings.topic_changes:
                emit(services[p].handle_batch(None, batch))
            else:
                source = OVERRIDES_SOURCE if topic == settings.topic_overrides else FEEDBACK_SOURCE
                emit(services[p].handle_batch(source, batch))
            steps += 1
            if rng.random() < 0.2:  # a commit
                for stage in (*links.values(), *services.values()):
                    stage.flush()
                if restart_every and rng.randrange(restart_every) == 0:
                    q = rng.randrange(partitions)
                    links[q] = LinkPartition(topology, routing, q, tables[("links", q)])
                    services[q] = ServicePartition(topology, routing, q, tables[("services", q)])
            continue
        key, raw, _ = logs[tp][offsets[tp]]
        origin = Origin(topic, p, offsets[tp])
        offsets[tp] += 1
        if topic == settings.topic_link_status:
            emit(links[p].handle(raw, key, origin))
        elif topic == settings.topic_changes:
            emit(services[p].handle_change(raw, key, origin))
        else:
            source = OVERRIDES_SOURCE if topic == settings.topic_overrides else FEEDBACK_SOURCE
            emit(services[p].handle_input(source, raw, key, origin))
        steps += 1
        if restart_every and steps % restart_every == 0:
            # A restart: everything in memory is rebuilt from the tables.
            q = rng.randrange(partitions)
            links[q] = LinkPartition(topology, routing, q, tables[("links", q)])
            services[q] = ServicePartition(topology, routing, q, tables[("services", q)])
    return per_service, reasons


@pytest.mark.parametrize(
    ("partitions", "seed", "restart_every", "batched"),
    [
        (1, 0, None, False),
        (3, 1, None, False),
        (6, 2, None, False),
        (6, 3, 97, False),
        (4, 4, 13, False),
        (3, 5, None, True),
        (6, 6, 3, True),
        (2, 7, 2, True),
    ],
)
def test_partitioned_routing_matches_replay(
    partitions: int, seed: int, restart_every: int | None, batched: bool
) -> None:
    expected, expected_reasons = oracle()
    got, reasons = simulate(partitions, seed, restart_every, batched)
    assert sum(len(v) for v in expected.values()) > 50  # the demo really does something
    assert set(got) == set(expected)
    for service, events in expected.items():
        assert got[service] == events, service
    assert reasons == expected_reasons


def test_a_backlog_of_ticks_makes_watermark_records_of_a_bounded_size() -> None:
    """600 ticks in one batch of a stage-1 partition: three watermark records per stage-2
    partition (at most WATERMARK_TICKS ticks each, in order), and stage 2 reaches the last
    tick as it would from one record."""
    from streams.partitions import WATERMARK_TICKS, link_source

    settings = Settings(partitions=1)
    topology = Topology.load(TOPOLOGY)
    routing = Routing(settings)
    link = LinkPartition(topology, routing, 0, DictTable())
    ticks = []
    for i in range(600):
        event = {
            "specversion": "1.0",
            "id": f"tick/{i}" + "-" * 200,
            "source": "/t",
            "type": "clock.tick.v1",
            "time": f"2019-02-05T00:{i // 60:02d}:{i % 60:02d}Z",
            "data": {},
        }
        raw = orjson.dumps(event)
        key = TICK_KEY.encode()
        ticks.append(
            SimpleNamespace(topic="links", partition=0, offset=i, key=key, value=raw, headers=[])
        )
    out = [r for r in link.handle_batch(ticks) if r.key == b"__watermark__"]
    carried = [orjson.loads(r.value)["ticks"] for r in out]
    sizes = [WATERMARK_TICKS, WATERMARK_TICKS, 600 - 2 * WATERMARK_TICKS]
    assert [len(chunk) for chunk in carried] == sizes
    ids = [ident for chunk in carried for _, ident in chunk]
    assert ids == [f"tick/{i}" + "-" * 200 for i in range(600)]
    assert max(len(r.value) for r in out) < 80_000
    service = ServicePartition(topology, routing, 0, DictTable())
    for r in out:
        service._change(r.value, r.key, Origin("changes", 0, r.partition), [])
    assert service.sources[link_source(0)][1] == ids[-1]
