"""A batch path through faust's consumer: the engine's topics reach it as one list of records
per topic-partition and fetch, not as one faust event at a time.

Why: faust 0.15.3 delivers every record through ``Consumer._drain_messages`` ->
``Conductor.on_message`` -> an ``Event`` in the agent's channel queue -> ``Stream`` -> ack,
and awaits each one through ``Service.wait_first`` (faust/transport/consumer.py:1208-1240),
which creates and cancels tasks per record. Measured with ``bench/kafka.py``, that path
runs at 1-3% of what aiokafka's
``getmany`` + ``orjson`` reads on the same topic: the engine's own code was about 5% of the
worker's time. A batch costs one ``await`` per topic-partition and fetch instead.

What faust still does: group membership and the assignor (co-partitioned topics on one
worker), the transactional producers and the periodic commit, table recovery from the
changelogs, rebalancing, pausing and seeking. The engine registers its input topics with the
app's conductor (so faust subscribes to them and groups them) and a handler per topic
(``app.batch_handlers``). :func:`drain_batches` takes the place of ``Consumer._drain_messages``
for such an app (the patch is :mod:`streams.patches.batch_path`); records of topics with no
handler (the changelogs, while tables recover) take faust's own path, unchanged.

Offsets. A handled batch is done from the first offset not yet read (the committed offset
after a seek) to its last record, transaction markers and aborted records in between
included: they are the reason faust's per-record gap bookkeeping exists, and a batch has no
use for it. ``Consumer._new_offset`` answers for such a partition with the offset after its
last handled batch, :func:`handled_offset` (faust's ``_should_commit`` still refuses anything
not past the committed offset). A handler that returns ``False`` (the consumer generation
changed while the batch waited) handled nothing: the partition is read again from its
committed offset once the rebalance ends (:mod:`streams.patches.recovery` seeks there).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

__all__ = [
    "BatchHandler",
    "drain_batches",
    "forget",
    "handled_offset",
    "rewind",
]

#: Where a consumer keeps, per batch partition, the offset after its last handled batch.
_DONE: Final = "_failover_batch_done"
#: Where a consumer keeps when the batch path last began a commit (``time.monotonic``).
_COMMITTED_AT: Final = "_failover_committed_at"


#: ``handler(tp, records, generation)``: handle ``records`` (one topic-partition, in offset
#: order) if the consumer is still in ``generation``; true once they are handled.
BatchHandler = Callable[[Any, list[Any], int], Awaitable[bool]]

#: faust's diagnostic flag while the consumer fetches (``faust.transport.consumer.
#: CONSUMER_FETCHING``; tests/test_patches.py checks that it still is).
CONSUMER_FETCHING: Final = "FETCHING"


def _done(consumer: Any) -> dict[Any, int]:
    done: dict[Any, int] | None = consumer.__dict__.get(_DONE)
    if done is None:
        done = consumer.__dict__[_DONE] = {}
    return done


def forget(consumer: Any) -> None:
    """Partitions were revoked (every one: aiokafka's rebalances are eager): forget their
    handled offsets, faust forgets its own acks then too (``on_partitions_revoked``)."""
    _done(consumer).clear()


def handled_offset(consumer: Any, tp: Any) -> int | None:
    """The offset to commit for ``tp``, a batch partition: the one after its last handled
    batch (``None``: no batch of ``tp`` handled since the last rebalance)."""
    done = consumer.__dict__.get(_DONE)
    if done is not None:
        offset = done.get(tp)
        if offset is not None:
            return int(offset)
    return None


async def rewind(self: Any, tps: Iterable[Any]) -> None:
    """Records of ``tps`` were fetched and not handled: fetch them again, from the first
    offset not handled (``_read_offset``: the committed offset after a seek, the offset after
    the last handled batch since), or from the beginning where there is none.

    The consumer's position moved past them when they were handed out, so dropping them
    loses them for good unless something seeks back. faust's own seek does not cover every
    case: aiokafka's ``seek_to_committed`` does not move a partition whose committed offset
    is 0 or none (aiokafka/consumer/consumer.py: ``if offset and offset > 0``), and records
    dropped after a rebalance's seek (a batch that waited for the outbox through the
    rebalance) are past it. Seen in the kill and two-worker tests, about one run in four on a
    fresh broker: a worker handled nothing more of a partition and committed nothing.
    """
    from aiokafka import TopicPartition  # type: ignore[import-untyped]  # not faust's TP

    thread = self._thread
    assigned = self.assignment()
    for tp in tps:
        if tp not in assigned:
            continue
        offset = self._read_offset[tp]
        partition = TopicPartition(tp.topic, tp.partition)
        try:
            # In the consumer's own thread (faust's call_thread): aiokafka's seek drops the
            # fetcher's buffer for the partition, which that thread may be iterating.
            if offset is None:
                await thread.seek_to_beginning(partition)
            else:
                await thread.seek_wait({partition: offset})
        except Exception as exc:  # revoked meanwhile: the next owner seeks
            self.log.warning(f"cannot rewind {tp}: {exc!r}")


async def _maybe_commit(self: Any) -> None:
    """Commit everything if the last commit of everything began ``commit_interval`` ago or
    more; else, if the batches handled since sent records, commit at once the transactions
    that hold them (under exactly-once they are visible only once committed, so there is
    nothing to wait for), and only those.

    Measured by bench/kafka.py (c) (5,000 events/s, ticks and commits every 20 ms, 2
    partitions) with a prototype of this rule that also committed after batches that sent
    nothing: override to first command p50 76 -> 59 ms, p99 145 -> 125 ms; (b) was not
    slower (a backlog's batches are large, so commits stay few). faust's commit timer sleeps
    the whole interval *after* each commit (mode's ``itertimer`` in
    ``Consumer._commit_handler``): a 50 ms interval committed every 130 ms. The timer still
    commits while no input arrives."""
    now = time.monotonic()
    if now - self.__dict__.get(_COMMITTED_AT, -math.inf) >= self.commit_interval:
        self.__dict__[_COMMITTED_AT] = now
        await self.commit()
        return
    outbox = getattr(self.app, "outbox", None)
    if outbox is None or not outbox.uncommitted():
        return
    if not outbox.exactly_once:  # one commit for everything
        await self.commit()
        return
    waiting = outbox.waiting()
    # Only the transactions that hold records. A tick reaches every input partition, and
    # the stage-2 transactions, which mostly carry only offsets and state, committed on
    # every tick: in bench/kafka.py (c) at 6 partitions, 5,252 transactions in a run, now
    # 3,546, and stage 2's state written to its changelog every 0.5 s instead of every tick.
    tid = outbox.transactional_id
    await self.commit({tp for tp in self._acked if tid(tp.topic, tp.partition) in waiting})


async def _batch(self: Any, tp: Any, records: list[Any], handler: BatchHandler, gen: int) -> bool:
    read = self._read_offset
    first = read[tp]  # after a seek: the committed offset, the next one to handle
    if first is not None and records[0].offset < first:
        records = [r for r in records if r.offset >= first]
        if not records:
            return False
    commit_every = self._commit_every
    if commit_every is not None and self._n_acked >= commit_every:
        self._n_acked = 0
        await self.commit()
    if not await handler(tp, records, gen):
        return False
    after = records[-1].offset + 1
    read[tp] = after
    _done(self)[tp] = after
    self._acked.setdefault(tp, [])  # the commit looks only at partitions with an entry
    self._n_acked += len(records)
    return True


class _Message:
    """What faust's stores read of a changelog event's message."""

    __slots__ = ("key", "offset", "partition", "topic", "tp", "value")

    def __init__(self, tp: Any, record: Any) -> None:
        self.tp = tp
        self.topic = record.topic
        self.partition = record.partition
        self.offset = record.offset
        self.key = record.key
        self.value = record.value


class _ChangelogEvent:
    """A changelog record as faust's ``Table.apply_changelog_batch`` reads it (both stores:
    ``event.key``, ``event.value``, ``event.message.{tp,partition,offset,value}``). The
    engine's tables are raw bytes, so the record's key and value are the event's."""

    __slots__ = ("key", "message", "value")

    def __init__(self, tp: Any, record: Any) -> None:
        self.message = _Message(tp, record)
        self.key = record.key
        self.value = record.value


def _position(self: Any, tp: Any) -> int | None:
    """The aiokafka consumer's fetch position of ``tp`` (past control records)."""
    try:
        state = self._thread._ensure_consumer()._subscription.subscription.assignment
        return int(state.state_value(tp).position)
    except Exception:  # not assigned, no position yet, another driver: do without
        return None


def _restore(self: Any, tp: Any, records: list[Any]) -> bool:
    """Apply a changelog batch of a table being recovered, as faust's
    ``Recovery._slurp_changelogs`` does event by event (faust/tables/recovery.py:829-905):
    the store gets the records, the recovery its progress. False if ``tp`` is no partition
    the recovery is restoring (then faust's own path takes the records).

    faust's per-event path reads some 11,000 changelog records a second here (bench/kafka.py
    (d): 121,012 records in 11 s); a batch goes to the store in one call. And where the
    changelog ends with a transaction marker, which no consumer ever sees, faust waits two
    5 s timeouts before it concludes (``detect_aborted_tx``): here a partition whose fetch
    position reached the end is done at once.
    """
    recovery = self.app.tables.recovery
    if tp in recovery.active_tps:
        offsets = recovery.active_offsets
        highwater = recovery.active_highwaters.get(tp)
    elif tp in recovery.standby_tps:
        offsets = recovery.standby_offsets
        highwater = None
    else:
        return False
    seen = offsets.get(tp)
    if seen is not None:
        records = [r for r in records if r.offset > seen]
    if records:
        recovery.tp_to_table[tp].apply_changelog_batch([_ChangelogEvent(tp, r) for r in records])
        offsets[tp] = records[-1].offset
        self._read_offset[tp] = records[-1].offset
    if highwater is not None and (offsets.get(tp) or -1) < highwater:
        position = _position(self, tp)
        if position is not None and position > highwater:
            offsets[tp] = highwater  # only markers or aborted records were left
    return True


async def _one_by_one(self: Any, tp: Any, records: list[Any]) -> None:
    """faust's own loop body (faust/transport/consumer.py:1215-1240) for one partition."""
    read = self._read_offset
    acks_enabled_for = self.app.topics.acks_enabled_for
    commit_every = self._commit_every
    self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
    for number, record in enumerate(records):
        if not self.flow_active:
            return
        if number % 100 == 99:
            await asyncio.sleep(0)
        message = self._to_message(tp, record)
        offset = message.offset
        r_offset = read[tp]
        if r_offset is None or offset >= r_offset:
            gap = offset - (r_offset or 0)
            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                await self._add_gap(tp, r_offset + 1, offset)
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await self.commit()
            await self.wait_first(self.callback(message), self.suspend_flow.wait())
            read[tp] = offset


async def drain_batches(self: Any, fetcher: Any) -> None:
    """``Consumer._drain_messages`` for an app with batch handlers, handing each
    topic-partition's records to its handler (see the module doc)."""
    handlers: dict[str, BatchHandler] = self.app.batch_handlers
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    app = self.app
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            self.diag.set_flag(CONSUMER_FETCHING)
            records, active = await self._wait_next_records(1.0)
            await asyncio.sleep(0)
            if records is None or self.should_stop:
                continue
            if not self.flow_active:
                # faust's getmany: records fetched while the flow stopped are dropped, and
                # the partitions are sought back to their committed offsets.
                try:
                    await self.perform_seek()
                except Exception as exc:
                    self.log.warning(f"exception performing seek when flow not active {exc}")
                await rewind(self, records)
                continue
            generation = app.consumer_generation_id
            buffered = self._buffered_partitions
            handled = False
            dropped: list[Any] = []
            pending = list(records.items())
            for number, (tp, batch) in enumerate(pending):
                if not self.flow_active or app.consumer_generation_id != generation:
                    dropped.extend(tp for tp, _ in pending[number:])
                    break
                if not batch:
                    continue
                if active is not None and tp not in active and tp not in buffered:
                    dropped.append(tp)  # paused since the fetch
                    continue
                handler = handlers.get(tp.topic)
                if handler is None:
                    if not (self._is_changelog_tp(tp) and _restore(self, tp, batch)):
                        await _one_by_one(self, tp, batch)
                elif await _batch(self, tp, batch, handler, generation):
                    handled = True
                elif batch[-1].offset >= (self._read_offset[tp] or 0):
                    dropped.append(tp)  # an earlier generation's: not handled
            if dropped:
                await rewind(self, [tp for tp in dropped if not self._is_changelog_tp(tp)])
            if handled:
                await _maybe_commit(self)
            self.diag.unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        self.diag.unset_flag(CONSUMER_FETCHING)
