"""What is committed in some topics now, read once by a command (``failover status``,
``failover export``): every record from the beginning of each partition up to its last stable
offset when the read began, by a ``read_committed`` consumer of no group (it commits nothing
and moves no deployment's offsets).

aiokafka is imported when a read begins, so replay and the demo do not pay for it; its log of
each failed connection attempt is silenced while a read runs (the caller's error says it
once) and put back afterwards (the process may go on: tests run the commands in theirs).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from streams.security import KafkaSecurity

__all__ = ["read_committed"]


def read_committed(
    bootstrap: Sequence[str],
    topics: Sequence[str],
    timeout: float,
    security: KafkaSecurity | None,
    error: Callable[[str], Exception],
    *,
    what: str,
    missing: str,
    option: str = "",
) -> list[Any]:
    """Every committed record of every partition of ``topics`` (aiokafka's
    ``ConsumerRecord``: ``topic``, ``partition``, ``offset``, ``key``, ``value``, ``headers``),
    in offset order within a partition.

    Raises ``error(message)`` when the broker cannot be reached, a topic does not exist (the
    message ends with ``missing``, in parentheses), reading fails (naming ``what``) or takes
    more than ``timeout`` seconds (naming ``option``, the setting that sets it, if any).
    """
    shown = ",".join(bootstrap)

    async def bounded() -> list[Any]:
        try:
            return await asyncio.wait_for(
                _read(bootstrap, topics, security, error, what, missing), timeout
            )
        except TimeoutError as exc:
            raise error(f"reading {what} from {shown} took more than {timeout:g}s{option}") from exc

    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        return asyncio.run(bounded())
    finally:
        logger.setLevel(level)


async def _read(
    bootstrap: Sequence[str],
    topics: Sequence[str],
    security: KafkaSecurity | None,
    error: Callable[[str], Exception],
    what: str,
    missing: str,
) -> list[Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
    from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

    shown = ",".join(bootstrap)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=list(bootstrap),
        isolation_level="read_committed",
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
        request_timeout_ms=10_000,
        **(security.client_options() if security is not None else {}),
    )
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise error(f"cannot reach the Kafka broker at {shown}: {exc}") from exc
    try:
        tps: list[TopicPartition] = []
        for topic in topics:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                raise error(f"topic {topic!r} does not exist on {shown} ({missing})")
            tps.extend(TopicPartition(topic, p) for p in sorted(partitions))
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        # read_committed: the end offsets are the last stable offsets, what is committed now.
        ends = await consumer.end_offsets(tps)
        records: list[Any] = []
        while True:
            behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
            if not behind:
                return records
            batch = await consumer.getmany(*behind, timeout_ms=500, max_records=10_000)
            for tp, found in batch.items():
                records.extend(r for r in found if r.offset < ends[tp])
    except KafkaError as exc:
        raise error(f"cannot read {what}: {exc}") from exc
    finally:
        await consumer.stop()
