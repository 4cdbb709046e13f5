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
   to 3 ms, 6.7 / 12 / 20 ms; with this patch (and eager commits, streams/batches.py), 7.2 /
   26.8 / 35.8 ms: ``AddPartitionsToTxn`` refused while its transaction already has
   partitions still waits ``retry_backoff_ms`` (aiokafka/producer/sender.py:512-519).
   Only these answers are retried sooner; an unreachable broker still waits out the backoffs
   of point 1 (the coordinator lookup goes through the metadata update).
"""

from __future__ import annotations

import asyncio
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
_ORIGINAL_ADD_OFFSETS: Any = None
_ORIGINAL_TXN_OFFSET_COMMIT: Any = None


def _add_offsets_response(self: Any, resp: Any) -> Any:
    """``AddOffsetsToTxnHandler.handle_response``, retrying ``CONCURRENT_TRANSACTIONS`` after
    :data:`TXN_RETRY_BACKOFF` (point 4 above)."""
    from aiokafka.errors import ConcurrentTransactions, for_code  # type: ignore[import-untyped]

    backoff = _ORIGINAL_ADD_OFFSETS(self, resp)
    if backoff is not None and for_code(resp.error_code) is ConcurrentTransactions:
        return TXN_RETRY_BACKOFF
    return backoff


def _txn_offset_commit_response(self: Any, resp: Any) -> Any:
    """``TxnOffsetCommitHandler.handle_response``, retrying ``COORDINATOR_NOT_AVAILABLE``
    after :data:`TXN_RETRY_BACKOFF` (point 4 above). aiokafka still forgets the coordinator,
    so the retry looks it up again first."""
    from aiokafka.errors import CoordinatorNotAvailableError, for_code

    backoff = _ORIGINAL_TXN_OFFSET_COMMIT(self, resp)
    codes = {code for _, partitions in resp.errors for _, code in partitions if code}
    if backoff is not None and {for_code(c) for c in codes} == {CoordinatorNotAvailableError}:
        return TXN_RETRY_BACKOFF
    return backoff


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
    """Apply points 1, 3 and 4 above (idempotent; every client of the process).

    Raises:
        RuntimeError: aiokafka is not the release the patch was checked against.
    """
    global _ORIGINAL_METADATA_UPDATE, _ORIGINAL_EXTRA
    import aiokafka  # type: ignore[import-untyped]
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

    sender.BACKOFF_OVERRIDE = TXN_RETRY_BACKOFF
    global _ORIGINAL_ADD_OFFSETS, _ORIGINAL_TXN_OFFSET_COMMIT
    if sender.AddOffsetsToTxnHandler.handle_response is not _add_offsets_response:
        _ORIGINAL_ADD_OFFSETS = sender.AddOffsetsToTxnHandler.handle_response
        sender.AddOffsetsToTxnHandler.handle_response = _add_offsets_response
    if sender.TxnOffsetCommitHandler.handle_response is not _txn_offset_commit_response:
        _ORIGINAL_TXN_OFFSET_COMMIT = sender.TxnOffsetCommitHandler.handle_response
        sender.TxnOffsetCommitHandler.handle_response = _txn_offset_commit_response
    producer: Any = Producer
    if producer._settings_extra is not _settings_extra:
        _ORIGINAL_EXTRA = producer._settings_extra
        producer._settings_extra = _settings_extra
