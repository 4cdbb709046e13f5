"""What carries the worker through a broker outage, what aiokafka 0.14 gets wrong there, and
how long its transactions wait before a retry.

Measured by tests/kafka/test_broker_restart.py (the broker stopped for 20 s under a running
worker): aiokafka reconnects by itself, the commit in progress waits for the broker and
completes about a second after it is back, and no rebalance happens (the restarted broker
still knows the member). Three things needed fixing or pinning:

1. A busy loop. While the broker refuses connections, ``AIOKafkaClient._metadata_update``
   (aiokafka/client.py:283-328) fails at once, and its callers that wait for a partition
   leader (the producer's sender, aiokafka/producer/sender.py:155-170, and the consumer's
   fetcher, aiokafka/consumer/fetcher.py:558-566) call it again at once: the worker burnt a
   whole core for the whole outage (19-20 s of CPU in 20 s) and wrote some 70,000 pairs of
   error lines (15 MB) to its log. :func:`patch_aiokafka` sleeps the client's
   ``retry_backoff_ms`` after a failed update: 1 s of CPU and about a thousand lines.
2. Records waiting for the broker must outlive the outage. aiokafka fails a batch that
   waited longer than the producer's ``request_timeout_ms`` (aiokafka/producer/
   message_accumulator.py:482-490), the outbox then refuses to commit, and the worker stops.
   :data:`PRODUCER_REQUEST_TIMEOUT` (faust's default, passed explicitly so that it is a
   decision) is how long an outage the worker rides out: 20 minutes.
3. An open transaction must outlive the outage too. faust creates its transactional
   producers without ``transaction_timeout_ms`` (faust/transport/drivers/aiokafka.py:1328-
   1342), so aiokafka's 60 s applies: after a longer outage the broker aborts the open
   transaction, the producer is fenced and the worker crashes. ``FAILOVER_TRANSACTION_TIMEOUT``
   (300 s by default; at most the broker's ``transaction.max.timeout.ms``, 15 minutes by
   default) sets it. A worker that dies leaves no transaction open that long: the next owner
   of its partitions opens producers with the same transactional ids, which aborts them.
4. Commit latency (not an outage). Right after a commit, the broker is still writing the
   transaction's markers, and the next transaction's first requests are refused until it is
   done: ``AddPartitionsToTxn`` and ``AddOffsetsToTxn`` with ``CONCURRENT_TRANSACTIONS``, and
   ``TxnOffsetCommit`` with ``COORDINATOR_NOT_AVAILABLE`` (Kafka 3.6+ verifies the
   transaction first, and answers old request versions, aiokafka's v0, so). aiokafka retries
   after 20 ms (``BACKOFF_OVERRIDE``, aiokafka/producer/sender.py:40) or ``retry_backoff_ms``;
   the markers take a millisecond or two on the broker. Measured by bench/kafka.py (c), ticks
   and commits every 20 ms, 2 partitions: 23 such answers a second, and the commit took p50 /
   p90 / p99 13.5 / 37 / 62 ms; with a probe that set every transaction request's retry wait
   to 3 ms, 6.7 / 12 / 20 ms. A first patch that left ``AddPartitionsToTxn`` to aiokafka's
   ``BACKOFF_OVERRIDE`` (which applies only while the transaction has no partition yet,
   aiokafka/producer/sender.py:512-519) gave 7.2 / 26.8 / 35.8 ms: the same rule now holds
   for all three requests (:data:`_MARKERS_PENDING`). Produce requests are refused too, with
   ``NOT_ENOUGH_REPLICAS`` (:func:`_produce_response`). Measured, two runs each, side by
   side with the broad probe: commit p50 / p90 / p99 4.7-5.3 / 8.4-9.2 / 10.9-12.1 ms
   (the probe: 4.7-6.4 / 8.1-10.3 / 11.3-13.9 ms).
   Only these answers are retried sooner; an unreachable broker still waits out the backoffs
   of point 1 (the coordinator lookup goes through the metadata update).
5. A quiet log. aiokafka logs every refused produce as ``WARNING Got error produce response
   on topic-partition ..., retrying. Error: NotEnoughReplicasError`` (aiokafka/producer/
   sender.py:869-874): a healthy worker with every topic at replication 1, ISR 1, logged
   1,204 of them in 7 minutes. They are not a shortage of replicas but point 4's answer, so
   for those same first :data:`TXN_FAST_RETRIES` sends of a transactional producer the line
   is dropped (:class:`_PendingMarkersFilter`, counted in :data:`quiet_retries`); a batch still
   refused after them is logged as before, since a real shortage answers the same. Each
   ``TxnOffsetCommit`` refused so also makes the producer look its group's coordinator up
   again, and aiokafka logs ``Discovered coordinator 1 for group id ...`` at INFO each time
   (aiokafka/producer/sender.py:255-266: 15 and 24 lines in two 45 s runs of
   tests/kafka/test_quiet.py, from the worker's producers): only a coordinator that is new
   for its group or transactional id is logged (:class:`_NewCoordinatorFilter`), so a move
   still shows.
"""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar
from typing import Any, Final

__all__ = ["AIOKAFKA_VERSION", "PRODUCER_REQUEST_TIMEOUT", "patch_aiokafka"]

#: The aiokafka release :func:`patch_aiokafka` was written against.
AIOKAFKA_VERSION: Final = "0.14.0"
#: Seconds a produced record may wait for the broker (faust's ``producer_request_timeout``).
PRODUCER_REQUEST_TIMEOUT: Final = 1200.0

#: Seconds before a transaction request refused while the broker writes the previous
#: transaction's markers is sent again (point 4 above; aiokafka: 0.02 and 0.1).
TXN_RETRY_BACKOFF: Final = 0.003

_ORIGINAL_METADATA_UPDATE: Any = None
_ORIGINAL_EXTRA: Any = None
#: ``handle_response`` of each patched transaction handler, by handler class name.
_ORIGINAL_RESPONSES: dict[str, Any] = {}

#: The answers that mean "the previous transaction's markers are still being written", by
#: transaction handler of aiokafka/producer/sender.py (point 4 above).
_MARKERS_PENDING: Final = {
    "AddPartitionsToTxnHandler": "ConcurrentTransactions",
    "AddOffsetsToTxnHandler": "ConcurrentTransactions",
    "TxnOffsetCommitHandler": "CoordinatorNotAvailableError",
}


def _error_codes(resp: Any) -> set[int]:
    """The error codes of a transaction response: one (``error_code``) or per partition."""
    code = getattr(resp, "error_code", None)
    if code is not None:
        return {code} if code else set()
    return {c for _, partitions in resp.errors for _, c in partitions if c}


def _handle_response(self: Any, resp: Any) -> Any:
    """A transaction handler's ``handle_response``, retrying after :data:`TXN_RETRY_BACKOFF`
    when every error of the answer means that the markers are still being written (point 4
    above). Whatever else aiokafka does with the answer (forget the coordinator, keep the
    partitions that were added) it still does."""
    from aiokafka import errors  # type: ignore[import-untyped]

    name = type(self).__name__
    backoff = _ORIGINAL_RESPONSES[name](self, resp)
    found = {errors.for_code(c) for c in _error_codes(resp)}
    if backoff is not None and found == {getattr(errors, _MARKERS_PENDING[name])}:
        return TXN_RETRY_BACKOFF
    return backoff


#: How many sends of one batch may be retried after :data:`TXN_RETRY_BACKOFF` (point 4): a
#: real shortage of in-sync replicas, which answers the same, then waits the usual backoff.
TXN_FAST_RETRIES: Final = 5
_ORIGINAL_PRODUCE_RESPONSE: Any = None


#: True while aiokafka handles a produce response whose ``NOT_ENOUGH_REPLICAS`` answers mean
#: point 4's pending markers (point 5: its warnings are dropped).
_PENDING_MARKERS: ContextVar[bool] = ContextVar("failover_pending_markers", default=False)
#: How many of aiokafka's produce-retry warnings point 5 dropped in this process.
quiet_retries = 0
#: aiokafka's warning for a produce answer it retries (aiokafka/producer/sender.py:869-874).
_RETRY_WARNING: Final = "Got error produce response on topic-partition %s, retrying. Error: %s"


class _PendingMarkersFilter(logging.Filter):
    """Drops aiokafka's retry warning for ``NOT_ENOUGH_REPLICAS`` while
    :data:`_PENDING_MARKERS` says that it means pending markers (point 5)."""

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
    logged for that group or transactional id (point 5): one entry per id the process uses."""

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
    batches were all refused with ``NOT_ENOUGH_REPLICAS`` (what Kafka 3.6+ answers old produce
    versions, aiokafka's, while it cannot yet verify the partition's transaction: the markers
    of the last one are being written), retry them after :data:`TXN_RETRY_BACKOFF` for their
    first :data:`TXN_FAST_RETRIES` sends. Measured: 741 such retries in a 30 s bench (c) run
    (20 ms ticks, 2 partitions), each a warning in the log and 20 ms lost. Within those
    sends, aiokafka's warning for the answer is dropped (point 5)."""
    from aiokafka import errors

    pending = self._sender._txn_manager is not None and all(
        batch.retry_count <= TXN_FAST_RETRIES for batch in self._batches.values()
    )
    token = _PENDING_MARKERS.set(pending)
    try:
        _ORIGINAL_PRODUCE_RESPONSE(self, response)
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


async def _metadata_update(self: Any, cluster_metadata: Any, topics: Any) -> bool:
    """``AIOKafkaClient._metadata_update``, with the client's retry backoff after a failure
    (point 1 above)."""
    ok: bool = await _ORIGINAL_METADATA_UPDATE(self, cluster_metadata, topics)
    if not ok:
        await asyncio.sleep(self._retry_backoff)
    return ok


def _settings_extra(self: Any) -> Any:
    """faust's ``Producer._settings_extra``, with the app's transaction timeout for the
    transactional producers (point 3 above)."""
    settings = dict(_ORIGINAL_EXTRA(self))
    timeout = getattr(self.app, "transaction_timeout_ms", None)
    if self.app.in_transaction and timeout is not None:
        settings["transaction_timeout_ms"] = int(timeout)
    return settings


def patch_aiokafka() -> None:
    """Apply points 1, 3, 4 and 5 above (idempotent; every client of the process).

    Raises:
        RuntimeError: aiokafka is not the release the patch was checked against.
    """
    global _ORIGINAL_METADATA_UPDATE, _ORIGINAL_EXTRA
    import aiokafka
    from aiokafka.client import AIOKafkaClient  # type: ignore[import-untyped]
    from faust.transport.drivers.aiokafka import Producer

    if aiokafka.__version__ != AIOKAFKA_VERSION:
        raise RuntimeError(
            f"streams/outage.py patches aiokafka {AIOKAFKA_VERSION}, found "
            f"{aiokafka.__version__}: check the patch against the new release first"
        )
    if AIOKafkaClient._metadata_update is not _metadata_update:
        _ORIGINAL_METADATA_UPDATE = AIOKafkaClient._metadata_update
        AIOKafkaClient._metadata_update = _metadata_update
    from aiokafka.producer import sender  # type: ignore[import-untyped]

    # The rule covers AddPartitionsToTxn's own shortcut (BACKOFF_OVERRIDE, for a transaction's
    # first partitions) too: that is a backoff answered to CONCURRENT_TRANSACTIONS.
    for name in _MARKERS_PENDING:
        handler = getattr(sender, name)
        if handler.handle_response is not _handle_response:
            _ORIGINAL_RESPONSES[name] = handler.handle_response
            handler.handle_response = _handle_response
    global _ORIGINAL_PRODUCE_RESPONSE
    if sender.SendProduceReqHandler.handle_response is not _produce_response:
        _ORIGINAL_PRODUCE_RESPONSE = sender.SendProduceReqHandler.handle_response
        sender.SendProduceReqHandler.handle_response = _produce_response
    for quiet in (_FILTER, _COORDINATORS):
        if quiet not in sender.log.filters:
            sender.log.addFilter(quiet)
    producer: Any = Producer
    if producer._settings_extra is not _settings_extra:
        _ORIGINAL_EXTRA = producer._settings_extra
        producer._settings_extra = _settings_extra
