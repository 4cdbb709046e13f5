"""A service's state larger than its changelog accepts in one record is written as pages and
restored exactly by a new worker (streams/app.py ``_TableView``).

The service-state changelog is created with a ``max.message.bytes`` of 20,000 bytes; a
service in manual then records 400 paper records with 120-character ids (its state some
60 KB). The worker is killed (SIGKILL) once everything is committed; a new one restores the
state from the changelog, and the release's reconcile carries every one of the 400 ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.topics import changelog_topic, partition_for
from tests.kafka.kafkatools import topics, wait_for
from tests.kafka.workers import (
    Outputs,
    cloud_event,
    engine_env,
    engine_topics,
    group_done,
    publish,
    running_worker,
    start_worker,
)
from workflows.engine import TICK_KEY

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]

LIMIT = 20_000
SERVICE = "surat-pindah"


async def changelog_records(bootstrap: str, topic: str, partitions: int) -> list[tuple[bytes, int]]:
    """(key, value size) of every committed record of a changelog."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found: list[tuple[bytes, int]] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=200)
            found += [(r.key, len(r.value or b"")) for rs in batch.values() for r in rs]
        return found
    finally:
        await consumer.stop()


@pytest.mark.slow
async def test_a_state_larger_than_a_changelog_record_is_restored_exactly(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=2)
    s = engine.settings
    n = s.partitions
    changelog = changelog_topic(s, "service-state")
    key = SERVICE.encode()

    def to(topic: str, value: bytes) -> tuple[str, bytes, bytes, int]:
        return topic, key, value, partition_for(key, n)

    def ticks(at: str) -> list[tuple[str, bytes, bytes, int]]:
        tick = cloud_event("clock.tick.v1", f"tick/{at}", at, None, {})
        return [(t, TICK_KEY.encode(), tick, p) for t in engine.inputs for p in range(n)]

    def override(action: str, at: str) -> tuple[str, bytes, bytes, int]:
        data = {"action": action, "actor": "Kepala Dinas", "role": "office-head", "reason": "test"}
        event = cloud_event("operator.override.v1", f"override/{action}", at, SERVICE, data)
        return to(s.topic_overrides, event)

    ids = [f"r{i:04d}-" + "x" * 114 for i in range(400)]
    records = [
        to(
            s.topic_feedback,
            cloud_event(
                "manual.record.v1",
                f"rec/{i}",
                "2019-02-05T00:00:20Z",
                SERVICE,
                {"record_id": record_id},
            ),
        )
        for i, record_id in enumerate(ids)
    ]
    config = {"cleanup.policy": "compact", "max.message.bytes": str(LIMIT)}
    async with (
        topics(kafka_bootstrap, changelog, partitions=n, config=config),
        engine_topics(engine),
    ):
        first = [override("force_manual", "2019-02-05T00:00:10Z"), *records]
        await publish(kafka_bootstrap, [*first, *ticks("2019-02-05T00:01:00Z")])
        worker = start_worker(engine)
        try:

            async def committed() -> bool:
                assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
                return await group_done(engine)

            await wait_for(committed, timeout=90, what="every input committed")
        finally:
            worker.kill()  # no clean stop: the next worker has only the changelog
            while worker.poll() is None:
                await asyncio.sleep(0.05)

        written = await changelog_records(kafka_bootstrap, changelog, n)
        pages = {k for k, _ in written if k.startswith(key + b"\x00page/")}
        assert key in {k for k, _ in written}  # the head, under the service's own key
        assert len(pages) >= 3, f"{SERVICE}'s state was not paged: {sorted(pages)}"
        assert max(size for _, size in written) < LIMIT

        outputs = Outputs(kafka_bootstrap, [s.topic_commands])
        second = [override("release", "2019-02-05T00:02:00Z"), *ticks("2019-02-05T00:03:00Z")]
        async with outputs, running_worker(engine) as again:
            await publish(kafka_bootstrap, second)

            async def reconciled() -> bool:
                assert again.poll() is None, f"worker exited\n{engine.log_tail()}"
                await outputs.poll()
                return any(b"failover.reconcile.v1" in r.value for r in outputs.records)

            await wait_for(reconciled, timeout=90, what="the reconcile command")
            await wait_for(lambda: group_done(engine), timeout=30, what="every input committed")
            await outputs.poll()
        reconciles = [orjson.loads(r.value) for r in outputs.records]
        got = [
            record_id
            for event in reconciles
            if event["type"] == "failover.reconcile.v1"
            for record_id in event["data"]["record_ids"]
        ]
        assert sorted(got) == sorted(ids)
