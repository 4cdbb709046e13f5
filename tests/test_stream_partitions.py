"""The Kafka path's routing without a broker: the demo file split over partitions the way the
worker splits it, consumed in random interleavings (and with restarts from the state tables),
gives every service exactly what replay gives it."""

from __future__ import annotations

import random
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.codec import Origin
from streams.config import Settings
from streams.partitions import (
    FEEDBACK_SOURCE,
    OVERRIDES_SOURCE,
    DictTable,
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


def consistent_random(key: bytes, n: int) -> int:
    """librdkafka's default partitioner for a keyed record (kcat's, confluent-kafka-go's):
    CRC-32 of the key, modulo the partition count."""
    return zlib.crc32(key) % n


Partitioner = Callable[[bytes, int], int]


def route(
    settings: Settings,
    raw: bytes,
    readings: Partitioner = partition_for,
    inputs: Partitioner = partition_for,
) -> list[tuple[str, bytes, int]]:
    """Where a producer would put a line of the demo file: (topic, key, partition), the
    partition of a reading chosen by ``readings``, of an override or feedback by ``inputs``."""
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
    if type_ == "link.status.v1":
        return [(settings.topic_link_status, key, readings(key, n))]
    return [(topic, key, inputs(key, n)) for topic in topics]


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
    readings: Partitioner = partition_for,
    inputs: Partitioner = partition_for,
) -> tuple[dict[str, list[bytes]], Counter[str]]:
    """Every input through the partitions in a random interleaving of the partitions' logs,
    as Kafka could deliver them. ``batched``: as the worker does, several records of one
    partition at once through ``handle_batch``, state written only at "commits" (a flush of
    every partition), restarts only right after a commit. ``binary`` (batched only): every
    input the CloudEvents SDK takes is sent in binary mode (tests/binary.py). ``topology``
    and ``lines``: another case than the demo. ``readings``, ``inputs``: the producers'
    partitioners (:func:`route`)."""
    assert batched or not binary
    settings = Settings(partitions=partitions)
    topology = topology or Topology.load(TOPOLOGY)
    routing = Routing(settings)
    logs: dict[tuple[str, int], list[tuple[bytes, bytes, list[tuple[str, bytes]]]]]
    logs = defaultdict(list)
    for _, raw in read_lines(EVENTS) if lines is None else enumerate(lines, 1):
        converted = to_binary(raw) if binary else None
        value, headers = converted if converted is not None else (raw, [])
        for topic, key, partition in route(settings, raw, readings, inputs):
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
            elif r.topic in (settings.topic_repartition, settings.topic_service_repartition):
                logs[(r.topic, r.partition)].append((r.key or b"", r.value, list(r.headers)))
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
            if topic in (settings.topic_link_status, settings.topic_repartition):
                emit(links[p].handle_batch(batch))
            elif topic in (settings.topic_changes, settings.topic_service_repartition):
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
        key, raw, headers = logs[tp][offsets[tp]]
        origin = Origin(topic, p, offsets[tp])
        offsets[tp] += 1
        if topic in (settings.topic_link_status, settings.topic_repartition):
            emit(links[p].handle(raw, key, origin, headers))
        elif topic == settings.topic_changes:
            emit(services[p].handle_change(raw, key, origin))
        elif topic == settings.topic_service_repartition:
            emit(services[p].handle_forwarded(raw, key, origin, headers))
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


def wrong_partition(key: bytes, n: int) -> int:
    """Every key on a partition it does not hash to (murmur2)."""
    return (partition_for(key, n) + 1) % n


@pytest.mark.parametrize(
    ("partitions", "seed", "restart_every", "batched", "readings"),
    [
        (3, 11, None, False, consistent_random),
        (4, 12, None, False, wrong_partition),
        (3, 13, 11, False, wrong_partition),
        (4, 14, 53, False, consistent_random),
        (3, 15, None, True, consistent_random),
        (6, 16, 3, True, wrong_partition),
        (2, 17, 2, True, wrong_partition),
        (5, 18, 4, True, consistent_random),
    ],
)
def test_readings_on_any_partition_are_forwarded_and_match_replay(
    partitions: int, seed: int, restart_every: int | None, batched: bool, readings: Partitioner
) -> None:
    """Readings published with another partitioner than murmur2 (kcat's default, or every one
    on a wrong partition) reach their link through the repartition topic, each where replay
    applies it: the same records, byte for byte, and no dead letter more."""
    expected, expected_reasons = oracle()
    settings = Settings(partitions=partitions)
    misrouted = sum(
        1
        for _, raw in read_lines(EVENTS)
        for topic, key, p in route(settings, raw, readings)
        if topic == settings.topic_link_status
        and key != TICK_KEY.encode()
        and p != partition_for(key, partitions)
    )
    assert misrouted > 20
    got, reasons = simulate(partitions, seed, restart_every, batched, readings=readings)
    assert set(got) == set(expected)
    for service, events in expected.items():
        assert got[service] == events, service
    assert reasons == expected_reasons
    if batched:  # and the same again with every input the SDK takes in binary mode
        got, reasons = simulate(
            partitions, seed, restart_every, batched, binary=True, readings=readings
        )
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


def _reading(link: str, second: int) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": f"probe/{link}/{second}",
            "source": "/t",
            "type": "link.status.v1",
            "time": f"2019-02-05T00:00:{second:02d}Z",
            "subject": link,
            "data": {"status": "up", "latency_ms": 1.0, "loss_pct": 0.0},
        }
    )


def _tick(second: int) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": f"tick/{second}",
            "source": "/t",
            "type": "clock.tick.v1",
            "time": f"2019-02-05T00:00:{second:02d}Z",
        }
    )


def _records(topic: str, partition: int, items: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
             ) -> list[SimpleNamespace]:  # fmt: skip
    return [
        SimpleNamespace(topic=topic, partition=partition, offset=o, key=k, value=v, headers=h)
        for o, (k, v, h) in enumerate(items)
    ]


def test_a_misrouted_reading_is_forwarded_with_its_headers_and_watermark() -> None:
    """A reading on a partition its link does not hash to leaves for the link's partition on
    the repartition topic, key, bytes and headers (its trace context) as they came, with the
    watermark of the partition it reached; no dead letter."""
    from streams.partitions import FORWARD_WATERMARK

    settings = Settings(partitions=3)
    topology = Topology.load(TOPOLOGY)
    link = sorted(topology.links)[0]
    own = partition_for(link.encode(), 3)
    other = (own + 1) % 3
    stage = LinkPartition(topology, Routing(settings), other, DictTable())
    parent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    tick = (TICK_KEY.encode(), _tick(1), [])
    reading = (link.encode(), _reading(link, 2), [("traceparent", parent)])
    out = stage.handle_batch(_records(settings.topic_link_status, other, [tick, reading]))
    forwarded = [
        r for r in out if r.topic == settings.topic_repartition and r.key != b"__watermark__"
    ]
    assert [(r.key, r.value, r.partition) for r in forwarded] == [
        (link.encode(), _reading(link, 2), own)
    ]
    micros = 1549324801 * 1_000_000
    assert forwarded[0].headers == [
        ("traceparent", parent),
        (FORWARD_WATERMARK, str(micros).encode()),
    ]
    assert not [r for r in out if r.topic == settings.topic_deadletter]
    markers = [
        r for r in out if r.topic == settings.topic_repartition and r.key == b"__watermark__"
    ]
    assert sorted(r.partition for r in markers) == sorted({0, 1, 2} - {other})


def test_links_that_reported_on_their_partition_wait_for_no_marker() -> None:
    """Ticks reach stage 2 at once from a partition whose links have all had a reading on it
    (murmur2 producers); while one has not, a tick waits for the other partitions' markers."""
    settings = Settings(partitions=3)
    topology = Topology.load(TOPOLOGY)
    groups = [
        sorted(x for x in topology.links if partition_for(x.encode(), 3) == q) for q in range(3)
    ]
    p = max(range(3), key=lambda q: len(groups[q]))
    links = groups[p]
    assert links
    topic = settings.topic_link_status

    def to_stage2(out: list[Record]) -> list[int]:
        return [
            orjson.loads(r.value)["tick"]
            for r in out
            if r.topic == settings.topic_changes and r.key == b"__watermark__" and r.partition == 0
        ]

    stage = LinkPartition(topology, Routing(settings), p, DictTable())
    some = [(link.encode(), _reading(link, 1), []) for link in links[:-1]]
    out = stage.handle_batch(_records(topic, p, [*some, (TICK_KEY.encode(), _tick(2), [])]))
    assert to_stage2(out) == []  # links[-1] never reported here: its readings may be forwarded
    marker = SimpleNamespace(
        topic=settings.topic_repartition, partition=p, offset=0, key=b"__watermark__", headers=[]
    )
    from streams.codec import encode_watermark
    from streams.partitions import link_source

    micros = 1549324802 * 1_000_000
    for q in (1, 2):
        marker.value = encode_watermark([(micros, "tick/2")], link_source((p + q) % 3))
        out = stage.handle_batch([marker])
    assert to_stage2(out) == [micros]  # both others confirmed the tick
    last = (links[-1].encode(), _reading(links[-1], 3), [])
    out = stage.handle_batch(_records(topic, p, [last, (TICK_KEY.encode(), _tick(4), [])]))
    assert to_stage2(out) == [micros + 2_000_000]  # every link reported: nothing waits


def test_a_forwarded_record_without_its_watermark_is_dead_lettered() -> None:
    settings = Settings(partitions=3)
    topology = Topology.load(TOPOLOGY)
    link = sorted(topology.links)[0]
    own = partition_for(link.encode(), 3)
    stage = LinkPartition(topology, Routing(settings), own, DictTable())
    out = stage.handle_batch(
        _records(settings.topic_repartition, own, [(link.encode(), _reading(link, 2), [])])
    )
    dead = [r for r in out if r.topic == settings.topic_deadletter]
    assert [dict(r.headers)["failover-reason"].split(b":")[0] for r in dead] == [b"internal"]
    assert dead[0].value == _reading(link, 2)


@pytest.mark.parametrize(
    ("partitions", "seed", "restart_every", "batched", "inputs"),
    [
        (3, 21, None, False, consistent_random),
        (4, 22, None, False, wrong_partition),
        (3, 23, 11, False, wrong_partition),
        (4, 24, 53, False, consistent_random),
        (3, 25, None, True, consistent_random),
        (6, 26, 3, True, wrong_partition),
        (2, 27, 2, True, wrong_partition),
        (5, 28, 4, True, consistent_random),
    ],
)
def test_service_inputs_on_any_partition_are_forwarded_and_match_replay(
    partitions: int, seed: int, restart_every: int | None, batched: bool, inputs: Partitioner
) -> None:
    """Overrides, manual records and reconciliations published with another partitioner
    than murmur2 (and readings too) reach their service through the service repartition
    topic, each judged and applied where replay does: the same records, byte for byte, and
    no dead letter more (none ``wrong-partition``)."""
    expected, expected_reasons = oracle()
    settings = Settings(partitions=partitions)
    misrouted = sum(
        1
        for _, raw in read_lines(EVENTS)
        for topic, key, p in route(settings, raw, inputs=inputs)
        if topic in (settings.topic_overrides, settings.topic_feedback)
        and key != TICK_KEY.encode()
        and b"operator.maintenance.v1" not in raw
        and p != partition_for(key, partitions)
    )
    assert misrouted >= (25 if inputs is wrong_partition else 1)
    for binary in (False, True) if batched else (False,):
        got, reasons = simulate(partitions, seed, restart_every, batched, binary=binary,
                                readings=inputs, inputs=inputs)  # fmt: skip
        assert set(got) == set(expected)
        for service, events in expected.items():
            assert got[service] == events, service
        assert reasons == expected_reasons


def _tick_at(stamp: str) -> bytes:
    return orjson.dumps(
        {"specversion": "1.0", "id": f"tick/{stamp}", "source": "/t", "type": "clock.tick.v1",
         "time": stamp}
    )  # fmt: skip


def _micros(stamp: str) -> int:
    from workflows.timeutil import parse_event_time

    return parse_event_time(stamp)


def test_a_forwarded_override_waits_for_the_markers_and_meets_its_service_as_in_replay() -> None:
    """An override on the partition after its service's: forwarded with its headers, where it
    arrived and the watermark of its topic partition, then markers once both input partitions
    of that partition saw each tick. The owner's services reach no tick before every other
    partition's marker for it (a restart in between, from the table, changes nothing), and
    then give what they give for it on their own partition, byte for byte."""
    from streams.codec import encode_watermark
    from streams.partitions import FORWARD_ORIGIN, FORWARD_WATERMARK, input_source, link_source

    override = next(raw for _, raw in read_lines(EVENTS) if b'"operator.override.v1"' in raw)
    service = orjson.loads(override)["subject"]
    stamps = ["2019-02-04T23:15:00Z", "2019-02-04T23:16:00Z", "2019-02-04T23:17:00Z"]
    ticks = [_tick_at(s) for s in stamps]
    settings = Settings(partitions=2)
    topology = Topology.load(TOPOLOGY)
    routing = Routing(settings)
    q = partition_for(service.encode(), 2)
    other = 1 - q
    table = DictTable()
    owner = ServicePartition(topology, routing, q, table)
    # The owner's own sources all reach the last tick: it still waits for the other's marker.
    for p in range(2):
        value = encode_watermark([(_micros(s), f"tick/{s}") for s in stamps], link_source(p))
        assert owner.handle_change(value, b"__watermark__", Origin("changes", q, p)) == []
    tick_key = TICK_KEY.encode()
    for source, topic in ((OVERRIDES_SOURCE, settings.topic_overrides),
                          (FEEDBACK_SOURCE, settings.topic_feedback)):  # fmt: skip
        out = owner.handle_batch(source, _records(topic, q, [(tick_key, t, []) for t in ticks]))
    # Its marker, once both its input partitions saw the ticks.
    assert [(r.topic, r.partition) for r in out] == [(settings.topic_service_repartition, other)]
    assert owner.stage.watermark is None
    sender = ServicePartition(topology, routing, other, DictTable())
    parent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    items = [(tick_key, ticks[0], []), (service.encode(), override, [("traceparent", parent)]),
             *((tick_key, t, []) for t in ticks[1:])]  # fmt: skip
    out = sender.handle_batch(OVERRIDES_SOURCE, _records(settings.topic_overrides, other, items))
    assert [(r.topic, r.key, r.value, r.partition) for r in out] == [
        (settings.topic_service_repartition, service.encode(), override, q)
    ]
    origin = orjson.dumps([settings.topic_overrides, other, 1])
    assert out[0].headers == [
        ("traceparent", parent),
        (FORWARD_ORIGIN, origin),
        (FORWARD_WATERMARK, str(_micros(stamps[0])).encode()),
    ]
    forwarded = out
    feedback = [(tick_key, t, []) for t in ticks]
    out = sender.handle_batch(FEEDBACK_SOURCE, _records(settings.topic_feedback, other, feedback))
    assert [(r.key, r.partition) for r in out] == [(b"__watermark__", q)]
    assert orjson.loads(out[0].value)["source"] == input_source(other)
    log = [(r.key or b"", r.value, list(r.headers)) for r in [*forwarded, *out]]
    records = _records(settings.topic_service_repartition, q, log)
    assert owner.handle_batch(None, records[:1]) == []  # queued: its tick is not reached
    owner.flush()
    owner = ServicePartition(topology, routing, q, table)  # a restart
    got = owner.handle_batch(None, records[1:])
    assert owner.stage.watermark == _micros(stamps[-1])
    assert not [r for r in got if r.topic == settings.topic_deadletter]
    # What the owner gives for the override on its own partition (which replay's parity of
    # the demo covers): the same records, byte for byte.
    mine = ServicePartition(topology, routing, q, DictTable())
    for p in range(2):
        value = encode_watermark([(_micros(s), f"tick/{s}") for s in stamps], link_source(p))
        mine.handle_change(value, b"__watermark__", Origin("changes", q, p))
    own = [(tick_key, ticks[0], []), (service.encode(), override, []),
           *((tick_key, t, []) for t in ticks[1:])]  # fmt: skip
    mine.handle_batch(OVERRIDES_SOURCE, _records(settings.topic_overrides, q, own))
    mine.handle_batch(FEEDBACK_SOURCE, _records(settings.topic_feedback, q, feedback))
    assert mine.stage.watermark is None  # waits for the other partition's marker as well
    want = mine.handle_batch(None, records[1:])
    assert [r.key for r in want].count(service.encode()) >= 3  # transition, command, audit
    assert [(r.topic, r.key, r.value, r.partition) for r in got] == [
        (r.topic, r.key, r.value, r.partition) for r in want
    ]


def test_malformed_records_of_the_service_repartition_topic_are_dead_lettered() -> None:
    """A forwarded input without its headers, one whose service is not the partition's, a
    tick, and a marker of an unknown source: each dead-lettered ``internal``, with its bytes
    and headers as it came."""
    from streams.codec import encode_watermark
    from streams.partitions import FORWARD_ORIGIN, FORWARD_WATERMARK, input_source

    override = next(raw for _, raw in read_lines(EVENTS) if b'"operator.override.v1"' in raw)
    service = orjson.loads(override)["subject"]
    settings = Settings(partitions=2)
    topology = Topology.load(TOPOLOGY)
    q = partition_for(service.encode(), 2)
    stage = ServicePartition(topology, Routing(settings), 1 - q, DictTable())
    good = [(FORWARD_ORIGIN, b'["operator-overrides", 0, 5]'), (FORWARD_WATERMARK, b"none")]
    cases = [
        (service.encode(), override, []),
        (service.encode(), override, [(FORWARD_ORIGIN, b'["x", "0", 5]'), good[1]]),
        (service.encode(), override, good),  # not this partition's service
        (TICK_KEY.encode(), _tick_at("2019-02-04T23:15:00Z"), good),
        (b"__watermark__", encode_watermark([(1, "tick/1")], input_source(1 - q)), []),
    ]
    out = stage.handle_batch(None, _records(settings.topic_service_repartition, 1 - q, cases))
    dead = [r for r in out if r.topic == settings.topic_deadletter]
    assert [dict(r.headers)["failover-reason"].split(b":")[0] for r in dead] == [b"internal"] * 5
    assert [r.value for r in dead] == [value for _, value, _ in cases]
    # Those without a readable origin as they came on the repartition topic, headers first;
    # the others as they came to the partition that forwarded them.
    for r, (_, _, headers) in zip(dead[:2], cases[:2], strict=True):
        assert r.headers[: len(headers)] == headers
        assert (
            dict(r.headers)["failover-source-topic"] == settings.topic_service_repartition.encode()
        )
    for r in dead[2:4]:
        assert dict(r.headers)["failover-source-topic"] == b"operator-overrides"
        assert dict(r.headers)["failover-source-offset"] == b"5"
    assert stage.stage.watermark is None
    assert not stage.sources


_header = st.tuples(
    st.sampled_from(["failover-forward-origin", "failover-forward-watermark", "traceparent"]),
    st.one_of(
        st.binary(max_size=40),
        st.builds(orjson.dumps, st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4)),
        st.builds(
            orjson.dumps,
            st.lists(st.one_of(st.text(max_size=5), st.integers(0, 9), st.none()), max_size=4),
        ),
    ),
)


@given(st.lists(_header, max_size=4))
def test_forward_origin_reads_any_headers_without_raising(headers: list[tuple[str, bytes]]) -> None:
    """Whatever headers a record of the service repartition topic has, its origin is found or
    not (the record dead-lettered ``internal``), never an exception."""
    from streams.partitions import forward_origin

    found = forward_origin(headers)
    assert found is None or isinstance(found, Origin)


@given(
    st.text(min_size=1, max_size=30),
    st.integers(0, 10_000),
    st.integers(0, 2**62),
    st.lists(st.tuples(st.text(max_size=10), st.binary(max_size=10)), max_size=3),
)
def test_a_forwarded_inputs_origin_and_headers_come_back_as_they_went(
    topic: str, partition: int, offset: int, headers: list[tuple[str, bytes]]
) -> None:
    """The headers a stage-2 partition forwards an input with give back, at its service's
    partition, where it arrived and its own headers, whatever they were."""
    from streams.partitions import FORWARD_ORIGIN, FORWARD_WATERMARK, forward_origin

    sent = [*headers, (FORWARD_ORIGIN, orjson.dumps([topic, partition, offset])),
            (FORWARD_WATERMARK, b"none")]  # fmt: skip
    assert forward_origin(sent) == Origin(topic, partition, offset)
    assert sent[:-2] == headers


def test_a_type_on_a_topic_that_does_not_carry_it_is_refused_wrong_topic() -> None:
    """The one table of each type's input topics (``Settings.input_topics``) decides: each
    input type on each input topic is dead-lettered ``wrong-topic`` exactly when the table
    does not put it there, and the reason names the topics that do carry it."""
    from tests.helpers import envelope, override, probe, reconciled, record, tick
    from workflows.inputs import INPUT_TYPES

    settings = Settings(partitions=1)
    topology = Topology.load(TOPOLOGY)
    link, service = sorted(topology.links)[0], sorted(topology.services)[0]
    cancel = {"action": "cancel", "actor": "Rina", "role": "on-call", "reason": "test"}
    events = {
        "link.status.v1": probe(link, 1),
        "clock.tick.v1": tick(2),
        "operator.override.v1": override(service, 3, "force_manual"),
        "operator.maintenance.v1": envelope("operator.maintenance.v1", "m/1", 4, "w", cancel),
        "manual.record.v1": record(service, 5, "r1"),
        "reconcile.completed.v1": reconciled(service, 6, ["r1"]),
    }
    assert set(events) == set(INPUT_TYPES)
    sources = {settings.topic_overrides: OVERRIDES_SOURCE, settings.topic_feedback: FEEDBACK_SOURCE}
    routing = Routing(settings)
    for topic in (settings.topic_link_status, *sources):
        for type_, event in events.items():
            raw, key = orjson.dumps(event), str(event.get("subject", TICK_KEY)).encode()
            origin = Origin(topic, 0, 0)
            if topic in sources:
                stage = ServicePartition(topology, routing, 0, DictTable())
                out = stage.handle_input(sources[topic], raw, key, origin)
            else:
                out = LinkPartition(topology, routing, 0, DictTable()).handle(raw, key, origin)
            reasons = [
                dict(r.headers)["failover-reason"].decode()
                for r in out
                if r.topic == settings.topic_deadletter
            ]
            carried = settings.input_topics(type_)
            wrong = [r for r in reasons if r.startswith("wrong-topic: ")]
            if topic in carried:
                assert wrong == [], (topic, type_)
            else:
                assert wrong == [
                    f"wrong-topic: {type_} is read from {' and '.join(carried)}, not {topic}"
                ], (topic, type_)
