"""Exactly-once on faust: what faust-streaming 0.15.3 gets wrong for this engine, and the fix.

faust's exactly-once mode keeps one transactional producer per assigned partition number
(``{app_id}-{group}-{partition}``) and commits each input partition's offsets through the
producer of that partition. But it picks the producer for an *output* record by the record's
*destination* (``TransactionManager.send``, faust/transport/consumer.py:285-310:
``key_partition(topic, key, partition)`` then ``group_for_topic(topic)``), not by the input
that caused it. So:

1. A record that stage 1 sends, while handling link-status partition ``p``, to partition
   ``q != p`` of the changes topic goes into the transaction of producer ``q``. That
   transaction commits whenever partition ``q``'s *own* offsets are committed
   (``Producer.commit_transactions`` only touches producers that have offsets to commit,
   faust/transport/drivers/aiokafka.py:1293-1322), not with ``p``'s offsets: the input can
   be committed while its output is not, and a crash loses the output. With two workers,
   producer ``q`` may not even exist in this process: ``ProducerSendError``.
2. A record to a topic the consumer does not subscribe to (commands, transitions, dead
   letters) has no partition in the consumer's metadata (``key_partition`` returns None),
   so it goes out through the plain, non-transactional producer (faust-streaming/faust#177): a crash
   after it leaves duplicates, and read_committed consumers see it before its transaction
   commits. (Had the topic been in the consumer's metadata, ``group_for_topic`` would raise
   ``KeyError``: only subscribed topics are in the assignor's groups.)
3. Table writes go through ``Topic.send_soon`` (faust/tables/base.py:266-288), a buffer
   drained by a background task, and the commit does not drain it first
   (``Consumer._commit_offsets``, faust/transport/consumer.py:1039-1080, flushes only when
   *not* transactional): an offset can be committed before the state change it caused is in
   the transaction.
4. The periodic commit snapshots the acked offsets (``_filter_committable_offsets``) and then
   commits the producer's open transaction, while agents keep running between the two: records
   of an input not yet acked at the snapshot are committed without its offset. After a crash
   the input is processed again and its records appear twice.

Table recovery has bugs of its own that lose state or inputs after a restart; they are patched
in :mod:`streams.patches.recovery`, with every other patch of faust and aiokafka
(:mod:`streams.patches`, docs/patches.md).

With faust's own routing, the kill test (tests/kafka/test_engine.py) fails: after two
SIGKILLs the services' transitions differ from replay's.

What this module does instead, the Kafka Streams way (one producer per input partition):

- :meth:`Outbox.send` sends every record an input causes (outputs, dead letters, internal
  records *and* table changelog records) through the transactional producer that commits the
  input's own partition, ``{app_id}-{group_for_topic(input topic)}-{input partition}``, with
  an explicit destination partition. ``await`` returns once the record is in the producer's
  batch; aiokafka sends every pending batch before ``EndTxn`` (``Sender``, ``flush_for_commit``).
- :attr:`Outbox.lock` is held while a batch of inputs is handled, and the consumer's
  ``force_commit`` is wrapped to hold it too (:meth:`Outbox.install`). The batch path marks
  a batch done right after the lock is released, with no ``await`` between
  (:mod:`streams.batches`). So when a commit takes its snapshot, every batch is either
  handled and done, or not started: the transaction holds exactly the records of the
  offsets it commits. Right before the commit, still under the lock,
  :attr:`Outbox.before_commit` sends the state the batches since the last commit changed.
- No transaction commits before the broker has accepted every record in it. aiokafka does
  not make a refused record fail its transaction (``SendProduceReqHandler`` fails the batch's
  futures, ``TransactionManager`` stays ``IN_TRANSACTION``: unlike Java's producer, it has no
  abortable state for a refused produce), so ``EndTxn`` commits the offsets of an input
  whose output the broker refused (``MESSAGE_TOO_LARGE`` from a topic's
  ``max.message.bytes``, an authorization error...), and the record is gone. The outbox
  counts, per transaction, the records the broker has not answered yet, and the commit
  (:mod:`streams.patches.commit`) awaits that count (:meth:`Outbox.confirm`) between
  ``TxnOffsetCommit`` and ``EndTxn``: the last moment before the commit, on the one path
  every commit takes. A refusal aborts that transaction (its offsets included) and every
  other open one, and stops the worker with an error naming the topic, the partition, the
  record's size and the broker's answer; the next worker handles the inputs again from the
  last commit. At-least-once waits for every record before it commits offsets, the same way.
- A failed send, or an input whose handling raised, is fatal before the next commit: the
  worker stops, and the next one starts from the last commit, instead of committing past a
  lost record (faust acks an input whose handling raised; at-least-once needs this too).

Ticks are not caused by an input: the ticker sends them with the plain idempotent producer
(in a transaction they would stay invisible until some unrelated commit of that partition).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from functools import partial
from typing import Any, Final, NamedTuple

from streams.codec import Headers
from streams.partitions import Record

__all__ = ["ABORT_TIMEOUT", "Outbox", "OutboxError", "Tombstone", "refusal"]

_log = logging.getLogger(__name__)


class Tombstone(NamedTuple):
    """A record with no value: a table's key deleted (the compacted changelog forgets it)."""

    topic: str
    key: bytes
    value: None
    partition: int
    headers: Headers


class OutboxError(RuntimeError):
    """A record could not be produced; the inputs that caused it must not be committed."""


#: Seconds the worker gives the broker to abort its open transactions after a refusal (the
#: next owner of the partitions aborts them anyway when it starts its producers).
ABORT_TIMEOUT: Final = 30.0


class _Deliveries:
    """One transaction's records since its last commit: how many the broker has not answered
    yet, the first it refused, and who waits for the count to reach zero."""

    __slots__ = ("outstanding", "refused", "waiter")

    def __init__(self) -> None:
        self.outstanding = 0
        self.refused: OutboxError | None = None
        self.waiter: asyncio.Future[None] | None = None


def refusal(record: Record | Tombstone, exc: BaseException) -> OutboxError:
    """The error that says which record the broker refused, and what to do about it."""
    size = len(record.value or b"") + len(record.key or b"")
    size += sum(len(name) + len(value) for name, value in record.headers)
    return OutboxError(
        f"the broker refused a record of {size} bytes (key, value and headers) for topic "
        f"{record.topic!r} partition {record.partition}: {exc!r}. Its transaction was "
        "aborted: no input since the last commit is committed, and the next worker handles "
        "them again. A size error means the topic's max.message.bytes was lowered below "
        "what the worker checked at start; raise it (kafka-configs --alter --entity-type "
        "topics --add-config max.message.bytes=...) and restart the worker"
    )


class Outbox:
    """Sends the records caused by an input in the input partition's transaction."""

    def __init__(self, app: Any, *, exactly_once: bool) -> None:
        self.app = app
        self.exactly_once = exactly_once
        self.lock = asyncio.Lock()
        self.failure: BaseException | None = None
        self.sent = 0
        #: By transactional id (``None``: not exactly-once), the records sent by inputs since
        #: their transaction's last commit: nobody sees those records before it.
        self._pending: dict[str | None, _Deliveries] = {}
        #: Cleared once faust ends its transactions without starting new ones (it does so
        #: when it stops, and during a rebalance until it begins them again): inputs must
        #: wait, their records would have no transaction to go into.
        self.open = asyncio.Event()
        self.open.set()
        #: Called under :attr:`lock` right before each commit, to :meth:`send` what must be
        #: in the transaction with the offsets (the state the inputs since the last changed).
        #: Its argument is the commit's partitions (``None``: every partition).
        self.before_commit: Callable[[Collection[Any] | None], Awaitable[None]] | None = None

    async def acquire(self) -> None:
        """Take :attr:`lock` for one input, once transactions are open."""
        while True:
            await self.open.wait()
            await self.lock.acquire()
            if self.open.is_set():
                return
            self.lock.release()

    def reopen(self) -> None:
        """faust began transactions again (after a rebalance)."""
        self.open.set()

    def uncommitted(self) -> bool:
        """Records were sent since their transaction's last commit (under exactly-once,
        nobody sees them yet)."""
        return bool(self._pending)

    def waiting(self) -> frozenset[str | None]:
        """The transactional ids of the records :meth:`uncommitted` means."""
        return frozenset(self._pending)

    async def confirm(self, transactional_id: str | None) -> None:
        """Return once the broker has accepted every record sent in ``transactional_id``'s
        transaction since its last commit.

        Raises:
            OutboxError: the broker refused one of them (the first, named).
        """
        deliveries = self._pending.get(transactional_id)
        if deliveries is None:
            return
        while deliveries.outstanding:
            waiter = deliveries.waiter = asyncio.get_running_loop().create_future()
            await waiter
        if deliveries.refused is not None:
            raise deliveries.refused

    def transactional_id(self, topic: str, partition: int) -> str | None:
        """The id faust commits ``topic``/``partition``'s offsets with (``TransactionManager
        .commit``, faust/transport/consumer.py:330-354); ``None`` when not exactly-once."""
        if not self.exactly_once:
            return None
        group = self.app.assignor.group_for_topic(topic)
        return f"{self.app.conf.id}-{group}-{partition}"

    async def send(
        self, records: Iterable[Record | Tombstone], source_topic: str, source_partition: int
    ) -> None:
        """Hand ``records`` to the producer that commits the source partition's offsets."""
        if self.failure is not None:
            raise OutboxError("an earlier record could not be produced") from self.failure
        producer = self.app.producer
        transactional_id = self.transactional_id(source_topic, source_partition)
        deliveries = self._pending.get(transactional_id)
        created = deliveries is None
        if deliveries is None:
            deliveries = self._pending[transactional_id] = _Deliveries()
        delivered = self._delivered
        sent = self.sent
        for record in records:
            future = await producer.send(
                record.topic,
                record.key,
                record.value,
                record.partition,
                None,
                record.headers or None,
                transactional_id=transactional_id,
            )
            deliveries.outstanding += 1
            future.add_done_callback(partial(delivered, deliveries, record))
            self.sent += 1
        if created and self.sent == sent:
            del self._pending[transactional_id]  # nothing sent: nothing to commit

    async def send_plain(self, records: Iterable[Record]) -> None:
        """Send records outside any transaction (the ticker's), and wait for delivery."""
        producer = self.app.producer
        futures = [
            await producer.send(r.topic, r.key, r.value, r.partition, None, r.headers or None)
            for r in records
        ]
        await asyncio.gather(*futures)

    def fail(self, exc: BaseException) -> None:
        """An input could not be handled: commit nothing more (faust acks an input whose
        handling raised, faust/streams.py:1336-1348, so its offset would be committed
        without its records). The open transactions are aborted when the next worker starts
        producers with the same ids."""
        if self.failure is None:
            self.failure = exc

    def _delivered(
        self, deliveries: _Deliveries, record: Record | Tombstone, future: asyncio.Future[Any]
    ) -> None:
        """The broker answered for ``record`` (a done callback of its send future)."""
        deliveries.outstanding -= 1
        if future.cancelled():
            exc: BaseException | None = asyncio.CancelledError()
        else:
            exc = future.exception()
        if exc is not None:
            error = refusal(record, exc)
            if deliveries.refused is None:
                deliveries.refused = error
            if self.failure is None:
                # A record cancelled by the stop is no refusal: keep that case apart.
                self.failure = exc if isinstance(exc, asyncio.CancelledError) else error
                _log.error("not committing, stopping: %s", error)
        if not deliveries.outstanding:
            waiter = deliveries.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def _ready_to_commit(self) -> bool:
        if isinstance(self.failure, asyncio.CancelledError):
            # A batch was cut short by the worker stopping: its partition's open
            # transaction is aborted by the next owner, which handles it again.
            _log.warning("not committing: a batch was cut short by the stop")
            return False
        if isinstance(self.failure, OutboxError):  # a refused record
            await self._refused(self.failure)
            return False
        if self.failure is not None:
            await self.app.crash(OutboxError(f"not committing: {self.failure!r}"))
            return False
        return True

    async def _refused(self, exc: BaseException) -> None:
        """A record was refused, or could not be sent, while committing: abort every open
        transaction (nothing in them may be committed now), take no more input, stop."""
        if self.failure is None:
            self.failure = exc
        self.open.clear()
        producer = self.app.producer
        open_ids = [
            tid
            for tid, transaction in getattr(producer, "_transaction_producers", {}).items()
            if transaction._txn_manager.is_in_transaction()
        ]
        if open_ids:
            aborts = asyncio.gather(*(producer.abort_transaction(t) for t in open_ids))
            try:
                await asyncio.wait_for(aborts, ABORT_TIMEOUT)
            except Exception as error:  # the next owner's producers abort them
                _log.warning("could not abort the open transactions: %r", error)
        _log.error("stopping before any further commit: %s", exc)
        await self.app.crash(exc if isinstance(exc, OutboxError) else OutboxError(repr(exc)))

    def _committed(self, topics: Collection[Any] | None) -> None:
        if topics is None:
            self._pending.clear()
        else:
            for tp in topics:
                self._pending.pop(self.transactional_id(tp.topic, tp.partition), None)

    def _record_commit(self, seconds: float) -> None:
        tracing = getattr(self.app, "tracing", None)
        if tracing is not None:
            tracing.telemetry.record_stage("commit", seconds)

    def install(self) -> None:
        """Make the consumer's commits wait for the input being handled (see module doc), and
        commit at a rebalance before faust forgets the offsets to commit."""
        consumer = self.app.consumer
        original: Callable[..., Awaitable[bool]] = consumer.force_commit

        async def force_commit(topics: Any = None, start_new_transaction: bool = True) -> bool:
            """``topics``: the partitions (faust TPs) to commit, ``None`` for every one. One
            input partition's transaction commits its offsets, so committing some partitions
            leaves the others' records in their open transactions, to commit later."""
            async with self.lock:
                if self.exactly_once and not self.open.is_set():
                    # faust commits a second time on stop (App.on_stop, then Consumer.on_stop,
                    # both through wait_empty); its transactions ended with the first.
                    return False
                if not await self._ready_to_commit():
                    return False
                started = time.perf_counter()
                try:
                    if self.before_commit is not None:
                        await self.before_commit(topics)
                    if not self.exactly_once:
                        # at-least-once: records accepted before their offsets are committed.
                        await self.app.producer.flush()
                        await self.confirm(None)
                    started = time.perf_counter()
                    # Under exactly-once, each transaction confirms its records right before
                    # it commits (streams/patches/commit.py), and raises OutboxError if refused.
                    committed = await _uncancellable(
                        original(topics, start_new_transaction=start_new_transaction)
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    await self._refused(exc)
                    return False
                if committed:
                    # Under exactly-once, the outputs of every input since the last commit
                    # become visible only now: this is the engine's visibility latency.
                    self._record_commit(time.perf_counter() - started)
                    self._committed(topics)  # before_commit's records included
                if self.exactly_once and not start_new_transaction:
                    self.open.clear()
                return committed

        consumer.force_commit = force_commit
        revoke: Callable[[Any], Awaitable[None]] = consumer.on_partitions_revoked

        async def on_partitions_revoked(revoked: Any) -> None:
            """Commit what was handled *before* faust forgets it. faust's
            ``Consumer.on_partitions_revoked`` (faust/transport/consumer.py:641-663) drops
            the revoked partitions' acked offsets first, and only then runs the app's
            handler, whose commit (``App._on_partitions_revoked`` -> ``wait_empty`` ->
            ``commit_and_end_transactions``) so finds no offset to commit. The inputs handled
            since the last commit stayed uncommitted (they are read again after the
            rebalance), while their records and the state :attr:`before_commit` flushed for
            them stayed in transactions left open across it: faust's ``begin_transaction``
            of a partition the worker keeps fails on the open one ("Invalid state transition
            IN_TRANSACTION"), and the next commit would commit the old handling's records
            with the new one's. Meanwhile the tables' recovery reads up to the last stable
            offset, which that open transaction holds back, over a store that already has
            the flushed state: seen in a worker expelled from its group and rejoining, whose
            rebuilt stage had an older watermark than the state it had flushed. Committed
            here (``start_new_transaction=False``, as faust's own commit would), every
            transaction holds exactly the inputs whose offsets it commits, none stays open,
            and no input is handled until the new assignment reopens the outbox."""
            if revoked:
                await consumer.force_commit(start_new_transaction=False)
            await revoke(revoked)

        consumer.on_partitions_revoked = on_partitions_revoked


async def _uncancellable(commit: Awaitable[bool]) -> bool:
    """Run ``commit`` to its end even if the task awaiting it is cancelled meanwhile (a stop
    cancels the task that drains batches, which commits): a commit cut between its
    transactions' EndTxn requests leaves the producers half-way, and the stop's own commit
    then fails (``IllegalOperation: Not in the middle of a transaction``). The cancellation
    is raised once the commit has ended, with the commit lock still held until then."""
    task = asyncio.ensure_future(commit)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        try:
            await task
        except Exception as exc:  # the stop goes on; the next owner aborts what is open
            _log.warning("a commit interrupted by the stop failed: %r", exc)
        raise
