"""What carries the worker through a broker outage.

Measured by tests/kafka/test_broker_restart.py (the broker stopped for 20 s under a running
worker): aiokafka reconnects by itself, the commit in progress waits for the broker and
completes about a second after it is back, and no rebalance happens (the restarted broker
still knows the member). What it takes:

1. No busy loop while the broker is away: a patch of aiokafka, :mod:`streams.patches.outage`.
2. Records waiting for the broker must outlive the outage. aiokafka fails a batch that waited
   longer than the producer's ``request_timeout_ms`` (aiokafka/producer/
   message_accumulator.py:482-490), the outbox then refuses to commit, and the worker stops.
   :data:`PRODUCER_REQUEST_TIMEOUT` (faust's default, passed explicitly so that it is a
   decision) is how long an outage the worker rides out: 20 minutes.
3. An open transaction must outlive the outage too: ``FAILOVER_TRANSACTION_TIMEOUT`` (300 s by
   default), which faust has no setting for (:mod:`streams.patches.transaction_timeout`).

The broker's answers right after each commit (``CONCURRENT_TRANSACTIONS`` and what Kafka 3.6+
answers in its place) are no outage: :mod:`streams.patches.markers` retries them sooner and
keeps them out of the log.
"""

from __future__ import annotations

from typing import Final

__all__ = ["PRODUCER_REQUEST_TIMEOUT"]

#: Seconds a produced record may wait for the broker (faust's ``producer_request_timeout``).
PRODUCER_REQUEST_TIMEOUT: Final = 1200.0
