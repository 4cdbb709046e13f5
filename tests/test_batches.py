"""streams/batches.py without a broker: offsets of the batch path, and the changelog restore."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest

from streams import batches


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
    assert batches.new_offset(c, tp) == 12
    assert c._read_offset[tp] == 12
    assert tp in c._acked  # the commit looks at partitions with an entry
    # A batch of an earlier generation: handled nothing, committed nothing, read again later.
    assert not await batches._batch(c, tp, [record(13)], handler, 0)
    assert batches.new_offset(c, tp) == 12
    batches.forget(c)  # partitions revoked
    monkeypatch.setattr(batches, "_ORIGINAL_NEW_OFFSET", lambda self, tp: None)
    assert batches.new_offset(c, tp) is None


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

    shim = batches._RecoveryAsyncio()
    assert shim.TimeoutError is asyncio.TimeoutError  # the rest of asyncio is asyncio's
    monkeypatch.setattr(asyncio, "wait_for", wait_for)

    async def get() -> None: ...

    assert await shim.wait_for(get(), timeout=5.0) == "event"
    assert await shim.wait_for(get(), timeout=0.05) == "event"
    assert asked == [batches.RECOVERY_POLL, 0.05]
