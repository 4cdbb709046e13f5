"""The exactly-once patch (streams/eos.py) against fakes of the faust pieces it touches: the
producer is chosen by the input's partition, commits wait for the input being handled, a
failed record stops commits, and no commit follows faust's last one."""

from __future__ import annotations

import asyncio
from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP

from streams.eos import Outbox
from streams.partitions import Record

pytestmark = pytest.mark.asyncio


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int, str | None]] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.flushed = 0

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int,
                   timestamp: float | None, headers: Any, *,
                   transactional_id: str | None = None) -> asyncio.Future[Any]:  # fmt: skip
        self.sent.append((topic, partition, transactional_id))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future

    async def flush(self) -> None:
        self.flushed += 1


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[bool] = []
        self.revoked: list[Any] = []

    async def force_commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        self.commits.append(start_new_transaction)
        return True

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.revoked.append(revoked)


def fake_app() -> Any:
    app = SimpleNamespace(
        conf=SimpleNamespace(id="engine"),
        assignor=SimpleNamespace(group_for_topic=lambda topic: {"in": 1, "other": 2}[topic]),
        producer=FakeProducer(),
        consumer=FakeConsumer(),
        crashed=[],
    )

    async def crash(exc: BaseException) -> None:
        app.crashed.append(exc)

    app.crash = crash
    return app


def record(topic: str, partition: int) -> Record:
    return Record(topic, b"k", b"v", partition, [])


async def test_records_go_through_the_producer_of_the_input_partition() -> None:
    app = fake_app()
    outbox = Outbox(app, exactly_once=True)
    await outbox.send([record("out", 0), record("changes", 5), record("dead", 3)], "in", 2)
    # faust would pick producers engine-?-0, -5, -3 (by destination); the input is in/2.
    assert app.producer.sent == [
        ("out", 0, "engine-1-2"),
        ("changes", 5, "engine-1-2"),
        ("dead", 3, "engine-1-2"),
    ]
    plain = Outbox(app, exactly_once=False)
    await plain.send([record("out", 1)], "in", 2)
    assert app.producer.sent[-1] == ("out", 1, None)


async def test_a_commit_waits_for_the_input_being_handled() -> None:
    app = fake_app()
    outbox = Outbox(app, exactly_once=True)
    outbox.install()
    await outbox.acquire()  # an agent is handling an input
    commit = asyncio.ensure_future(app.consumer.force_commit())
    await asyncio.sleep(0.01)
    assert not commit.done()
    assert app.consumer.commits == []
    outbox.lock.release()  # handled (and acked, synchronously, by faust)
    assert await commit is True
    assert app.consumer.commits == [True]


async def test_a_failed_record_stops_commits() -> None:
    app = fake_app()
    outbox = Outbox(app, exactly_once=True)
    outbox.install()
    await outbox.send([record("out", 0)], "in", 0)
    app.producer.futures[0].set_exception(RuntimeError("MessageSizeTooLarge"))
    await asyncio.sleep(0)
    assert await app.consumer.force_commit() is False
    assert app.consumer.commits == []
    assert len(app.crashed) == 1
    with pytest.raises(RuntimeError, match="could not be produced"):
        await outbox.send([record("out", 0)], "in", 0)


async def test_at_least_once_flushes_before_committing() -> None:
    app = fake_app()
    outbox = Outbox(app, exactly_once=False)
    outbox.install()
    assert await app.consumer.force_commit() is True
    assert app.producer.flushed == 1


async def test_no_input_is_handled_after_faust_ended_its_transactions() -> None:
    app = fake_app()
    outbox = Outbox(app, exactly_once=True)
    outbox.install()
    await app.consumer.force_commit(start_new_transaction=False)  # faust stopping
    assert await app.consumer.force_commit(start_new_transaction=False) is False  # again
    assert app.consumer.commits == [False]
    waiting = asyncio.ensure_future(outbox.acquire())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    outbox.reopen()  # faust began new transactions (a rebalance)
    await asyncio.wait_for(waiting, 1)
    assert outbox.lock.locked()


class RevokedConsumer:
    """faust's own ``Consumer.on_partitions_revoked`` over the state it reads: it forgets the
    revoked partitions' acked offsets, then calls the app's handler, which commits as
    ``App._on_partitions_revoked`` does (``wait_empty`` -> ``commit_and_end_transactions``)."""

    on_partitions_revoked = FaustConsumer.on_partitions_revoked

    def __init__(self, acked: dict[TP, list[int]]) -> None:
        self.app = SimpleNamespace(_start_span_from_rebalancing=lambda name: nullcontext())
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        self._active_partitions = set(acked)
        self._paused_partitions: set[TP] = set()
        self._gap: dict[TP, Any] = {}
        self._acked = acked
        self._acked_index: dict[TP, Any] = {}
        self._read_offset = {tp: max(offsets) + 1 for tp, offsets in acked.items()}
        self._committed_offset = dict.fromkeys(acked, 0)
        #: What each commit could commit: the partitions with acked offsets, and whether it
        #: began new transactions.
        self.commits: list[tuple[list[TP], bool]] = []

    async def force_commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        self.commits.append((sorted(self._acked), start_new_transaction))
        return bool(self._acked)

    async def _on_partitions_revoked(self, revoked: set[TP]) -> None:
        await self.force_commit(start_new_transaction=False)


async def test_a_rebalance_commits_what_was_handled_before_faust_forgets_it() -> None:
    """faust drops the acked offsets of revoked partitions before the app's handler commits:
    without the outbox's own commit first, the inputs handled since the last commit stayed
    uncommitted, their records and state in transactions left open across the rebalance."""
    tp = TP("in", 0)
    app = fake_app()
    app.consumer = RevokedConsumer({tp: [3, 4]})
    outbox = Outbox(app, exactly_once=True)
    outbox.install()
    await app.consumer.on_partitions_revoked({tp})
    # One commit, of the handled input, ending the transactions; the app's handler's own
    # commit then finds them ended and commits nothing.
    assert app.consumer.commits == [([tp], False)]
    assert app.consumer._acked == {}  # faust forgot them, after the commit
    assert not outbox.open.is_set()  # no input until the new assignment


async def test_a_rebalance_with_nothing_revoked_commits_nothing_more() -> None:
    app = fake_app()
    outbox = Outbox(app, exactly_once=True)
    outbox.install()
    await app.consumer.on_partitions_revoked(set())  # the first join: nothing was assigned
    assert app.consumer.revoked == [set()]
    assert app.consumer.commits == []
    assert outbox.open.is_set()


async def test_an_input_that_failed_stops_commits() -> None:
    app = fake_app()
    outbox = Outbox(app, exactly_once=True)
    outbox.install()
    outbox.fail(KeyError("bug"))  # faust acks the input anyway: its offset must not commit
    assert await app.consumer.force_commit() is False
    assert app.consumer.commits == []
    assert len(app.crashed) == 1


async def test_recovery_seeks_before_it_resumes_the_streams() -> None:
    """faust resumes the stream partitions, awaits the seek, then clears the agents' queues:
    inputs fetched in between are dropped. The patched order leaves no gap."""
    from streams.patches.recovery import _on_recovery_completed

    calls: list[str] = []

    class Consumer:
        log = SimpleNamespace(warning=lambda text: None)

        def __init__(self) -> None:
            # After the seek: stream/0 at its committed offset, stream/1 never committed.
            self._read_offset: dict[TP, int | None] = {TP("stream", 0): 5, TP("stream", 1): None}

            async def seek_to_beginning(tp: Any) -> None:
                calls.append(f"rewind {tp.topic}/{tp.partition} to the beginning")

            async def seek_wait(offsets: dict[Any, int]) -> None:
                calls.extend(f"rewind {t.topic}/{t.partition} to {o}" for t, o in offsets.items())

            self._thread = SimpleNamespace(
                seek_wait=seek_wait,
                seek_to_beginning=seek_to_beginning,
            )

        def assignment(self) -> set[TP]:
            return {TP("stream", 0), TP("stream", 1), TP("changelog", 0)}

        async def perform_seek(self) -> None:
            calls.append("seek")
            await asyncio.sleep(0)  # the fetcher may run here: streams must still be paused

        def resume_partitions(self, tps: set[TP]) -> None:
            calls.append(f"resume {sorted(f'{tp.topic}/{tp.partition}' for tp in tps)}")

        def resume_flow(self) -> None:
            calls.append("resume_flow")

    async def noop(*args: Any, **kwargs: Any) -> None:
        return None

    async def wait(coro: Any, timeout: float | None = None) -> None:
        await coro

    app = SimpleNamespace(
        consumer=Consumer(),
        consumer_generation_id=7,
        on_rebalance_complete=SimpleNamespace(send=noop),
        flow_control=SimpleNamespace(resume=lambda: calls.append("clear queues")),
        conf=SimpleNamespace(broker_request_timeout=1.0),
        _fetcher=SimpleNamespace(maybe_start=noop),
        assignor=SimpleNamespace(assigned_standbys=lambda: set()),
        on_rebalance_end=lambda: None,
    )
    recovery = SimpleNamespace(
        app=app,
        log=SimpleNamespace(info=lambda *a: None, warning=lambda *a: None),
        tables=SimpleNamespace(
            values=lambda: [], on_actives_ready=lambda: None, on_standbys_ready=lambda: None
        ),
        completed=asyncio.Event(),
        _set_recovery_ended=lambda: None,
        _wait=wait,
        _is_changelog_tp=lambda tp: tp.topic == "changelog",
    )
    await _on_recovery_completed(recovery, generation_id=7)
    assert calls[0] == "seek"
    # aiokafka's seek_to_committed leaves a partition with no committed offset where it is.
    assert sorted(calls[1:3]) == ["rewind stream/0 to 5", "rewind stream/1 to the beginning"]
    assert calls[3:] == ["resume ['stream/0', 'stream/1']", "clear queues", "resume_flow"]


async def test_each_commit_is_timed_and_a_refused_one_is_not() -> None:
    app = fake_app()
    stages: list[tuple[str, float]] = []
    app.tracing = SimpleNamespace(
        telemetry=SimpleNamespace(record_stage=lambda stage, s: stages.append((stage, s)))
    )
    outbox = Outbox(app, exactly_once=True)
    outbox.install()
    assert await app.consumer.force_commit() is True
    assert [stage for stage, _ in stages] == ["commit"]
    assert stages[0][1] >= 0
    outbox.fail(KeyError("bug"))
    assert await app.consumer.force_commit() is False
    assert len(stages) == 1


async def test_a_commit_covers_the_records_sent_before_it_and_by_before_commit() -> None:
    app = fake_app()
    outbox = Outbox(app, exactly_once=True)
    outbox.install()
    assert not outbox.uncommitted()
    await outbox.send([record("out", 0)], "in", 0)
    assert outbox.uncommitted()

    async def flush_state(topics: Any) -> None:
        await outbox.send([record("changelog", 0)], "in", 0)

    outbox.before_commit = flush_state
    assert await app.consumer.force_commit() is True
    assert outbox.sent == 2
    assert not outbox.uncommitted()


async def test_a_commit_of_some_partitions_leaves_the_others_waiting() -> None:
    app = fake_app()
    outbox = Outbox(app, exactly_once=True)
    outbox.install()
    flushed: list[Any] = []

    async def flush_state(topics: Any) -> None:
        flushed.append(topics)

    outbox.before_commit = flush_state
    await outbox.send([record("out", 0)], "in", 0)
    await outbox.send([record("out", 1)], "other", 1)
    await outbox.send([], "in", 3)  # sent nothing: waits for nothing
    assert outbox.waiting() == {"engine-1-0", "engine-2-1"}
    assert await app.consumer.force_commit({TP("in", 0)}) is True
    assert flushed == [{TP("in", 0)}]  # the state of the partitions committed, no other
    assert outbox.waiting() == {"engine-2-1"}
    assert await app.consumer.force_commit() is True
    assert flushed[-1] is None
    assert not outbox.uncommitted()


class FakeTransaction:
    """One transactional aiokafka producer, as faust's ``_commit_transactions`` drives it."""

    def __init__(self, calls: list[str], name: str) -> None:
        self.calls = calls
        self.name = name
        self._txn_manager = SimpleNamespace(is_in_transaction=lambda: True)

    async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None:
        self.calls.append(f"{self.name} offsets")

    async def commit_transaction(self) -> None:
        self.calls.append(f"{self.name} commit")

    async def abort_transaction(self) -> None:
        self.calls.append(f"{self.name} abort")

    async def begin_transaction(self) -> None:
        self.calls.append(f"{self.name} begin")


def faust_producer(app: Any, calls: list[str], *names: str) -> Any:
    """faust's aiokafka ``Producer`` as :func:`streams.patches.commit._commit_transactions`
    sees it."""
    from collections import defaultdict

    return SimpleNamespace(
        app=app,
        _trn_locks=defaultdict(asyncio.Lock),
        _transaction_producers={n: FakeTransaction(calls, n) for n in names},
    )


async def test_a_transaction_commits_only_once_the_broker_accepted_its_records() -> None:
    from streams.patches.commit import _commit_transactions

    app = fake_app()
    outbox = app.outbox = Outbox(app, exactly_once=True)
    await outbox.send([record("out", 0), record("out", 1)], "in", 0)
    calls: list[str] = []
    producer = faust_producer(app, calls, "engine-1-0")
    commit = asyncio.ensure_future(
        _commit_transactions(producer, {"engine-1-0": {TP("in", 0): 5}}, "engine")
    )
    await asyncio.sleep(0.01)
    assert calls == ["engine-1-0 offsets"]  # EndTxn waits for the broker's answers
    app.producer.futures[0].set_result(None)
    await asyncio.sleep(0.01)
    assert calls == ["engine-1-0 offsets"]
    app.producer.futures[1].set_result(None)
    await asyncio.wait_for(commit, 1)
    assert calls == ["engine-1-0 offsets", "engine-1-0 commit", "engine-1-0 begin"]


async def test_a_refused_record_aborts_its_transaction_and_no_other_waits_for_it() -> None:
    from streams.eos import OutboxError
    from streams.patches.commit import _commit_transactions

    app = fake_app()
    outbox = app.outbox = Outbox(app, exactly_once=True)
    await outbox.send([record("out", 0)], "in", 0)
    await outbox.send([record("out", 1)], "in", 1)
    app.producer.futures[0].set_exception(RuntimeError("MessageSizeTooLargeError"))
    app.producer.futures[1].set_result(None)
    calls: list[str] = []
    producer = faust_producer(app, calls, "engine-1-0", "engine-1-1")
    offsets = {"engine-1-0": {TP("in", 0): 5}, "engine-1-1": {TP("in", 1): 9}}
    with pytest.raises(OutboxError, match=r"refused a record of 2 bytes .* topic 'out' "):
        await _commit_transactions(producer, offsets, "engine")
    assert "engine-1-0 commit" not in calls
    assert "engine-1-0 abort" in calls
    assert "engine-1-1 commit" in calls  # its records were all accepted


async def test_a_refusal_answered_during_the_commit_stops_the_worker_uncommitted() -> None:
    """The refusal is not known when the commit begins: the broker answers meanwhile."""
    from streams.patches.commit import _commit_transactions

    app = fake_app()
    outbox = app.outbox = Outbox(app, exactly_once=True)
    calls: list[str] = []
    producer = faust_producer(app, calls, "engine-1-0")

    async def faust_commit(topics: Any = None, start_new_transaction: bool = True) -> bool:
        offsets = {"engine-1-0": {TP("in", 0): 1}}
        await _commit_transactions(producer, offsets, "engine", start_new_transaction)
        return True

    app.consumer.force_commit = faust_commit
    app.producer.abort_transaction = lambda tid: producer._transaction_producers[
        tid
    ].abort_transaction()
    outbox.install()
    await outbox.send([record("out", 0)], "in", 0)
    commit = asyncio.ensure_future(app.consumer.force_commit())
    await asyncio.sleep(0.01)
    assert not commit.done()
    app.producer.futures[0].set_exception(RuntimeError("MessageSizeTooLargeError"))
    assert await asyncio.wait_for(commit, 1) is False
    assert calls[0] == "engine-1-0 offsets"
    assert "engine-1-0 commit" not in calls
    assert "engine-1-0 abort" in calls
    assert len(app.crashed) == 1
    assert "topic 'out' partition 0" in str(app.crashed[0])
    assert await app.consumer.force_commit() is False  # nor later, on the way out
    assert not outbox.open.is_set()  # no input is handled any more


async def test_at_least_once_commits_offsets_only_once_the_records_are_accepted() -> None:
    app = fake_app()
    outbox = Outbox(app, exactly_once=False)
    outbox.install()
    await outbox.send([record("out", 0)], "in", 0)
    commit = asyncio.ensure_future(app.consumer.force_commit())
    await asyncio.sleep(0.01)
    assert not commit.done()
    app.producer.futures[0].set_exception(RuntimeError("TopicAuthorizationFailedError"))
    assert await asyncio.wait_for(commit, 1) is False
    assert app.consumer.commits == []
    assert len(app.crashed) == 1


async def test_records_sent_after_their_answers_came_are_still_uncommitted() -> None:
    app = fake_app()
    outbox = Outbox(app, exactly_once=True)
    await outbox.send([record("out", 0)], "in", 0)
    app.producer.futures[0].set_result(None)
    await asyncio.sleep(0)
    await outbox.send([], "in", 0)
    assert outbox.waiting() == {"engine-1-0"}


async def test_a_stop_that_cancels_a_commit_lets_it_end_first() -> None:
    """A stop cancels the task that drains batches, and so a commit it is in: the commit's
    transactions must end (not be cut between their EndTxn requests), and the next commit,
    the stop's own, must wait for it."""
    app = fake_app()
    gate = asyncio.Event()
    ended: list[str] = []

    async def slow_commit(topics: Any = None, start_new_transaction: bool = True) -> bool:
        ended.append("started")
        await gate.wait()  # EndTxn in flight
        ended.append("ended")
        return True

    app.consumer.force_commit = slow_commit
    outbox = Outbox(app, exactly_once=True)
    outbox.install()
    outbox.open.set()
    drain = asyncio.ensure_future(app.consumer.force_commit())
    await asyncio.sleep(0.01)
    assert ended == ["started"]
    drain.cancel()  # the stop
    stop_commit = asyncio.ensure_future(app.consumer.force_commit(start_new_transaction=False))
    await asyncio.sleep(0.01)
    assert not drain.done()  # still committing, and holding the lock
    assert ended == ["started"]
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await drain
    assert ended[:2] == ["started", "ended"]
    assert await stop_commit is True  # after the first commit ended, not during it
    assert ended == ["started", "ended", "started", "ended"]
