"""The one rule for ``CONCURRENT_TRANSACTIONS``: a transaction request refused while the
broker still writes the previous transaction's markers is sent again after 3 ms, and the
retries stay out of the log. Patches aiokafka 0.14.0 (aiokafka/producer/sender.py).

Right after a commit, the broker is still writing the transaction's markers, and the next
transaction's first requests are refused until it is done: ``InitProducerId``,
``AddPartitionsToTxn``, ``AddOffsetsToTxn`` and ``EndTxn`` with ``CONCURRENT_TRANSACTIONS``;
``TxnOffsetCommit`` with ``COORDINATOR_NOT_AVAILABLE`` and produce requests with
``NOT_ENOUGH_REPLICAS`` (Kafka 3.6+ verifies the transaction first, and answers old request
versions, aiokafka's, so). aiokafka retries after its ``retry_backoff_ms`` (100 ms), or 20 ms
for ``AddPartitionsToTxn`` while the transaction has no partition yet (``BACKOFF_OVERRIDE``,
sender.py:40 and 512-519, after KAFKA-5477); the markers take a millisecond or two.

1. The rule (:func:`_handle_response`, on each handler of :data:`_MARKERS_PENDING`): when
   every error of the answer is the one that means pending markers, the retry waits
   :data:`TXN_RETRY_BACKOFF`; whatever else aiokafka does with the answer (forget the
   coordinator, keep the partitions already added) it still does. Measured by bench/kafka.py
   (c), ticks and commits every 20 ms, 2 partitions: 23 such answers a second, and the commit
   took p50 / p90 / p99 13.5 / 37 / 62 ms with aiokafka's waits; with the rule, 4.7-5.3 /
   8.4-9.2 / 10.9-12.1 ms (two runs).
2. The same for produce requests (:func:`_produce_response`, ``SendProduceReqHandler``): a
   transactional producer's batches all refused with ``NOT_ENOUGH_REPLICAS`` are retried after
   :data:`TXN_RETRY_BACKOFF` for their first :data:`TXN_FAST_RETRIES` sends; a real shortage of
   in-sync replicas, which answers the same, then waits the usual backoff. Measured: 741 such
   retries in a 30 s bench (c) run, each 20 ms lost before.
3. A quiet log. aiokafka logs every refused produce as ``WARNING Got error produce response
   on topic-partition ..., retrying. Error: NotEnoughReplicasError`` (sender.py:869-874): a
   healthy worker with every topic at replication 1 logged 1,204 of them in 7 minutes. For the
   sends of point 2 the line is dropped (:class:`_PendingMarkersFilter`, counted in
   :data:`quiet_retries`); a batch still refused after them is logged as before. Each
   ``TxnOffsetCommit`` refused so also makes the producer look its group's coordinator up
   again, and aiokafka logs ``Discovered coordinator 1 for group id ...`` at INFO each time
   (sender.py:255-266; 15 and 24 lines in two 45 s runs of tests/kafka/test_quiet.py): only a
   coordinator new for its group or transactional id is logged (:class:`_NewCoordinatorFilter`),
   so a move still shows.

This is the only place that tunes these waits. Before, faust's producers were also created
with ``retry_backoff_ms=20`` for the same reason (``AddOffsetsToTxn``); with the rule covering
every transaction request, aiokafka's default (100 ms) applies again to every *other* retry
of those producers: a failed coordinator lookup or metadata update, a coordinator still
loading, a produce refused for another reason, or still refused after point 2's fast retries.
And ``InitProducerId`` and ``EndTxn`` refused with ``CONCURRENT_TRANSACTIONS`` (a producer
started while the previous owner's transaction is being aborted, after a crash or a
rebalance) now retry after 3 ms instead of 20.

Only these answers are retried sooner; an unreachable broker still waits out the backoffs of
:mod:`.outage` (the coordinator lookup goes through the metadata update). Proved by
tests/test_outage.py (each handler's backoff for each answer, the produce retries and the
filters) and tests/kafka/test_quiet.py (a worker's log on a real broker). Upstream: points 1
and 2 are a clean change to aiokafka (docs/upstream/aiokafka-pending-markers.diff: one
backoff for pending markers, instead of ``BACKOFF_OVERRIDE`` for one case); point 3 is this
engine's choice of log lines, not for upstream.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any, Final

from streams.patches import _fence

__all__ = ["TXN_FAST_RETRIES", "TXN_RETRY_BACKOFF", "install", "quiet_retries"]

#: Seconds before a transaction request refused while the broker writes the previous
#: transaction's markers is sent again (aiokafka: 0.02 or ``retry_backoff_ms``).
TXN_RETRY_BACKOFF: Final = 0.003

#: ``handle_response`` of each patched transaction handler, by handler class name.
_ORIGINAL_RESPONSES: dict[str, Any] = {}

#: The answers that mean "the previous transaction's markers are still being written", by
#: transaction handler of aiokafka/producer/sender.py.
_MARKERS_PENDING: Final = {
    "InitPIDHandler": "ConcurrentTransactions",
    "AddPartitionsToTxnHandler": "ConcurrentTransactions",
    "AddOffsetsToTxnHandler": "ConcurrentTransactions",
    "TxnOffsetCommitHandler": "CoordinatorNotAvailableError",
    "EndTxnHandler": "ConcurrentTransactions",
}


def _error_codes(resp: Any) -> set[int]:
    """The error codes of a transaction response: one (``error_code``) or per partition."""
    code = getattr(resp, "error_code", None)
    if code is not None:
        return {code} if code else set()
    return {c for _, partitions in resp.errors for _, c in partitions if c}


def _handle_response(self: Any, resp: Any) -> Any:
    """A transaction handler's ``handle_response``, retrying after :data:`TXN_RETRY_BACKOFF`
    when every error of the answer means that the markers are still being written (point 1
    above)."""
    from aiokafka import errors  # type: ignore[import-untyped]

    name = type(self).__name__
    backoff = _ORIGINAL_RESPONSES[name](self, resp)
    if backoff is None:  # answered, or failed for good: nothing to retry sooner
        return None
    found = {errors.for_code(c) for c in _error_codes(resp)}
    if found == {getattr(errors, _MARKERS_PENDING[name])}:
        return TXN_RETRY_BACKOFF
    return backoff


#: How many sends of one batch may be retried after :data:`TXN_RETRY_BACKOFF` (point 2): a
#: real shortage of in-sync replicas, which answers the same, then waits the usual backoff.
TXN_FAST_RETRIES: Final = 5
_original_produce_response: Any = None

#: True while aiokafka handles a produce response whose ``NOT_ENOUGH_REPLICAS`` answers mean
#: pending markers (point 3: its warnings are dropped).
_PENDING_MARKERS: ContextVar[bool] = ContextVar("failover_pending_markers", default=False)
#: How many of aiokafka's produce-retry warnings point 3 dropped in this process.
quiet_retries = 0
#: aiokafka's warning for a produce answer it retries (aiokafka/producer/sender.py:869-874).
_RETRY_WARNING: Final = "Got error produce response on topic-partition %s, retrying. Error: %s"


class _PendingMarkersFilter(logging.Filter):
    """Drops aiokafka's retry warning for ``NOT_ENOUGH_REPLICAS`` while
    :data:`_PENDING_MARKERS` says that it means pending markers (point 3)."""

    def filter(self, record: logging.LogRecord) -> bool:
        global quiet_retries
        if not _PENDING_MARKERS.get() or record.msg != _RETRY_WARNING:
            return True
        from aiokafka import errors

        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) == 2 and args[1] is errors.NotEnoughReplicasError:
            quiet_retries += 1
            return False
        return True


_FILTER: Final = _PendingMarkersFilter()

#: aiokafka's lines for a coordinator found (aiokafka/producer/sender.py:255-266).
_DISCOVERED: Final = (
    "Discovered coordinator %s for group id %s",
    "Discovered coordinator %s for transactional id %s",
)


class _NewCoordinatorFilter(logging.Filter):
    """Drops aiokafka's "Discovered coordinator" line when the coordinator is the one last
    logged for that group or transactional id (point 3): one entry per id the process uses."""

    def __init__(self) -> None:
        super().__init__()
        self.known: dict[tuple[str, object], object] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg not in _DISCOVERED or not isinstance(record.args, tuple):
            return True
        node, key = record.args
        if self.known.get((record.msg, key)) == node:
            return False
        self.known[(record.msg, key)] = node
        return True


_COORDINATORS: Final = _NewCoordinatorFilter()


def _produce_response(self: Any, response: Any) -> None:
    """``SendProduceReqHandler.handle_response``; then, for a transactional producer whose
    batches were all refused with ``NOT_ENOUGH_REPLICAS``, retry them after
    :data:`TXN_RETRY_BACKOFF` for their first :data:`TXN_FAST_RETRIES` sends (point 2 above).
    Within those sends, aiokafka's warning for the answer is dropped (point 3)."""
    from aiokafka import errors

    pending = self._sender._txn_manager is not None and all(
        batch.retry_count <= TXN_FAST_RETRIES for batch in self._batches.values()
    )
    token = _PENDING_MARKERS.set(pending)
    try:
        _original_produce_response(self, response)
    finally:
        _PENDING_MARKERS.reset(token)
    retried = self._to_reenqueue
    if not retried or self._sender._txn_manager is None:
        return
    found = {
        errors.for_code(info[1])
        for _, partitions in response.topics
        for info in partitions
        if info[1]
    }
    if found == {errors.NotEnoughReplicasError} and all(
        batch.retry_count <= TXN_FAST_RETRIES for batch in retried
    ):
        self._default_backoff = TXN_RETRY_BACKOFF


def install() -> None:
    """Points 1, 2 and 3 above (idempotent; every aiokafka producer of the process)."""
    global _original_produce_response
    from aiokafka.producer import sender  # type: ignore[import-untyped]

    # The rule covers AddPartitionsToTxn's own shortcut (BACKOFF_OVERRIDE, for a transaction's
    # first partitions) too: that is a backoff answered to CONCURRENT_TRANSACTIONS.
    for name in _MARKERS_PENDING:
        handler = getattr(sender, name)
        _ORIGINAL_RESPONSES[name] = _fence.replace(
            handler, "handle_response", _handle_response, __name__
        )
    _original_produce_response = _fence.replace(
        sender.SendProduceReqHandler, "handle_response", _produce_response, __name__
    )
    for quiet in (_FILTER, _COORDINATORS):
        _fence.add_filter(sender.log, quiet, __name__)
