"""The topics the worker uses, how keys map to partitions, and creating topics at start-up.

Every topic the engine reads or writes is created here before the consumer starts (the broker
does not auto-create topics, and must not: a misspelt name should fail loudly). Existing
topics are checked: the inputs and the internal topic must have exactly the configured number
of partitions, because stage 1 and stage 2 own links and services by partition.

Partitioning is Kafka's default for keyed records, ``murmur2(key) & 0x7fffffff % n`` (the
Java client's and aiokafka's ``DefaultPartitioner``). The engine computes it itself and sends
every record to an explicit partition, so no producer setting can move a service elsewhere;
producers of the inputs must use that default partitioner too (librdkafka's default,
``consistent_random``, does not: set ``partitioner=murmur2_random`` there).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.admin.config_resource import (  # type: ignore[import-untyped]
    ConfigResource,
    ConfigResourceType,
)
from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]

from streams.config import INPUT_MAX_MESSAGE_BYTES, Settings
from streams.security import KafkaSecurity

__all__ = [
    "TopicSpec",
    "TopicsError",
    "default_replication",
    "ensure_topics",
    "partition_for",
    "topic_specs",
]


_TOPIC_ALREADY_EXISTS: Final = 36


class TopicsError(RuntimeError):
    """A topic exists with a shape the engine cannot work with."""


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` among ``partitions``."""
    data = key.encode("utf-8") if isinstance(key, str) else key
    hashed: int = murmur2(data)
    return (hashed & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic to create; ``exact`` means an existing topic must have these partitions."""

    name: str
    partitions: int
    config: tuple[tuple[str, str], ...] = ()
    exact: bool = True


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic of the engine but faust's own (changelogs, leader), which faust creates."""
    n = settings.partitions
    large = (("max.message.bytes", str(INPUT_MAX_MESSAGE_BYTES)),)
    return [
        TopicSpec(settings.topic_link_status, n, large),
        TopicSpec(settings.topic_overrides, n, large),
        TopicSpec(settings.topic_feedback, n, large),
        TopicSpec(settings.topic_changes, n),
        # Outputs: any partition count works (records go to murmur2(service) of their count).
        TopicSpec(settings.topic_commands, n, exact=False),
        TopicSpec(settings.topic_transitions, n, _retention(settings), exact=False),
        TopicSpec(settings.topic_deadletter, n, large, exact=False),
    ]


def _retention(settings: Settings) -> tuple[tuple[str, str], ...]:
    """The transitions topic's ``retention.ms``: an explicit decision, not the broker's
    default (7 days on Kafka's own): it is the record of every incident."""
    days = settings.transitions_retention_days
    return (("retention.ms", str(days * 86_400_000 if days else -1)),)


async def default_replication(
    bootstrap: Iterable[str], *, security: KafkaSecurity | None = None
) -> int:
    """The brokers' ``default.replication.factor``: what the worker creates topics with when
    ``FAILOVER_REPLICATION`` is unset. (aiokafka 0.14 sends CreateTopics v3, which cannot ask
    for the broker's default with -1, so the worker asks the broker what it is.)

    Raises:
        TopicsError: the broker would not tell (it needs DescribeConfigs on the cluster).
    """
    options = security.client_options() if security is not None else {}
    admin = AIOKafkaAdminClient(bootstrap_servers=list(bootstrap), **options)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        node = str(cluster["brokers"][0]["node_id"])
        wanted = ConfigResource(
            ConfigResourceType.BROKER, node, {"default.replication.factor": None}
        )
        (response,) = await admin.describe_configs([wanted])
    finally:
        await admin.close()
    ((code, message, _type, _name, entries, *_),) = response.resources
    if code:
        raise TopicsError(
            "FAILOVER_REPLICATION is unset and the broker would not tell its "
            f"default.replication.factor (error {code}: {message}): set FAILOVER_REPLICATION, "
            "or grant the worker DescribeConfigs on the cluster"
        )
    for name, value, *_ in entries:
        if name == "default.replication.factor":
            return int(value)
    raise TopicsError("the broker's configuration has no default.replication.factor")


async def ensure_topics(
    bootstrap: Iterable[str],
    specs: Iterable[TopicSpec],
    replication: int | None,
    *,
    security: KafkaSecurity | None = None,
) -> dict[str, int]:
    """Create the topics that do not exist; return every topic's partition count.
    ``replication``: ``None`` for the brokers' default; ``security``: how to connect
    (plaintext when ``None``).

    Raises:
        TopicsError: an existing topic that must have ``partitions`` has another count.
    """
    specs, bootstrap = list(specs), list(bootstrap)
    if replication is None:
        replication = await default_replication(bootstrap, security=security)
    options = security.client_options() if security is not None else {}
    admin = AIOKafkaAdminClient(bootstrap_servers=list(bootstrap), **options)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(s.name, s.partitions, replication, topic_configs=dict(s.config))
                    for s in missing
                ]
            )
            for error in response.topic_errors:
                topic, code = error[0], error[1]
                # 36: another worker created it at the same moment; its shape is checked below.
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    message = error[2] if len(error) > 2 else ""
                    raise TopicsError(f"cannot create topic {topic!r}: error {code} {message}")
        counts = await _partition_counts(admin, [s.name for s in specs])
    finally:
        await admin.close()
    for spec in specs:
        count = counts[spec.name]
        if spec.exact and count != spec.partitions:
            raise TopicsError(
                f"topic {spec.name!r} has {count} partitions, FAILOVER_PARTITIONS is "
                f"{spec.partitions}: the inputs and the internal topic must all have "
                "FAILOVER_PARTITIONS partitions"
            )
    return counts


async def _partition_counts(
    admin: AIOKafkaAdminClient, names: list[str], timeout: float = 30.0
) -> dict[str, int]:
    """Partition counts, once every partition of every topic has a leader: a topic just
    created takes a moment to appear in the metadata of every broker."""
    deadline = time.monotonic() + timeout
    while True:
        described = await admin.describe_topics(names)
        counts: dict[str, int] = {}
        pending: list[str] = []
        for entry in described:
            partitions = entry.get("partitions") or []
            ready = (
                entry.get("error_code", 0) == 0
                and partitions
                and all(
                    p.get("error_code", 0) == 0 and p.get("leader", -1) >= 0 for p in partitions
                )
            )
            if ready:
                counts[entry["topic"]] = len(partitions)
            else:
                pending.append(f"{entry.get('topic')} (error {entry.get('error_code')})")
        if not pending and len(counts) == len(set(names)):
            return counts
        if time.monotonic() > deadline:
            raise TopicsError(f"topics not ready after {timeout}s: {', '.join(pending)}")
        await asyncio.sleep(0.1)
