"""The batch path: faust's consumer hands the engine's topics to it one fetch at a time.

Patches ``Consumer._drain_messages`` and ``Consumer._new_offset`` of faust-streaming 0.15.3
(faust/transport/consumer.py). faust delivers every record through ``_drain_messages`` ->
``Conductor.on_message`` -> an ``Event`` in an agent's queue -> ``Stream`` -> ack, and awaits
each through ``Service.wait_first`` (faust/transport/consumer.py:1208-1240), which creates and
cancels tasks per record: measured by bench/kafka.py, 1-3% of what aiokafka's ``getmany``
reads on the same topic. :func:`_drain_messages` runs :func:`streams.batches.drain_batches`
(the loop, and why its offsets are right, are there) for an app with batch handlers, faust's
own loop for any other app; :func:`_new_offset` commits a batch partition up to its last
handled batch (:func:`streams.batches.handled_offset`), and asks faust for any other.

Proved by tests/test_batches.py (offsets, rewinds, the drain loop over fakes) and by every
Kafka test of the worker (tests/kafka/test_engine.py: outputs equal replay's, across kills).
Upstream: no, not as a patch. The upstream change would be a batch API for agents (faust has
``Stream.take``, which still goes record by record underneath); this engine's path is written
for its own handlers, and bypasses faust's per-event acks on purpose.
"""

from __future__ import annotations

from typing import Any

from streams import batches
from streams.patches import _fence

__all__ = ["install"]

_original_drain: Any = None
_original_new_offset: Any = None


async def _drain_messages(self: Any, fetcher: Any) -> None:
    """``Consumer._drain_messages``: the batch path when the app registered batch handlers."""
    if getattr(self.app, "batch_handlers", None):
        await batches.drain_batches(self, fetcher)
    else:
        await _original_drain(self, fetcher)


def _new_offset(self: Any, tp: Any) -> int | None:
    """``Consumer._new_offset``: the offset to commit for ``tp``."""
    offset = batches.handled_offset(self, tp)
    if offset is not None:
        return offset
    return _original_new_offset(self, tp)  # type: ignore[no-any-return]


def install() -> None:
    """Put the batch path into faust's ``Consumer`` (idempotent)."""
    global _original_drain, _original_new_offset
    from faust.transport.consumer import Consumer

    _original_drain = _fence.replace(Consumer, "_drain_messages", _drain_messages, __name__)
    _original_new_offset = _fence.replace(Consumer, "_new_offset", _new_offset, __name__)
