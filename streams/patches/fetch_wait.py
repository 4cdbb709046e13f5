"""The app's fetch wait for faust's consumer, instead of faust's hard-coded 1.5 s.

Patches ``AIOKafkaConsumerThread._create_worker_consumer`` of faust-streaming 0.15.3
(faust/transport/drivers/aiokafka.py:615 passes ``fetch_max_wait_ms=1500`` and no setting
changes it). aiokafka keeps one fetch in flight per broker, and a partition that has data only
joins the next one: an input behind a fetch of idle partitions waits out the whole wait. The
patch sets the app's ``fetch_max_wait_ms`` (``FAILOVER_FETCH_MAX_WAIT``) on the consumer
faust created, before it starts (``AIOKafkaConsumer.start`` reads it).

Proved by bench/kafka.py (c) (latency of an override's first command) and by
tests/test_patches.py (the consumer faust builds carries the app's wait). Upstream: clean, a
setting ``consumer_fetch_max_wait_ms`` next to faust's other consumer settings
(docs/upstream/faust-fetch-max-wait.diff).
"""

from __future__ import annotations

from typing import Any

from streams.patches import _fence

__all__ = ["install"]

_original: Any = None


def _create_worker_consumer(self: Any, transport: Any) -> Any:
    """``AIOKafkaConsumerThread._create_worker_consumer``, with the app's fetch wait."""
    consumer = _original(self, transport)
    wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
    if wait_ms is not None:
        consumer._fetch_max_wait_ms = int(wait_ms)  # read by AIOKafkaConsumer.start
    return consumer


def install() -> None:
    """Put :func:`_create_worker_consumer` in place (idempotent)."""
    global _original
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    _original = _fence.replace(
        AIOKafkaConsumerThread, "_create_worker_consumer", _create_worker_consumer, __name__
    )
