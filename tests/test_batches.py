"""streams/batches.py without a broker: offsets of the batch path, and the changelog restore."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streams import batches
from streams.partitions import Record
from streams.patches import batch_path, recovery


class FakeProducer:
    async def send(self, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()


def record(offset: int, key: bytes = b"k", value: bytes = b"v", topic: str = "t") -> Any:
    return SimpleNamespace(topic=topic, partition=0, offset=offset, key=key, value=value)


def consumer() -> Any:
    return SimpleNamespace(
        _read_offset=defaultdict(lambda: None),
        _acked=defaultdict(list),
        _commit_every=None,
        _n_acked=0,
    )


@pytest.mark.asyncio
async def test_a_handled_batch_is_committed_to_its_end_and_a_skipped_one_not_at_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = consumer()
    tp = ("t", 0)
    c._read_offset[tp] = 10  # sought to the committed offset
    handled: list[list[int]] = []

    async def handler(tp: Any, records: list[Any], generation: int) -> bool:
        handled.append([r.offset for r in records])
        return generation == 1

    # Offsets 8 and 9 were handled before the seek: only 10 on; 12 (a marker) is in the batch.
    assert await batches._batch(c, tp, [record(8), record(9), record(10), record(11)], handler, 1)
    assert handled == [[10, 11]]
    assert batches.handled_offset(c, tp) == 12
    assert c._read_offset[tp] == 12
    assert tp in c._acked  # the commit looks at partitions with an entry
    # A batch of an earlier generation: handled nothing, committed nothing, read again later.
    assert not await batches._batch(c, tp, [record(13)], handler, 0)
    assert batches.handled_offset(c, tp) == 12
    batches.forget(c)  # partitions revoked
    assert batches.handled_offset(c, tp) is None
    # faust's _new_offset answers for it again (the patch of streams/patches/batch_path.py).
    monkeypatch.setattr(batch_path, "_original_new_offset", lambda self, tp: 7)
    assert batch_path._new_offset(c, tp) == 7


class FakeTable:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def apply_changelog_batch(self, events: list[Any]) -> None:
        for event in events:
            assert event.message.tp == ("cl", 0)
            self.data[event.key] = event.value


def restoring(highwater: int, position: int | None) -> tuple[Any, FakeTable]:
    table = FakeTable()
    tp = ("cl", 0)
    recovery = SimpleNamespace(
        active_tps={tp},
        standby_tps=set(),
        active_offsets={},
        active_highwaters={tp: highwater},
        standby_offsets={},
        tp_to_table={tp: table},
    )
    state = SimpleNamespace(position=position)
    assignment = SimpleNamespace(state_value=lambda tp: state)
    kafka = SimpleNamespace(_subscription=SimpleNamespace(subscription=SimpleNamespace(
        assignment=assignment)))  # fmt: skip
    c = consumer()
    c.app = SimpleNamespace(tables=SimpleNamespace(recovery=recovery))
    c._thread = SimpleNamespace(_ensure_consumer=lambda: kafka)
    return c, table


def test_a_changelog_batch_goes_to_the_store_and_the_recovery_learns_its_progress() -> None:
    c, table = restoring(highwater=4, position=3)
    tp = ("cl", 0)
    assert batches._restore(c, tp, [record(0, b"a", b"1"), record(1, b"b", b"2")])
    assert c.app.tables.recovery.active_offsets[tp] == 1
    # Records at or below what was applied are not applied again.
    assert batches._restore(c, tp, [record(1, b"b", b"old"), record(2, b"a", b"3")])
    assert table.data == {b"a": b"3", b"b": b"2"}
    assert c.app.tables.recovery.active_offsets[tp] == 2


def test_a_changelog_that_ends_with_a_marker_is_done_when_the_position_passed_it() -> None:
    """Highwater 4 is the marker after the last record (3): faust would wait for an event
    that never comes; the fetch position past the highwater says nothing is left."""
    c, _ = restoring(highwater=4, position=5)
    tp = ("cl", 0)
    assert batches._restore(c, tp, [record(2), record(3)])
    assert c.app.tables.recovery.active_offsets[tp] == 4
    # Position at the highwater: the record there may not have been handed out yet.
    c, _ = restoring(highwater=4, position=4)
    assert batches._restore(c, tp, [record(2), record(3)])
    assert c.app.tables.recovery.active_offsets[tp] == 3


def test_records_of_a_partition_not_being_restored_take_fausts_path() -> None:
    c, _ = restoring(highwater=4, position=5)
    assert not batches._restore(c, ("other", 0), [record(0)])


@pytest.mark.asyncio
async def test_recovery_waits_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    asked: list[float | None] = []

    async def wait_for(awaitable: Any, timeout: float | None) -> str:
        asked.append(timeout)
        awaitable.close()
        return "event"

    shim = recovery._RecoveryAsyncio()
    assert shim.TimeoutError is asyncio.TimeoutError  # the rest of asyncio is asyncio's
    monkeypatch.setattr(asyncio, "wait_for", wait_for)

    async def get() -> None: ...

    assert await shim.wait_for(get(), timeout=5.0) == "event"
    assert await shim.wait_for(get(), timeout=0.05) == "event"
    assert asked == [recovery.RECOVERY_POLL, 0.05]


@pytest.mark.asyncio
async def test_fetched_records_not_handled_are_fetched_again() -> None:
    """From the first offset not handled, or from the beginning where nothing was committed
    (aiokafka's seek_to_committed leaves such a partition past what it dropped)."""
    sought: list[tuple[Any, Any]] = []

    async def seek_to_beginning(tp: Any) -> None:
        sought.append((tp, "beginning"))

    c = consumer()

    async def seek_wait(offsets: dict[Any, int]) -> None:
        sought.extend(offsets.items())

    c._thread = SimpleNamespace(seek_wait=seek_wait, seek_to_beginning=seek_to_beginning)
    from aiokafka import TopicPartition  # type: ignore[import-untyped]

    c.assignment = lambda: {TP("t", 0), TP("t", 1)}
    c.log = SimpleNamespace(warning=lambda text: None)
    c._read_offset[TP("t", 0)] = 24
    await batches.rewind(c, [TP("t", 0), TP("t", 1), TP("t", 9)])  # t/9: revoked meanwhile
    assert sought == [(TopicPartition("t", 0), 24), (TopicPartition("t", 1), "beginning")]
    # aiokafka's seek_to_beginning refuses anything but its own TopicPartition.
    assert all(type(tp) is TopicPartition for tp, _ in sought)


@pytest.mark.asyncio
async def test_a_batch_of_an_earlier_generation_is_fetched_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The drain loop, end to end over fakes: a batch whose handler refuses it (the
    generation changed while it waited) is rewound; a handled one is not."""
    rewound: list[Any] = []

    async def fake_rewind(self: Any, tps: list[Any]) -> None:
        rewound.extend(tps)

    monkeypatch.setattr(batches, "rewind", fake_rewind)
    c = consumer()
    from aiokafka import TopicPartition  # type: ignore[import-untyped]

    a, b = TopicPartition("a", 0), TopicPartition("b", 0)
    fetches = iter([{a: [record(0, topic="a")], b: [record(0, topic="b")]}])
    done: list[bool] = []
    stop = SimpleNamespace(is_set=lambda: bool(done))

    async def wait_next_records(timeout: float) -> tuple[Any, Any]:
        try:
            return next(fetches), None
        except StopIteration:
            done.append(True)
            return {}, None

    async def handler(tp: Any, records: list[Any], generation: int) -> bool:
        return tp[0] == "a"

    c.app = SimpleNamespace(batch_handlers={"a": handler, "b": handler}, consumer_generation_id=1)
    c._stopped = stop
    c._wait_next_records = wait_next_records
    c.flow_active = True
    c.should_stop = False
    c._buffered_partitions = set()
    c._is_changelog_tp = lambda tp: False
    c.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
    c.commit_interval = 1e9
    c.consumer_stopped_errors = ()
    c.transport = SimpleNamespace(app=SimpleNamespace(should_stop=True))
    c.log = SimpleNamespace(info=lambda text: None, exception=lambda *a: None)
    commits: list[Any] = []

    async def commit(topics: Any = None) -> None:
        commits.append(topics)

    c.commit = commit
    await batches.drain_batches(c, SimpleNamespace(_stopped=stop))
    assert commits  # the first commit is due at once, whenever the machine booted
    assert rewound == [b]
    assert batches.handled_offset(c, a) == 1


@pytest.mark.asyncio
async def test_records_waiting_for_a_commit_are_committed_at_once_and_offsets_on_the_interval(
) -> None:  # fmt: skip
    from streams.eos import Outbox

    commits: list[Any] = []
    app = SimpleNamespace(producer=FakeProducer())
    outbox = Outbox(app, exactly_once=False)
    app.outbox = outbox
    c = SimpleNamespace(app=app, commit_interval=3600.0)

    async def commit(topics: Any = None) -> None:
        commits.append(topics)
        outbox._committed(topics)  # what the outbox's force_commit does

    c.commit = commit
    await batches._maybe_commit(c)  # the first: the interval since "never" has passed
    await batches._maybe_commit(c)  # nothing sent, interval not over: no commit
    assert commits == [None]
    await outbox.send([Record("out", b"k", b"v", 0, [])] * 2, "in", 0)
    assert outbox.uncommitted()
    await batches._maybe_commit(c)
    await batches._maybe_commit(c)  # committed already
    assert commits == [None, None]
    c.commit_interval = 0.0
    await batches._maybe_commit(c)  # offsets only, on the interval
    assert commits == [None, None, None]


@pytest.mark.asyncio
async def test_under_exactly_once_only_the_transactions_holding_records_commit_at_once() -> None:
    from streams.eos import Outbox

    commits: list[Any] = []
    groups = {"links": 0, "changes": 1, "overrides": 1}
    app = SimpleNamespace(
        producer=FakeProducer(),
        conf=SimpleNamespace(id="engine"),
        assignor=SimpleNamespace(group_for_topic=groups.__getitem__),
    )
    outbox = Outbox(app, exactly_once=True)
    app.outbox = outbox
    tps = [TP(topic, p) for topic in groups for p in (0, 1)]
    c = SimpleNamespace(app=app, commit_interval=3600.0, _acked={tp: [] for tp in tps})
    c.__dict__[batches._COMMITTED_AT] = time.monotonic()  # the interval is not over

    async def commit(topics: Any = None) -> None:
        commits.append(topics)
        outbox._committed(topics)

    c.commit = commit
    await batches._maybe_commit(c)
    assert commits == []  # ticks read everywhere, nothing sent: offsets wait for the interval
    await outbox.send([Record("changes", b"k", b"v", 1, [])], "links", 0)  # a watermark
    await outbox.send([Record("out", b"k", b"v", 0, [])], "overrides", 1)  # a command
    await batches._maybe_commit(c)
    # links/0's transaction, and stage-2 partition 1's (changes/1 and overrides/1 share it).
    assert commits == [{TP("links", 0), TP("changes", 1), TP("overrides", 1)}]
    await batches._maybe_commit(c)
    assert len(commits) == 1
