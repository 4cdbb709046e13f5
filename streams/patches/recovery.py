"""Table recovery: from the changelogs' real ends, seeking before the streams resume, without
waiting 10 s for a transaction marker. Three patches of faust-streaming 0.15.3.

1. ``AIOKafkaConsumerThread._highwaters`` (:func:`_highwaters_from_broker`). Under
   exactly-once, faust takes the changelogs' highwaters from
   ``AIOKafkaConsumer.last_stable_offset`` (faust/transport/drivers/aiokafka.py:1058-1061),
   which is what the *last fetch response* said, and ``None`` before the consumer has
   fetched from the partition (aiokafka documents it: "will not be available until some
   messages are consumed"). A new worker often has not: faust then takes every changelog for
   empty (highwater -1), declares recovery complete at once, and the worker goes on from the
   committed offsets with empty tables. Seen in the kill test: a restarted worker lost every
   service's state and queued inputs, and made no further output. The patch asks the broker
   (``end_offsets``: a ListOffsets request with the consumer's isolation level, so the last
   stable offset). Proved by tests/kafka/test_faust_patches.py (the consumer knows nothing,
   the broker does) and the kill test, tests/kafka/test_engine.py. Upstream: clean, a
   one-line change (docs/upstream/faust-recovery-highwaters.diff); related report:
   https://github.com/faust-streaming/faust/issues/47.
2. ``Recovery.on_recovery_completed`` (:func:`_on_recovery_completed`, a copy of faust's
   faust/tables/recovery.py:624-667 with two changes). faust resumes the stream partitions,
   *then* awaits the seek to the committed offsets, *then* resumes flow control, which clears
   every agent's queue (mode/utils/queues.py:97-108, ``FlowControlEvent.resume``; agent
   channels are created with ``clear_on_resume=True``, faust/channels.py:145). Whatever the
   fetcher delivered in between is dropped unprocessed and unacked, and the consumer's read
   offset is already past it, so it is never fetched again. Two or more dropped at the head
   of a partition: ``Consumer._new_offset`` (faust/transport/consumer.py:1140) never finds a
   contiguous run after the committed offset, and that partition's commits stop for good.
   Exactly one: the same check tolerates a hole of one, so the offset is committed past an
   input never handled. The patch seeks while the stream partitions are still paused (and
   rewinds those with no committed offset, :func:`streams.batches.rewind`), then resumes them
   and the flow with no ``await`` in between. Proved by tests/test_stream_eos.py
   (``test_recovery_seeks_before_it_resumes_the_streams``) and the kill test. Upstream: the
   reordering is clean (docs/upstream/faust-recovery-seek.diff); the rewind is this engine's
   (it needs the batch path's read offsets). Related report:
   https://github.com/faust-streaming/faust/issues/216 (closed for the no-table case only).
3. ``faust.tables.recovery.asyncio`` (:class:`_RecoveryAsyncio`). The recovery's one
   ``wait_for`` (recovery.py:834) waits 5 s for the next changelog event; on a timeout it
   checks whether every partition is restored, and after the second in a row whether the
   rest of a changelog is a transaction marker. A changelog written in transactions always
   ends with one, so every restore waited 10 s for nothing; and the batch path feeds the
   store directly (:func:`streams.batches._restore`), so no event comes at all. The patch
   caps that wait at :data:`RECOVERY_POLL`. Proved by tests/test_batches.py
   (``test_recovery_waits_are_capped``) and every Kafka test that restarts a worker (their
   timeouts). Upstream: not as it is (a module's ``asyncio`` swapped); the upstream change
   would be a setting for the poll interval, or a restore that compares the fetch position
   with the highwater as :func:`streams.batches._restore` does.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from streams.patches import _fence

__all__ = ["RECOVERY_POLL", "install"]

#: The longest ``faust.tables.recovery`` waits for a changelog event before it looks again
#: whether recovery is done (faust: 5 s, twice over before ``detect_aborted_tx``).
RECOVERY_POLL: Final = 0.2


async def _highwaters_from_broker(self: Any, partitions: list[Any]) -> Any:
    """``AIOKafkaConsumerThread._highwaters``, asking the broker (point 1 above)."""
    consumer = self._ensure_consumer()
    return await consumer.end_offsets(list(partitions))


async def _on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    """``Recovery.on_recovery_completed`` of faust 0.15.3 (faust/tables/recovery.py:624-667),
    with the stream partitions sought *before* they are resumed (point 2 above)."""
    consumer = self.app.consumer
    self.log.info("Restore complete!")
    await self.app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callback_coros = [
        asyncio.ensure_future(
            table.on_recovery_completed(
                self.actives_for_table[table], self.standbys_for_table[table]
            )
        )
        for table in self.tables.values()
    ]
    if callback_coros:
        await asyncio.wait(callback_coros)
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning(
            "Recovery rebalancing again app id %s param %s",
            self.app.consumer_generation_id,
            generation_id,
        )
        return
    if assignment:
        # The stream partitions are still paused: nothing reaches the agents' queues.
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
        # And to the beginning where none was committed (aiokafka's seek_to_committed leaves
        # those where they are, past whatever was fetched and dropped before).
        from streams.batches import rewind

        await rewind(consumer, [tp for tp in assignment if not self._is_changelog_tp(tp)])
    # No await from here to resume_flow: nothing is fetched between resuming the stream
    # partitions and clearing the queues (which hold nothing fetched since the seek).
    consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    self.completed.set()
    self.app.flow_control.resume()
    consumer.resume_flow()
    await self.app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    if not self.app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


class _RecoveryAsyncio:
    """``asyncio`` as ``faust.tables.recovery`` sees it: ``wait_for`` capped at
    :data:`RECOVERY_POLL` (point 3 above)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    async def wait_for(awaitable: Any, timeout: float | None = None) -> Any:
        if timeout is None or timeout > RECOVERY_POLL:
            timeout = RECOVERY_POLL
        return await asyncio.wait_for(awaitable, timeout)


_ASYNCIO: Final = _RecoveryAsyncio()


def install() -> None:
    """Points 1, 2 and 3 above (idempotent)."""
    from faust.tables import recovery
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    _fence.replace(AIOKafkaConsumerThread, "_highwaters", _highwaters_from_broker, __name__)
    _fence.replace(recovery.Recovery, "on_recovery_completed", _on_recovery_completed, __name__)
    _fence.replace(recovery, "asyncio", _ASYNCIO, __name__)
