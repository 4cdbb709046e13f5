"""No busy loop while the broker is away.

Patches ``AIOKafkaClient._metadata_update`` of aiokafka 0.14.0 (aiokafka/client.py:283-328).
While the broker refuses connections, the update fails at once, and its callers that wait
for a partition leader (the producer's sender, aiokafka/producer/sender.py:155-170, and the
consumer's fetcher, aiokafka/consumer/fetcher.py:558-566) call it again at once: the worker
burnt a whole core for the whole outage (19-20 s of CPU in 20 s) and wrote some 70,000 pairs
of error lines (15 MB) to its log. :func:`_metadata_update` sleeps the client's
``retry_backoff_ms`` after a failed update: 1 s of CPU and about a thousand lines.

What else carries the worker through an outage is configuration, not a patch
(streams/outage.py: how long records wait; :mod:`.transaction_timeout`: how long a
transaction stays open). Proved by tests/test_outage.py (a failed update backs off, a good one
does not) and tests/kafka/test_broker_restart.py (the broker stopped for 20 s under a running
worker: CPU and log lines bounded, no input lost). Upstream: clean
(docs/upstream/aiokafka-metadata-backoff.diff); the loop is in the callers, so the backoff
belongs with the failed update, as here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from streams.patches import _fence

__all__ = ["install"]

_original: Any = None


async def _metadata_update(self: Any, cluster_metadata: Any, topics: Any) -> bool:
    """``AIOKafkaClient._metadata_update``, with the client's retry backoff after a failure."""
    ok: bool = await _original(self, cluster_metadata, topics)
    if not ok:
        await asyncio.sleep(self._retry_backoff)
    return ok


def install() -> None:
    """Put :func:`_metadata_update` in place (idempotent; every aiokafka client)."""
    global _original
    from aiokafka.client import AIOKafkaClient  # type: ignore[import-untyped]

    _original = _fence.replace(AIOKafkaClient, "_metadata_update", _metadata_update, __name__)
