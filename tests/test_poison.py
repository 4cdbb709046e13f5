"""A poison input never stops the engine: an input whose handling raises is dead-lettered
``internal-error`` with its original bytes, the state it touched is as before it, and the
engine goes on (workflows/isolation.py). Faults are injected into the core on purpose."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.codec import encode_watermark, tick_event
from streams.config import Settings
from streams.partitions import (
    FEEDBACK_SOURCE,
    OVERRIDES_SOURCE,
    LinkPartition,
    Routing,
    ServicePartition,
    link_source,
)
from tests.test_stream_partitions import DictTable
from workflows.engine import TICK_KEY, Engine
from workflows.isolation import internal_error, restore, slot_getter, snapshot
from workflows.links import LinkStage, LinkState
from workflows.records import DeadLetter, Emitted
from workflows.replay import Origin, read_lines
from workflows.service import ServiceStage, ServiceState
from workflows.timeutil import parse_time
from workflows.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = Topology.load(ROOT / "streams" / "demo" / "ambon.yaml")
EVENTS = ROOT / "streams" / "demo" / "ambon-events.jsonl"
LINES = list(read_lines(EVENTS))


def _event(raw: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return event if isinstance(event, dict) else {}


EVENTS_ = [_event(raw) for _, raw in LINES]
IDS = [e.get("id") for e in EVENTS_]
TYPES = [e.get("type") for e in EVENTS_]
TIMES = [parse_time(e["time"]) if isinstance(e.get("time"), str) else 0 for e in EVENTS_]
INPUTS = ("link.status.v1", "operator.override.v1", "manual.record.v1", "reconcile.completed.v1")
NOT_TICKS = [i for i, t in enumerate(TYPES) if t in INPUTS]
QUEUED = [i for i, t in enumerate(TYPES) if t in INPUTS[1:]]


class Injected(RuntimeError):
    """The fault a test puts into the core."""


def run(lines: list[tuple[int, bytes]]) -> tuple[list[Emitted | DeadLetter], Engine]:
    engine = Engine(TOPOLOGY)
    out: list[Emitted | DeadLetter] = []
    for number, raw in lines:
        engine.feed(raw, None, Origin(EVENTS.name, number))
        out.extend(engine.drain())
    engine.finish()
    out.extend(engine.drain())
    return out, engine


def emitted(out: list[Emitted | DeadLetter]) -> list[bytes]:
    return [orjson.dumps(r.event) for r in out if isinstance(r, Emitted)]


def dead(out: list[Emitted | DeadLetter]) -> list[DeadLetter]:
    return [r for r in out if isinstance(r, DeadLetter)]


BASELINE, _ = run(LINES)
#: The inputs the engine takes (not dead-lettered as they are: a schema error, an unknown
#: service...), the ones a fault in the core can meet.
TAKEN = [
    i
    for i in NOT_TICKS
    if LINES[i][0] not in {d.origin.line for d in dead(BASELINE) if isinstance(d.origin, Origin)}
]


def _fail_on(
    monkeypatch: pytest.MonkeyPatch, cls: type, name: str, when: Callable[..., bool]
) -> None:
    original = getattr(cls, name)

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        if when(*args, **kwargs):
            raise Injected("injected fault\nwith a second line")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, failing)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(index=st.sampled_from(TAKEN))
def test_an_input_that_raises_is_as_if_it_never_came(
    monkeypatch: pytest.MonkeyPatch, index: int
) -> None:
    """Whatever input raises, in stage 1 or when stage 2 applies it: dead-lettered with its
    bytes and line, and every output is what the same file without that line gives."""
    ident = IDS[index]
    with monkeypatch.context() as m:
        if TYPES[index] == "link.status.v1":
            _fail_on(m, LinkStage, "on_status", lambda link, event_id, *_: event_id == ident)
        else:
            _fail_on(m, ServiceStage, "_apply", lambda service, s, item: item.id == ident)
        out, _ = run(LINES)
    letters = [d for d in dead(out) if d.reason.startswith("internal-error")]
    assert len(letters) == 1
    (letter,) = letters
    assert letter.reason.startswith(
        "internal-error: Injected: injected fault\nwith a second line (at test_poison.py:"
    )
    assert letter.reason.endswith(" in failing)")
    assert letter.raw == LINES[index][1]
    assert letter.origin == Origin(EVENTS.name, LINES[index][0])
    without, _ = run(LINES[:index] + LINES[index + 1 :])
    assert emitted(out) == emitted(without)
    assert [d for d in dead(out) if d is not letter] == dead(without)


def _ledger_states(engine: Engine, service: str) -> set[int]:
    ledger = engine.services.states[service].ledger or {}
    return set(ledger.values())


def test_a_transition_that_raises_half_way_leaves_no_record_marked_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The restoration of an offline service marks its paper records sent, then emits their
    reconcile command. If that command raises, the records must stay unsent (else they are
    lost): the service stays as before the tick, the tick is dead-lettered with the service,
    and once the fault is gone the next tick reconciles every record."""
    reconciles = [
        r for r in BASELINE if isinstance(r, Emitted) and r.event["type"] == "failover.reconcile.v1"
    ]
    first = reconciles[0]
    service, records = first.key, first.event["data"]["record_ids"]
    when = parse_time(first.event["time"])
    cut = next(i for i, t in enumerate(TIMES) if t > when)
    original = ServiceStage._command
    armed = [True]

    def failing(self: ServiceStage, svc: Any, s: Any, time: int, type_: str, *rest: Any) -> None:
        if armed[0] and type_ == "failover.reconcile.v1" and svc.id == service:
            raise Injected("the reconcile command cannot be made")
        original(self, svc, s, time, type_, *rest)

    monkeypatch.setattr(ServiceStage, "_command", failing)
    engine = Engine(TOPOLOGY)
    out: list[Emitted | DeadLetter] = []
    for number, raw in LINES[:cut]:
        engine.feed(raw, None, Origin(EVENTS.name, number))
        out.extend(engine.drain())
    failed = [d for d in dead(out) if d.reason.startswith("internal-error")]
    assert failed, "the fault was never reached"
    assert all(d.key == service for d in failed)
    assert _ledger_states(engine, service) == {0}, "records marked sent without a reconcile"
    assert engine.services.states[service].state == "manual"
    assert not [r for r in out if isinstance(r, Emitted) and r.event["type"] ==
                "failover.reconcile.v1" and r.key == service]  # fmt: skip
    armed[0] = False
    for number, raw in LINES[cut:]:
        engine.feed(raw, None, Origin(EVENTS.name, number))
        out.extend(engine.drain())
    engine.finish()
    out.extend(engine.drain())
    sent = [r for r in out if isinstance(r, Emitted) and r.event["type"] ==
            "failover.reconcile.v1" and r.key == service]  # fmt: skip
    assert sent
    assert set(records) <= set(sent[0].event["data"]["record_ids"])


def test_a_link_whose_timer_raises_stops_neither_the_tick_nor_the_other_links(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    victim = sorted(TOPOLOGY.links)[0]
    _fail_on(monkeypatch, LinkStage, "_wake", lambda link, *_: link == victim)
    out, engine = run(LINES)
    failed = [d for d in dead(out) if d.reason.startswith("internal-error")]
    assert failed
    assert {d.key for d in failed} == {victim}
    assert engine.links.watermark is not None
    assert any(isinstance(r, Emitted) for r in out)


def test_fan_out_to_a_service_that_raises_skips_only_that_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    victim = "ektp"
    original = ServiceStage.offer

    def failing(self: ServiceStage, service: str, item: Any, *rest: Any) -> None:
        if service == victim and item.kind == "health":
            raise Injected("offer")
        original(self, service, item, *rest)

    monkeypatch.setattr(ServiceStage, "offer", failing)
    out, _ = run(LINES)
    failed = [d for d in dead(out) if d.reason.startswith("internal-error")]
    assert failed
    assert {d.key for d in failed} == {victim}
    others = [r for r in out if isinstance(r, Emitted) and r.key != victim]
    assert others == [r for r in BASELINE if isinstance(r, Emitted) and r.key != victim]


def test_decode_raising_is_dead_lettered(monkeypatch: pytest.MonkeyPatch) -> None:
    import workflows.inputs as inputs_module

    def broken(*args: Any) -> Any:
        raise Injected("decode")

    monkeypatch.setattr(inputs_module, "decode", broken)
    monkeypatch.setattr(inputs_module, "read_status", broken)  # the entry point tries it first
    engine = Engine(TOPOLOGY)
    engine.feed(LINES[0][1], None, "x")
    (letter,) = engine.drain()
    assert isinstance(letter, DeadLetter)
    assert letter.reason.startswith("internal-error: Injected: decode (at test_poison.py:")
    assert engine.counts["deadletter:internal-error"] == 1


def test_memory_error_is_a_fault_of_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    ident = IDS[QUEUED[0]]

    def exhausted(self: Any, service: str, s: Any, item: Any) -> None:
        raise MemoryError

    monkeypatch.setattr(ServiceStage, "_apply", exhausted)
    with pytest.raises(MemoryError):
        run(LINES)
    assert ident


def test_snapshot_restores_every_slot_and_copies_containers() -> None:
    state = ServiceState()
    state.ledger = {"a": 0}
    state.seen = {"x": 1}
    saved = snapshot(state)
    state.ledger["b"] = 1
    state.ledger["a"] = 2
    state.seen = None
    state.state = "manual"
    restore(state, saved)
    assert (state.ledger, state.seen, state.state) == ({"a": 0}, {"x": 1}, "online")
    state.ledger["c"] = 0
    restore(state, saved)  # the snapshot is still as taken
    assert state.ledger == {"a": 0}


def test_snapshot_copies_the_remembered_ids_which_are_changed_in_place() -> None:
    state = ServiceState()
    state.seen = OrderedDict(x=1)
    state.queued = {"q"}
    saved = snapshot(state)
    state.seen["y"] = 2  # an input applied, then undone
    state.seen.popitem(last=False)
    state.queued.discard("q")
    restore(state, saved)
    assert state.seen == OrderedDict(x=1)
    assert type(state.seen) is OrderedDict
    assert state.queued == {"q"}


def test_internal_error_reason_is_bounded() -> None:
    reason = internal_error(ValueError("x" * 10_000))
    assert reason.startswith("internal-error: ValueError: xxx")
    assert len(reason) < 400
    assert internal_error(KeyError()) == "internal-error: KeyError"
    try:
        restore(ServiceState(), ())  # a fault inside the core: named by its place in it
    except Exception as exc:
        located = internal_error(exc)
    assert re.fullmatch(r"internal-error: ValueError: .* \(at workflows/isolation\.py:\d+ in "
                        r"\w+\)", located), located  # fmt: skip


def _link_states() -> Iterator[Any]:
    out, engine = run(LINES)
    assert out
    yield from engine.links.states.values()


def test_link_state_holds_only_immutable_values() -> None:
    """Stage 1 snapshots a link before every reading without copying anything (one tuple of
    its slots, :func:`slot_getter`): that is only a snapshot while every slot holds an
    immutable value. A LinkState given a list, dict or set must be snapshotted another way."""
    immutable = (int, float, bool, str, type(None))
    getter = slot_getter(LinkState)
    for state in _link_states():
        for value in getter(state):
            if isinstance(value, tuple):
                assert all(isinstance(v, immutable) for v in value), value
            else:
                assert isinstance(value, immutable), value


# -- the Kafka path's partitions (no broker: tests/kafka has the worker on a real one) -----


def _record(topic: str, offset: int, key: bytes, value: bytes, headers: list[Any]) -> Any:
    return SimpleNamespace(
        topic=topic, partition=0, offset=offset, key=key, value=value, headers=headers
    )


def test_stage1_poison_reading_is_dead_lettered_with_its_bytes_and_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(partitions=1)
    stage = LinkPartition(TOPOLOGY, Routing(settings), 0, DictTable())
    i, j = [i for i, t in enumerate(TYPES) if t == "link.status.v1"][:2]
    bad, good = LINES[i][1], LINES[j][1]
    headers = [
        ("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"),
        ("x-probe", b"\xff"),
    ]
    _fail_on(monkeypatch, LinkStage, "on_status", lambda link, event_id, *_: event_id == IDS[i])
    topic = settings.topic_link_status
    records = [
        _record(topic, 7, EVENTS_[i]["subject"].encode(), bad, headers),
        _record(topic, 8, EVENTS_[j]["subject"].encode(), good, []),
    ]
    out = stage.handle_batch(records)
    (letter,) = [r for r in out if r.topic == settings.topic_deadletter]
    assert letter.value == bad
    assert letter.headers[:2] == headers
    reasons = dict(letter.headers[2:])
    assert reasons["failover-reason"].startswith(b"internal-error: Injected: injected fault")
    assert reasons["failover-source-offset"] == b"7"
    assert stage.counts["deadletter:internal-error"] == 1
    assert stage.counts["link.status.v1"] == 2  # the good reading was applied too


def test_stage2_poison_input_is_dead_lettered_and_the_partition_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An override that raises when stage 2 applies it (at the next tick, long after it was
    read): dead-lettered with its bytes and origin in the batch of the tick, the others
    applied as without it."""
    settings = Settings(partitions=1)
    index = next(i for i in QUEUED if TYPES[i] == "operator.override.v1")
    ident = IDS[index]
    _fail_on(monkeypatch, ServiceStage, "_apply", lambda service, s, item: item.id == ident)
    stage = ServicePartition(TOPOLOGY, Routing(settings), 0, DictTable())
    override = LINES[index][1]
    overrides, feedback = settings.topic_overrides, settings.topic_feedback
    subject = EVENTS_[index]["subject"].encode()
    headers = [("x-office", b"\xff\x00 raw"), ("traceparent", b"00-1-2-01")]
    out = stage.handle_batch(OVERRIDES_SOURCE, [_record(overrides, 3, subject, override, headers)])
    assert out == []
    # Queued until the tick, headers included, in the state a restart restores.
    stage.flush()
    restored = ServicePartition(TOPOLOGY, Routing(settings), 0, stage.table)
    stage = restored
    tick_at = TIMES[index] + 1_000_000
    _, tick = tick_event(tick_at)
    key = TICK_KEY.encode()
    out = stage.handle_batch(FEEDBACK_SOURCE, [_record(feedback, 0, key, tick, [])])
    out += stage.handle_batch(OVERRIDES_SOURCE, [_record(overrides, 4, key, tick, [])])
    watermark = encode_watermark([(tick_at, "tick")], link_source(0))
    out += stage.handle_batch(None, [_record(settings.topic_changes, 0, b"__watermark__",
                                              watermark, [])])  # fmt: skip
    (letter,) = [r for r in out if r.topic == settings.topic_deadletter]
    assert letter.value == override
    assert letter.key == subject
    assert letter.headers[:2] == headers
    assert dict(letter.headers)["failover-source-offset"] == b"3"
    assert dict(letter.headers)["failover-reason"].startswith(b"internal-error: Injected")
    assert stage.stage.states[subject.decode()].state == "online"


def test_a_health_change_that_raises_names_its_link_and_cause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fail_on(monkeypatch, ServiceStage, "_apply",
             lambda service, s, item: item.kind == "health" and service == "ektp")  # fmt: skip
    out, _ = run(LINES)
    failed = [d for d in dead(out) if d.reason.startswith("internal-error")]
    assert failed
    assert all(d.key == "ektp" for d in failed)
    assert all("(the health of link '" in d.reason and "after input '" in d.reason for d in failed)
    others = [r for r in out if isinstance(r, Emitted) and r.key != "ektp"]
    assert others == [r for r in BASELINE if isinstance(r, Emitted) and r.key != "ektp"]
