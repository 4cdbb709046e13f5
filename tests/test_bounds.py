"""What one link or one service keeps is bounded, and past each bound nothing is lost.

The bounds: the ids of one link's readings at one instant, the input ids a service remembers
within ``dedup_horizon`` (``dedup_max_ids``), records for an online-only service (none kept),
the record ids of one reconcile command (paged); and the inbox keeps an input's bytes exactly.
"""

from __future__ import annotations

import heapq
from collections import Counter, OrderedDict
from dataclasses import replace
from typing import Any

import jsonschema_rs
import orjson
from hypothesis import given
from hypothesis import strategies as st

from schemas import load_schema
from streams.codec import Origin
from streams.config import Settings
from streams.partitions import LinkPartition, Record, Routing
from tests.helpers import (
    at,
    dead_letters,
    emitted,
    make_topology,
    override,
    probe,
    raw,
    record,
    run,
    service,
    tick,
)
from tests.test_properties import (
    SERVICE_INPUTS,
    SETTINGS,
    Applied,
    Story,
    outputs,
    run_logged,
    stories,
)
from tests.test_stream_partitions import DictTable
from workflows.engine import Engine
from workflows.health import FEEDBACK, HEALTHY, OVERRIDE
from workflows.links import MAX_IDS_PER_INSTANT, LinkStage, LinkState
from workflows.records import DeadLetter, Emitted
from workflows.service import (
    RECONCILE_PAGE_IDS,
    Input,
    ServiceStage,
    ServiceState,
    reconcile_pages,
)
from workflows.timeutil import parse_time
from workflows.topology import Policy, Topology

T0 = parse_time(at(0))
SECOND = 1_000_000


def _topology(**policy: Any) -> Topology:
    return make_topology(
        {
            "paper": service(["a"], policy=policy or None),
            "counter": service(["a"], offline=False, policy=policy or None),
        }
    )


# ------------------------------------------------------------------- one link, one instant


def test_readings_past_the_bound_at_one_instant_are_dead_lettered_with_their_bytes() -> None:
    topology = _topology()
    flood = [probe("a", 30, "up", id=f"p{i}") for i in range(MAX_IDS_PER_INSTANT + 5)]
    out = run(topology, [tick(0), *flood, tick(60)])
    letters = dead_letters(out)
    assert [letter.raw for letter in letters] == [raw(e) for e in flood[MAX_IDS_PER_INSTANT:]]
    assert {letter.key for letter in letters} == {"a"}
    assert all(letter.reason.startswith("dedup-overflow: link 'a' has 1000 ") for letter in letters)


def test_a_remembered_reading_is_still_a_duplicate_past_the_bound() -> None:
    stage = LinkStage(_topology(), max_ids_per_instant=3)
    assert stage.on_status("a", "p0", T0, "up", None, None) is None
    assert stage.on_status("a", "p1", T0, "down", None, None) is not None  # a change
    assert stage.on_status("a", "p2", T0, "up", None, None) is not None
    assert isinstance(stage.on_status("a", "p3", T0, "down", None, None), str)  # refused
    assert stage.states["a"].raw == HEALTHY  # the refused reading changed nothing
    assert stage.on_status("a", "p1", T0, "down", None, None) is None  # duplicate: dropped
    # The next instant starts afresh.
    assert stage.on_status("a", "p3", T0 + SECOND, "down", None, None) is not None
    assert stage.states["a"].ids == ("p3",)


def test_link_state_round_trip_keeps_the_ids_of_the_instant_in_order() -> None:
    stage = LinkStage(_topology())
    for i in range(5):
        stage.on_status("a", f"p{i}", T0, "up", None, None)
    saved = orjson.loads(orjson.dumps(stage.states["a"].to_json()))
    assert saved[3] == [f"p{i}" for i in range(5)]
    restored = LinkStage(_topology())
    restored.restore("a", LinkState.from_json(saved))
    assert restored.on_status("a", "p4", T0, "down", None, None) is None  # still a duplicate
    assert restored.on_status("a", "p5", T0, "down", None, None) is not None


@given(
    st.integers(1, 6),
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 9), st.sampled_from(["up", "down"])),
        max_size=60,
    ),
)
def test_a_refused_reading_changes_nothing(bound: int, steps: list[tuple[int, int, str]]) -> None:
    """With a bound, the changes are those of the same stream without the refused readings
    (fed to a stage with no bound); a refused reading is one the bound kept out, and only
    readings with an id not yet remembered at their instant are ever refused."""
    topology = _topology()
    bounded = LinkStage(topology, max_ids_per_instant=bound)
    kept: list[tuple[int, str, str]] = []
    changes = []
    for second, number, status in steps:
        time, ident = T0 + second * SECOND, f"p{number}"
        state = bounded.states.get("a")
        known = state is not None and state.newest == time and ident in state.ids
        answer = bounded.on_status("a", ident, time, status, None, None)
        if isinstance(answer, str):
            assert not known
            assert state is not None
            assert len(state.ids) == bound
            continue
        kept.append((time, ident, status))
        if answer is not None:
            changes.append(answer)
    free = LinkStage(topology, max_ids_per_instant=10**9)
    reference = [free.on_status("a", i, t, s, None, None) for t, i, s in kept]
    assert changes == [c for c in reference if c is not None]


# ------------------------------------------------------------------ ids a service remembers


def _item(kind: str, seconds: float, ident: str, data: tuple[Any, ...]) -> Input:
    rank = OVERRIDE if kind == "override" else FEEDBACK
    payload = orjson.dumps({"id": ident})
    return Input(T0 + round(seconds * SECOND), rank, ident, kind, data, payload, None)


def _record(seconds: float, number: int) -> Input:
    return _item("record", seconds, f"r{number}", (f"R{number}",))


def _manual(stage: ServiceStage, service: str = "paper") -> None:
    stage.advance(T0, "t0")
    stage.offer(service, _item("override", 1, "force", ("force_manual", "a", "r", "x")))
    stage.advance(T0 + 2 * SECOND, "t2")
    assert stage.states[service].state == "manual"


def test_remembered_ids_are_bounded_and_an_input_at_or_before_the_floor_is_refused() -> None:
    stage = ServiceStage(_topology(dedup_max_ids=3))
    _manual(stage)
    for n in range(5):
        stage.offer("paper", _record(10 + n, n), T0 + (10 + n) * SECOND, T0 + 2 * SECOND)
    stage.advance(T0 + 20 * SECOND, "t20")
    state = stage.states["paper"]
    assert state.seen is not None
    assert list(state.seen) == ["r2", "r3", "r4"]
    assert state.floor == T0 + 11 * SECOND  # r1's time: r0 and r1 were forgotten
    assert state.ledger is not None
    assert len(state.ledger) == 5
    stage.out.clear()
    watermark = T0 + 20 * SECOND
    stage.offer("paper", _record(10, 0), T0 + 10 * SECOND, watermark)  # a copy of forgotten r0
    stage.offer("paper", _record(11, 99), T0 + 11 * SECOND, watermark)  # new, but at the floor
    stage.offer("paper", _record(12, 2), T0 + 12 * SECOND, watermark)  # remembered: dropped
    stage.offer("paper", _record(12, 7), T0 + 12 * SECOND, watermark)  # new, after the floor
    letters = [r for r in stage.out if isinstance(r, DeadLetter)]
    assert [orjson.loads(r.raw)["id"] for r in letters] == ["r0", "r99"]
    assert all(r.reason.startswith("dedup-overflow: stamped at or before ") for r in letters)
    assert state.queued == {"r7"}


def test_the_floor_lapses_with_the_dedup_horizon() -> None:
    stage = ServiceStage(_topology(dedup_max_ids=1, dedup_horizon="600s"))
    _manual(stage)
    stage.offer("paper", _record(10, 0))
    stage.offer("paper", _record(11, 1))
    stage.advance(T0 + 20 * SECOND, "t20")
    state = stage.states["paper"]
    assert state.floor == T0 + 10 * SECOND  # the override's id, then r0's, were forgotten
    stage.advance(T0 + 700 * SECOND, "t700")  # the floor is now older than the horizon
    assert state.floor is None
    assert state.seen is None  # every id fell out of the horizon


def test_records_for_an_online_only_service_are_not_remembered() -> None:
    topology = _topology()
    flood = [record("counter", 601 + i / 1000, f"R{i}", id=f"r{i}") for i in range(18_000)]
    engine = Engine(topology)
    for event in [tick(0), probe("a", 1, "down"), tick(600), *flood, tick(700)]:
        engine.feed(raw(event))
    letters = [r for r in engine.drain() if isinstance(r, DeadLetter)]
    assert [r.raw for r in letters] == [raw(e) for e in flood]
    assert {r.reason for r in letters} == {"not-applicable: online-only service keeps no ledger"}
    state = engine.services.states["counter"]
    assert state.seen is None
    assert state.inbox is None
    assert len(orjson.dumps(state.to_json())) < 2_000
    engine.feed(raw(flood[0]))  # a copy: refused again at the next tick, not dropped
    engine.feed(raw(tick(800)))
    assert [r.raw for r in engine.drain()] == [raw(flood[0])]


def test_service_state_round_trip_keeps_the_dedup_state() -> None:
    stage = ServiceStage(_topology(dedup_max_ids=2))
    _manual(stage)
    for n in range(4):
        stage.offer("paper", _record(10 + n, n))
    stage.advance(T0 + 20 * SECOND, "t20")
    stage.offer("paper", _record(30, 9))  # waits in the inbox
    before = stage.states["paper"]
    restored = ServiceState.from_json(orjson.loads(orjson.dumps(before.to_json())))
    assert list(restored.seen or ()) == list(before.seen or ())
    assert restored.floor == before.floor
    assert restored.unreconciled == before.unreconciled == 4
    assert restored.queued == {"r9"}


# ---------------------------------------------------------------------- inbox bytes exactly


def test_an_input_waiting_across_a_commit_keeps_its_bytes_exactly() -> None:
    stage = ServiceStage(_topology())
    stage.advance(T0, "t0")
    odd = b'{"id": "r1", "note": "\xff\xfe caf\xc3\xa9"}'  # not UTF-8
    text = '{"id": "r2", "note": "café"}'.encode()
    stage.offer("paper", Input(T0 + SECOND, FEEDBACK, "r1", "record", ("R1",), odd, ["f", 0, 1]))
    stage.offer("paper", Input(T0 + SECOND, FEEDBACK, "r2", "record", ("R2",), text, ["f", 0, 2]))
    saved = orjson.dumps(stage.states["paper"].to_json())
    inbox = orjson.loads(saved)[15]
    assert sorted(entry[5] if isinstance(entry[5], str) else "" for entry in inbox) == [
        "",
        text.decode(),
    ]
    again = ServiceStage(_topology())
    again.restore("paper", ServiceState.from_json(orjson.loads(saved)))
    again.advance(T0 + 2 * SECOND, "t2")  # online: both records are refused
    assert sorted(r.raw for r in again.out if isinstance(r, DeadLetter)) == sorted([odd, text])


def test_an_inbox_saved_as_text_by_an_earlier_version_is_still_read() -> None:
    stage = ServiceStage(_topology())
    stage.advance(T0, "t0")
    stage.offer("paper", _record(1, 1))
    saved = orjson.loads(orjson.dumps(stage.states["paper"].to_json()))
    old = saved[:16]  # no floor; its inbox bytes are text
    assert isinstance(old[15][0][5], str)
    state = ServiceState.from_json(old)
    assert state.inbox is not None
    assert state.inbox[0].raw == _record(1, 1).raw
    assert state.floor is None


# -------------------------------------------------------------------------------- paging


def _long_id(n: int) -> str:
    return f"R{n:07d}-" + "x" * 119  # 128 characters, the most an identifier may have


def _reconciles(topology: Topology, count: int) -> list[dict[str, Any]]:
    stage = ServiceStage(topology)
    _manual(stage)
    for n in range(count):
        stage.offer(
            "paper",
            Input(T0 + 3 * SECOND + n, FEEDBACK, f"r{n}", "record", (_long_id(n),), b"", None),
        )
    stage.offer("paper", _item("override", 5, "release", ("release", "a", "r", "x")))
    stage.advance(T0 + 10 * SECOND, "t10")
    return [
        r.event
        for r in stage.out
        if isinstance(r, Emitted) and r.event["type"] == "failover.reconcile.v1"
    ]


def test_a_reconcile_of_100000_records_is_paged_within_the_bound_every_id_once() -> None:
    topology = _topology(dedup_max_ids=200_000)
    pages = _reconciles(topology, 100_000)
    assert len(pages) == 100
    validator = jsonschema_rs.validator_for(load_schema("failover.reconcile.v1"))
    ids: Counter[str] = Counter()
    for number, event in enumerate(pages, start=1):
        data = event["data"]
        assert (data["page"], data["pages"]) == (number, 100)
        assert len(data["record_ids"]) <= RECONCILE_PAGE_IDS
        assert len(orjson.dumps(event)) < 140_000
        validator.validate(event)
        ids.update(data["record_ids"])
    assert ids == Counter(_long_id(n) for n in range(100_000))
    assert len({event["id"] for event in pages}) == 100
    assert [event["id"] for event in _reconciles(topology, 100_000)] == [e["id"] for e in pages]


def test_a_reconcile_that_fits_in_one_command_is_unchanged() -> None:
    (only,) = _reconciles(_topology(), RECONCILE_PAGE_IDS)
    assert "page" not in only["data"]
    assert "pages" not in only["data"]
    assert len(only["data"]["record_ids"]) == RECONCILE_PAGE_IDS


@given(st.lists(st.text("ab1", min_size=1, max_size=6), unique=True, min_size=1, max_size=3500))
def test_paging_keeps_every_id_once_in_order(ids: list[str]) -> None:
    ordered = sorted(ids)
    pages = list(reconcile_pages(ordered))
    assert [i for _, fields in pages for i in fields["record_ids"]] == ordered
    assert all(len(fields["record_ids"]) <= RECONCILE_PAGE_IDS for _, fields in pages)
    assert len({qualifier for qualifier, _ in pages}) == len(pages)
    if len(pages) > 1:
        assert [(f["page"], f["pages"]) for _, f in pages] == [
            (n, len(pages)) for n in range(1, len(pages) + 1)
        ]
    else:
        assert pages == [("reconcile", {"record_ids": ordered})]


def test_engine_output_of_a_paged_reconcile() -> None:
    topology = _topology(dedup_max_ids=5_000)
    records = [record("paper", 700 + i / 100, f"R{i:05d}", id=f"r{i}") for i in range(2_500)]
    events = [
        tick(0),
        probe("a", 1, "down"),
        tick(600),
        *records,
        tick(800),
        override("paper", 801, "release"),
        tick(900),
    ]
    out = run(topology, events)
    assert dead_letters(out) == []
    pages = emitted(out, "failover.reconcile.v1")
    assert [len(e["data"]["record_ids"]) for e in pages] == [1000, 1000, 500]
    assert [e["data"]["page"] for e in pages] == [1, 2, 3]


# ------------------------------------------------------- the same outputs as before, within


class _Unbounded(ServiceStage):
    """Duplicate detection as it was before the bounds: every input id remembered for
    ``dedup_horizon`` (records for online-only services too, refused when applied), queued
    ids found by a scan of the inbox, forgetting by a scan of every remembered id."""

    def offer(
        self,
        service: str,
        item: Input,
        event_time: int | None = None,
        watermark: int | None = None,
    ) -> None:
        state = self.state_of(service)
        horizon = self._services[service].policy.dedup_horizon
        if item.kind != "health":
            if (
                event_time is not None
                and watermark is not None
                and event_time < watermark - horizon
            ):
                self.out.append(DeadLetter(service, "too-old", item.raw, item.origin))
                return
            if state.seen is not None and item.id in state.seen:
                self._copy(service, item)
                return
        if state.inbox and any(queued.id == item.id for queued in state.inbox):
            self._copy(service, item)
            return
        if state.inbox is None:
            state.inbox = []
        heapq.heappush(state.inbox, item)
        self._pending.add(service)

    def _forget(self, state: ServiceState, time: int, policy: Policy) -> None:
        if state.seen:
            horizon = time - policy.dedup_horizon
            kept = OrderedDict((k, t) for k, t in state.seen.items() if t >= horizon)
            state.seen = kept or None


def _run(topology: Topology, lines: list[bytes], stage: type[ServiceStage]) -> list[Any]:
    engine = Engine(topology)
    engine.services = stage(topology)
    engine.out = engine.services.out
    out: list[Any] = []
    for line in lines:
        engine.feed(line)
        out.extend(engine.drain())
    engine.finish()
    out.extend(engine.drain())
    return out


def _split(out: list[Any]) -> tuple[list[Any], Counter[tuple[str, bytes]], set[bytes]]:
    effects = [r for r in out if isinstance(r, Emitted)]
    refused: Counter[tuple[str, bytes]] = Counter()
    no_ledger: set[bytes] = set()
    for r in out:
        if isinstance(r, DeadLetter):
            if r.reason == "not-applicable: online-only service keeps no ledger":
                no_ledger.add(r.raw)
            else:
                refused[(r.reason.split(":", 1)[0], r.raw)] += 1
    return effects, refused, no_ledger


@SETTINGS
@given(stories())
def test_within_the_bounds_duplicates_are_found_as_before(story: Story) -> None:
    """Same transitions and commands, in the same order, and the same refusals; a record for
    an online-only service is refused as it arrives now (each copy), when applied before."""
    lines = story.with_copies()
    assert _split(_run(story.topology, lines, ServiceStage)) == _split(
        _run(story.topology, lines, _Unbounded)
    )


@SETTINGS
@given(stories(), st.integers(1, 4))
def test_past_the_bound_nothing_is_applied_twice_or_dropped_unseen(
    story: Story, bound: int
) -> None:
    """With a tiny ``dedup_max_ids``: every service input is applied at most once, one never
    applied was dead-lettered, and the copies of one applied are dropped; a run that never
    reached the bound gives the outputs of the default bound."""
    topology = replace(
        story.topology,
        services={
            sid: replace(svc, policy=replace(svc.policy, dedup_max_ids=bound))
            for sid, svc in story.topology.services.items()
        },
    )
    log = run_logged(topology, story.with_copies())
    applied = Counter(
        entry.item.id
        for entry in log
        if isinstance(entry, Applied)
        and entry.item.kind != "health"
        # refused whenever applied, so not remembered: each copy is refused again
        and (entry.item.kind != "record" or topology.services[entry.service].offline)
    )
    assert max(applied.values(), default=1) == 1
    refused = {
        orjson.loads(r.raw)["id"]
        for r in outputs(log)
        if isinstance(r, DeadLetter) and r.raw.startswith(b"{")
    }
    sent = {
        event["id"]
        for event in story.events
        if isinstance(event, dict) and event["type"] in SERVICE_INPUTS
    }
    assert sent <= set(applied) | refused
    overflowed = [
        r
        for r in outputs(log)
        if isinstance(r, DeadLetter) and r.reason.startswith("dedup-overflow")
    ]
    if not overflowed:  # the bound was never reached: the same outputs as without it
        assert outputs(log) == outputs(run_logged(story.topology, story.with_copies()))


def test_a_service_with_many_failing_links_gets_commands_within_their_schemas() -> None:
    links = [f"link-{i:03d}-" + "x" * 118 for i in range(60)]  # 127 characters each
    topology = make_topology(
        {"s": service(links)},
        {link: {"provider": "isp"} for link in links},
    )
    downs = [probe(link, 1, "down") for link in links]
    events = [tick(0), *downs, tick(400), tick(4000), tick(8000)]
    out = run(topology, events)
    commands = [r.event for r in out if isinstance(r, Emitted)]
    types = Counter(event["type"] for event in commands)
    assert types["failover.escalate.v1"] == 2  # office head, then the provider
    for event in commands:
        validator = jsonschema_rs.validator_for(load_schema(event["type"]))
        validator.validate(event)
    (provider,) = [e for e in commands if e["data"].get("to") == "provider"]
    assert provider["data"]["reason"].startswith(f"links {links[0]}, ")
    assert " and " in provider["data"]["reason"]


def test_on_kafka_stage_1_dead_letters_the_reading_past_the_bound_also_after_a_restart() -> None:
    settings = Settings(partitions=1)
    routing = Routing(settings)
    topology = _topology()
    table = DictTable()
    stage = LinkPartition(topology, routing, 0, table)
    readings = [raw(probe("a", 30, "up", id=f"p{i}")) for i in range(MAX_IDS_PER_INSTANT + 1)]
    out: list[Record] = []
    for offset, value in enumerate(readings[:-1]):
        out += stage.handle(value, b"a", Origin(settings.topic_link_status, 0, offset))
    assert [r for r in out if r.topic == settings.topic_deadletter] == []
    again = LinkPartition(topology, routing, 0, table)  # rebuilt from the table
    origin = Origin(settings.topic_link_status, 0, len(readings))
    assert again.handle(readings[0], b"a", origin) == []  # remembered: a duplicate
    (letter,) = again.handle(readings[-1], b"a", origin)
    assert letter.topic == settings.topic_deadletter
    assert letter.value == readings[-1]
    assert dict(letter.headers)["failover-reason"].startswith(b"dedup-overflow: ")
