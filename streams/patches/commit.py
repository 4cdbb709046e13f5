"""The commit: every producer's transaction at once, each only once the broker accepted its
records.

Patches ``Producer.commit_transactions`` of faust-streaming 0.15.3 (faust/transport/drivers/
aiokafka.py:1293-1321; :func:`_commit_transactions` is a copy with two changes):

1. All transactions at once, not one after the other. Each takes three round trips
   (AddOffsetsToTxn, TxnOffsetCommit, EndTxn), and with one producer per partition of each
   topic group the sequence held the commit, and with it the outbox lock and every output's
   visibility, for 12 times that. Measured by bench/kafka.py (c).
2. No transaction commits before the broker has accepted every record in it. aiokafka does not
   make a refused record fail its transaction (``SendProduceReqHandler`` fails the batch's
   futures, ``TransactionManager`` stays ``IN_TRANSACTION``), so ``EndTxn`` would commit the
   offsets of an input whose output the broker refused, and the record is gone. Between
   ``TxnOffsetCommit`` and ``EndTxn``, the app's :class:`~streams.eos.Outbox` confirms every
   record of the transaction (:meth:`~streams.eos.Outbox.confirm`); a transaction with a
   refused record is aborted instead, and its :class:`~streams.eos.OutboxError` raised once
   the others are done. streams/eos.py says why, and what the worker does then.

Proved by tests/test_stream_eos.py (the ``_commit_transactions`` tests: a commit waits for
the broker's answers, a refusal aborts only its own transaction) and tests/kafka/
test_refused.py (a record refused by the broker: nothing committed, the worker stops). Upstream:
part 1 is clean (docs/upstream/faust-commit-concurrently.diff); part 2 belongs in aiokafka
(a refused record should make the transaction abortable, as in Java's producer), not faust.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from streams.eos import ABORT_TIMEOUT, Outbox, OutboxError
from streams.patches import _fence

__all__ = ["install"]

_log = logging.getLogger(__name__)


async def _commit_transactions(
    self: Any,
    tid_to_offset_map: Any,
    group_id: str,
    start_new_transaction: bool = True,
) -> None:
    """``Producer.commit_transactions``, every transaction at once, each confirmed by the app's
    outbox before ``EndTxn`` (see the module doc)."""

    outbox: Outbox | None = getattr(self.app, "outbox", None)

    async def commit(transactional_id: str, offsets: Any) -> None:
        async with self._trn_locks[transactional_id]:
            producer = self._transaction_producers.get(transactional_id)
            if producer is None:
                _log.warning("Commit invoked for unknown transaction %s", transactional_id)
                return
            await producer.send_offsets_to_transaction(offsets, group_id)
            if outbox is not None:
                # Every record of the transaction accepted, or no commit (module doc). The
                # batches go out now, lingering or not, as aiokafka's own commit sends them
                # (``Sender._do_txn_commit``: ``flush_for_commit``, which closes them).
                accumulator = getattr(producer, "_message_accumulator", None)
                if accumulator is not None:
                    await accumulator.flush_for_commit()
                try:
                    await outbox.confirm(transactional_id)
                except OutboxError:
                    try:
                        await asyncio.wait_for(producer.abort_transaction(), ABORT_TIMEOUT)
                    except Exception as exc:  # the next owner's producer aborts it
                        _log.warning("could not abort %s: %r", transactional_id, exc)
                    raise
            await producer.commit_transaction()
            if start_new_transaction:
                await producer.begin_transaction()

    results = await asyncio.gather(
        *(commit(t, o) for t, o in tid_to_offset_map.items()), return_exceptions=True
    )
    for result in results:  # every other transaction done first: committed, or not
        if isinstance(result, BaseException):
            raise result


def install() -> None:
    """Put :func:`_commit_transactions` in place (idempotent)."""
    from faust.transport.drivers.aiokafka import Producer

    _fence.replace(Producer, "commit_transactions", _commit_transactions, __name__)
