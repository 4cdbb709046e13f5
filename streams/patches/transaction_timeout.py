"""The app's transaction timeout for faust's transactional producers.

Patches ``Producer._settings_extra`` of faust-streaming 0.15.3 (faust/transport/drivers/
aiokafka.py). faust creates its transactional producers without ``transaction_timeout_ms``
(faust/transport/drivers/aiokafka.py:1328-1342) and has no setting for it, so aiokafka's 60 s
applies: after a longer broker outage the broker aborts the open transaction, the producer is
fenced and the worker crashes. :func:`_settings_extra` adds the app's
``transaction_timeout_ms`` (``FAILOVER_TRANSACTION_TIMEOUT``, 300 s by default; at most the
broker's ``transaction.max.timeout.ms``) for the transactional producers. A worker that dies
leaves no transaction open that long: the next owner of its partitions opens producers with
the same transactional ids, which aborts them.

Proved by tests/test_outage.py (the transactional producers get the app's timeout, the
others nothing). No Kafka test holds the broker away longer than aiokafka's 60 s: the one
outage test, tests/kafka/test_broker_restart.py, stops it for 20 s. Upstream: clean, a setting
``producer_transaction_timeout_ms`` (docs/upstream/faust-transaction-timeout.diff).
"""

from __future__ import annotations

from typing import Any

from streams.patches import _fence

__all__ = ["install"]

_original: Any = None


def _settings_extra(self: Any) -> Any:
    """faust's ``Producer._settings_extra``, with the app's transaction timeout for the
    transactional producers."""
    settings = dict(_original(self))
    timeout = getattr(self.app, "transaction_timeout_ms", None)
    if self.app.in_transaction and timeout is not None:
        settings["transaction_timeout_ms"] = int(timeout)
    return settings


def install() -> None:
    """Put :func:`_settings_extra` in place (idempotent)."""
    global _original
    from faust.transport.drivers.aiokafka import Producer

    _original = _fence.replace(Producer, "_settings_extra", _settings_extra, __name__)
