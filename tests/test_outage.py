"""The patches of aiokafka without a broker: what it does when the broker is away
(streams/patches/outage.py), and when it is busy writing transaction markers
(streams/patches/markers.py); and faust's producers' transaction timeout
(streams/patches/transaction_timeout.py)."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from streams import patches
from streams.patches import markers, outage, transaction_timeout


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

    monkeypatch.setattr(outage, "_original", original)
    monkeypatch.setattr(outage.asyncio, "sleep", sleep)
    client = SimpleNamespace(_retry_backoff=0.1)
    assert await outage._metadata_update(client, None, None) is False
    assert slept == [0.1]
    assert await outage._metadata_update(client, None, None) is True
    assert slept == [0.1]


def test_transactional_producers_get_the_app_transaction_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transaction_timeout, "_original", lambda self: {"acks": "all"})
    app = SimpleNamespace(in_transaction=True, transaction_timeout_ms=300_000)
    assert transaction_timeout._settings_extra(SimpleNamespace(app=app)) == {
        "acks": "all",
        "transaction_timeout_ms": 300_000,
    }
    app.in_transaction = False  # at-least-once: no transactions, nothing to set
    assert transaction_timeout._settings_extra(SimpleNamespace(app=app)) == {"acks": "all"}


def test_the_patch_is_idempotent_and_checks_the_release() -> None:
    import aiokafka  # type: ignore[import-untyped]
    from aiokafka.client import AIOKafkaClient  # type: ignore[import-untyped]

    assert aiokafka.__version__ == patches.ACCEPTED["aiokafka"]
    patches.install()
    patches.install()
    assert AIOKafkaClient._metadata_update is outage._metadata_update
    assert outage._original is not outage._metadata_update


def _sender() -> Any:
    return SimpleNamespace(
        _retry_backoff=0.02,
        _txn_manager=SimpleNamespace(transactional_id="t", consumer_group_added=lambda g: None),
        _coordinator_dead=lambda kind: None,
    )


def test_transaction_requests_refused_for_pending_markers_retry_sooner() -> None:
    from aiokafka.producer import sender  # type: ignore[import-untyped]
    from aiokafka.protocol.transaction import (  # type: ignore[import-untyped]
        AddOffsetsToTxnResponse_v0,
        TxnOffsetCommitResponse_v0,
    )

    patches.install()
    add_offsets = sender.AddOffsetsToTxnHandler(_sender(), "group")
    concurrent, load_in_progress, ok = 51, 14, 0
    assert add_offsets.handle_response(AddOffsetsToTxnResponse_v0(0, concurrent)) == 0.003
    assert add_offsets.handle_response(AddOffsetsToTxnResponse_v0(0, load_in_progress)) == 0.02
    assert add_offsets.handle_response(AddOffsetsToTxnResponse_v0(0, ok)) is None

    commit = sender.TxnOffsetCommitHandler(_sender(), {}, "group")
    not_available, unknown_partition = 15, 3

    def response(*codes: int) -> Any:
        return TxnOffsetCommitResponse_v0(0, [("t", [(p, c) for p, c in enumerate(codes)])])

    assert commit.handle_response(response(not_available, not_available)) == 0.003
    # Anything else keeps aiokafka's backoff.
    assert commit.handle_response(response(unknown_partition)) == 0.02

    # AddPartitionsToTxn for a transaction's first partitions: aiokafka's own shortcut
    # (BACKOFF_OVERRIDE, 20 ms), shortened by the same rule.
    from aiokafka.protocol.transaction import AddPartitionsToTxnResponse_v0

    first = _sender()
    first._txn_manager.txn_partitions = set()
    add = sender.AddPartitionsToTxnHandler(first, [])
    assert add.handle_response(AddPartitionsToTxnResponse_v0(0, [("t", [(0, concurrent)])])) == (
        markers.TXN_RETRY_BACKOFF
    )
    # For a transaction that has partitions already: that shortcut does not apply, the rule
    # does.
    with_partitions = _sender()
    with_partitions._txn_manager.txn_partitions = {("t", 0)}
    add = sender.AddPartitionsToTxnHandler(with_partitions, [])
    assert add.handle_response(AddPartitionsToTxnResponse_v0(0, [("t", [(1, concurrent)])])) == (
        0.003
    )
    assert add.handle_response(AddPartitionsToTxnResponse_v0(0, [("t", [(1, 14)])])) == 0.02


def test_the_rule_covers_every_transaction_request_refused_with_concurrent_transactions() -> None:
    """InitProducerId (a producer started while the previous owner's transaction is aborted)
    and EndTxn too: the one rule, where aiokafka waits its default backoff."""
    from aiokafka.producer import sender  # type: ignore[import-untyped]
    from aiokafka.protocol.transaction import (  # type: ignore[import-untyped]
        EndTxnResponse_v0,
        InitProducerIdResponse_v0,
    )

    patches.install()
    concurrent, load_in_progress = 51, 14
    init = sender.InitPIDHandler(_sender())
    assert init.handle_response(InitProducerIdResponse_v0(0, concurrent, 1, 0)) == 0.003
    assert init.handle_response(InitProducerIdResponse_v0(0, load_in_progress, 1, 0)) == 0.02
    end = sender.EndTxnHandler(_sender(), True)
    assert end.handle_response(EndTxnResponse_v0(0, concurrent)) == 0.003
    assert end.handle_response(EndTxnResponse_v0(0, load_in_progress)) == 0.02


def test_transactional_produce_refused_for_pending_markers_retries_sooner_a_few_times() -> None:
    from aiokafka.producer import sender  # type: ignore[import-untyped]
    from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

    patches.install()
    tp = TopicPartition("t", 0)
    not_enough_replicas, leader_moved = 19, 6

    def attempt(code: int, retry_count: int, transactional: bool = True) -> float:
        producer = _sender()
        producer._txn_manager = SimpleNamespace() if transactional else None
        producer.client = SimpleNamespace(force_metadata_update=lambda: None)
        batch = SimpleNamespace(retry_count=retry_count, expired=lambda: False)
        handler = sender.SendProduceReqHandler(producer, {tp: batch})
        response = SimpleNamespace(API_VERSION=2, topics=[("t", [(0, code, -1, -1)])])
        handler.handle_response(response)
        assert handler._to_reenqueue == [batch]  # retried either way
        return float(handler._default_backoff)

    assert attempt(not_enough_replicas, 1) == markers.TXN_RETRY_BACKOFF
    assert attempt(not_enough_replicas, markers.TXN_FAST_RETRIES) == markers.TXN_RETRY_BACKOFF
    # Then the usual wait: a real shortage of in-sync replicas answers the same.
    assert attempt(not_enough_replicas, markers.TXN_FAST_RETRIES + 1) == 0.02
    assert attempt(not_enough_replicas, 1, transactional=False) == 0.02
    assert attempt(leader_moved, 1) == 0.02


def test_pending_markers_retries_are_not_logged_but_a_real_shortage_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Point 3 of streams/patches/markers.py: aiokafka's warning for a transactional
    produce refused with NOT_ENOUGH_REPLICAS is dropped for the fast retries, kept after
    them, kept for a producer outside transactions and for any other error."""
    from aiokafka.producer import sender  # type: ignore[import-untyped]
    from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

    patches.install()
    tp = TopicPartition("t", 0)
    not_enough_replicas, leader_moved = 19, 6

    def logged(code: int, retry_count: int, transactional: bool = True) -> bool:
        producer = _sender()
        producer._txn_manager = SimpleNamespace() if transactional else None
        producer.client = SimpleNamespace(force_metadata_update=lambda: None)
        batch = SimpleNamespace(retry_count=retry_count, expired=lambda: False)
        handler = sender.SendProduceReqHandler(producer, {tp: batch})
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="aiokafka.producer.sender"):
            handler.handle_response(
                SimpleNamespace(API_VERSION=2, topics=[("t", [(0, code, -1, -1)])])
            )
        assert handler._to_reenqueue == [batch]  # retried either way
        return "Got error produce response" in caplog.text

    before = markers.quiet_retries
    assert not logged(not_enough_replicas, 0)
    assert not logged(not_enough_replicas, markers.TXN_FAST_RETRIES)
    assert markers.quiet_retries == before + 2
    assert logged(not_enough_replicas, markers.TXN_FAST_RETRIES + 1)
    assert logged(not_enough_replicas, 0, transactional=False)
    assert logged(leader_moved, 0)
    assert markers.quiet_retries == before + 2


def test_a_coordinator_is_logged_when_it_is_new_for_its_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Point 3 of streams/patches/markers.py: a producer that looks its group's coordinator
    up again after each refused TxnOffsetCommit does not log it again; a coordinator that
    moved is logged."""
    from aiokafka.producer import sender  # type: ignore[import-untyped]

    patches.install()
    with caplog.at_level(logging.INFO, logger="aiokafka.producer.sender"):
        for node, key in [(1, "g"), (1, "g"), (1, "g"), (2, "g"), (1, "h"), (2, "g")]:
            sender.log.info("Discovered coordinator %s for group id %s", node, key)
        sender.log.info("Discovered coordinator %s for transactional id %s", 1, "g")
    assert [r.getMessage() for r in caplog.records] == [
        "Discovered coordinator 1 for group id g",
        "Discovered coordinator 2 for group id g",
        "Discovered coordinator 1 for group id h",
        "Discovered coordinator 1 for transactional id g",
    ]
