"""streams/outage.py without a broker: what aiokafka does when the broker is away."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from streams import outage


@pytest.mark.asyncio
async def test_a_failed_metadata_update_backs_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The producer's sender and the consumer's fetcher retry a failed update at once: the
    patched update sleeps the client's retry backoff first (no busy loop while the broker
    refuses connections), and a good one returns at once."""
    answers = iter([False, True])

    async def original(self: Any, cluster: Any, topics: Any) -> bool:
        return next(answers)

    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(outage, "_ORIGINAL_METADATA_UPDATE", original)
    monkeypatch.setattr(outage.asyncio, "sleep", sleep)
    client = SimpleNamespace(_retry_backoff=0.1)
    assert await outage._metadata_update(client, None, None) is False
    assert slept == [0.1]
    assert await outage._metadata_update(client, None, None) is True
    assert slept == [0.1]


def test_transactional_producers_get_the_app_transaction_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outage, "_ORIGINAL_EXTRA", lambda self: {"acks": "all"})
    app = SimpleNamespace(in_transaction=True, transaction_timeout_ms=300_000)
    assert outage._settings_extra(SimpleNamespace(app=app)) == {
        "acks": "all",
        "transaction_timeout_ms": 300_000,
    }
    app.in_transaction = False  # at-least-once: no transactions, nothing to set
    assert outage._settings_extra(SimpleNamespace(app=app)) == {"acks": "all"}


def test_the_patch_is_idempotent_and_checks_the_release() -> None:
    import aiokafka  # type: ignore[import-untyped]
    from aiokafka.client import AIOKafkaClient  # type: ignore[import-untyped]

    assert aiokafka.__version__ == outage.AIOKAFKA_VERSION
    outage.patch_aiokafka()
    outage.patch_aiokafka()
    assert AIOKafkaClient._metadata_update is outage._metadata_update
    assert outage._ORIGINAL_METADATA_UPDATE is not outage._metadata_update
