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

Limits. Every record the engine writes must be one the topic accepts (its
``max.message.bytes``, which bounds a whole record batch) and the producer sends (its
``max_request_size``), or the broker refuses it and the engine stops (streams/eos.py) rather
than lose it. :func:`check_limits` compares, at start, each topic the engine writes with the
largest batch the engine can write there:

- the outputs and the internal changes topic: :data:`OUTPUT_RECORD_BYTES` (the core's largest
  record: reconcile commands are paged below it, watermarks carry at most
  ``streams.partitions.WATERMARK_TICKS`` ticks);
- the dead-letter topic: the largest input (the input topics' own ``max.message.bytes``, or
  twice ``FAILOVER_MAX_EVENT_BYTES`` for an input whose refusal quotes it) plus
  :data:`DEADLETTER_HEADERS_BYTES` for the reason and origin headers;
- the changelogs of the engine's tables: :data:`CHANGELOG_MIN_MESSAGE_BYTES`. A state larger
  than the topic accepts is written as several records (``streams.app``'s pages), each within
  the limit, so no state is ever too large for its changelog;
- every topic: the producer's ``max_batch_size`` (aiokafka fills a batch up to it, and the
  broker checks the batch).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
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
    "CHANGELOG_MIN_MESSAGE_BYTES",
    "DEADLETTER_HEADERS_BYTES",
    "DEADLETTER_MAX_MESSAGE_BYTES",
    "FORWARD_HEADER_BYTES",
    "OUTPUT_RECORD_BYTES",
    "TABLES",
    "TopicSpec",
    "TopicsError",
    "changelog_specs",
    "changelog_topic",
    "check_limits",
    "default_replication",
    "ensure_topics",
    "partition_for",
    "topic_limits",
    "topic_specs",
]

#: The engine's two tables (faust names their changelogs ``{app_id}-{table}-changelog``).
TABLES: Final = ("link-health", "service-state")

#: The largest record the engine writes to an output or the internal changes topic (key,
#: value and headers): what their ``max.message.bytes`` must accept. The broker's default
#: (1,048,588) does.
OUTPUT_RECORD_BYTES: Final = 960 * 1024
#: What a dead letter adds to the input it carries: its reason and origin headers.
DEADLETTER_HEADERS_BYTES: Final = 16 * 1024
#: What forwarding adds to a reading it sends to its partition: the watermark header.
FORWARD_HEADER_BYTES: Final = 1024
#: ``max.message.bytes`` of a dead-letter topic the engine creates: the largest input, and
#: its headers, with room to spare.
DEADLETTER_MAX_MESSAGE_BYTES: Final = INPUT_MAX_MESSAGE_BYTES + 64 * 1024
#: The least ``max.message.bytes`` a changelog must accept: a state page's size is what the
#: topic accepts, less its key and the batch's overhead (``streams.app``).
CHANGELOG_MIN_MESSAGE_BYTES: Final = 16 * 1024


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
        # Readings forwarded to their link's partition: as large as inputs, with a header more.
        TopicSpec(
            settings.topic_repartition,
            n,
            (("max.message.bytes", str(INPUT_MAX_MESSAGE_BYTES + FORWARD_HEADER_BYTES)),),
        ),
        # Overrides and feedback forwarded to their service's partition: the same.
        TopicSpec(
            settings.topic_service_repartition,
            n,
            (("max.message.bytes", str(INPUT_MAX_MESSAGE_BYTES + FORWARD_HEADER_BYTES)),),
        ),
        # Outputs: any partition count works (records go to murmur2(service) of their count).
        TopicSpec(settings.topic_commands, n, exact=False),
        TopicSpec(settings.topic_transitions, n, _retention(settings), exact=False),
        # The read model: the last record of each service is its state, kept for ever.
        TopicSpec(settings.topic_state, n, (("cleanup.policy", "compact"),), exact=False),
        # The record of every operator's action: kept as long as the transitions.
        TopicSpec(settings.topic_audit, n, _retention(settings), exact=False),
        TopicSpec(
            settings.topic_deadletter,
            n,
            (("max.message.bytes", str(DEADLETTER_MAX_MESSAGE_BYTES)),),
            exact=False,
        ),
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


def changelog_topic(settings: Settings, table: str) -> str:
    """The name faust gives ``table``'s changelog."""
    return f"{settings.app_id}-{table}-changelog"


def changelog_specs(settings: Settings) -> list[TopicSpec]:
    """The changelogs of the engine's tables, as faust would create them (compacted), created
    first by the engine so that their limits are known before any state is written. The
    service states keep queued inputs (raw bytes): their topic accepts what an input topic
    does."""
    compact = ("cleanup.policy", "compact")
    large = ("max.message.bytes", str(INPUT_MAX_MESSAGE_BYTES))
    return [
        TopicSpec(changelog_topic(settings, "link-health"), settings.partitions, (compact,)),
        TopicSpec(
            changelog_topic(settings, "service-state"), settings.partitions, (compact, large)
        ),
    ]


async def topic_limits(
    bootstrap: Iterable[str], names: Iterable[str], *, security: KafkaSecurity | None = None
) -> dict[str, int]:
    """Each topic's ``max.message.bytes`` as the broker applies it (the topic's own setting,
    or the broker's ``message.max.bytes``).

    Raises:
        TopicsError: the broker did not say (no such topic, not authorised).
    """
    names = list(dict.fromkeys(names))
    options = security.client_options() if security is not None else {}
    admin = AIOKafkaAdminClient(bootstrap_servers=list(bootstrap), **options)
    await admin.start()
    try:
        query = [
            ConfigResource(ConfigResourceType.TOPIC, name, {"max.message.bytes": None})
            for name in names
        ]
        responses = await admin.describe_configs(query)
    finally:
        await admin.close()
    limits: dict[str, int] = {}
    for response in responses:
        for code, message, _type, name, entries in response.resources:
            values = [entry[1] for entry in entries if entry[0] == "max.message.bytes"]
            if code or not values:
                raise TopicsError(
                    f"cannot read max.message.bytes of topic {name!r}: error {code} {message or ''}"
                )
            limits[name] = int(values[0])
    missing = [n for n in names if n not in limits]
    if missing:
        raise TopicsError(f"the broker gave no max.message.bytes for {', '.join(missing)}")
    return limits


def check_limits(
    settings: Settings,
    limits: Mapping[str, int],
    *,
    max_request_size: int,
    max_batch_size: int,
) -> None:
    """Refuse to run if a record the engine may write would be refused (module doc).

    ``limits``: ``max.message.bytes`` of every topic the engine reads or writes (inputs,
    outputs, dead letters, the changes topic and both changelogs).

    Raises:
        TopicsError: each topic or producer setting that is too small, with the limit found,
            the limit needed and the setting to change.
    """
    s = settings
    largest_input = max(
        [limits[t] for t in (s.topic_link_status, s.topic_overrides, s.topic_feedback)]
        + [2 * s.max_event_bytes]
    )
    needed: dict[str, int] = {
        s.topic_commands: OUTPUT_RECORD_BYTES,
        s.topic_transitions: OUTPUT_RECORD_BYTES,
        s.topic_state: OUTPUT_RECORD_BYTES,
        s.topic_audit: OUTPUT_RECORD_BYTES,
        s.topic_changes: OUTPUT_RECORD_BYTES,
        s.topic_repartition: largest_input + FORWARD_HEADER_BYTES,
        s.topic_service_repartition: largest_input + FORWARD_HEADER_BYTES,
        s.topic_deadletter: largest_input + DEADLETTER_HEADERS_BYTES,
    }
    for table in TABLES:
        needed[changelog_topic(s, table)] = CHANGELOG_MIN_MESSAGE_BYTES
    problems: list[str] = []
    for topic, need in needed.items():
        need = max(need, max_batch_size)
        if limits[topic] < need:
            problems.append(
                f"topic {topic!r} accepts records (batches) of {limits[topic]} bytes "
                f"(max.message.bytes), the engine may write {need}: raise the topic's "
                f"max.message.bytes to {need} or more"
            )
    largest = max(needed.values())
    if max_request_size < largest:
        problems.append(
            f"the producer's max_request_size is {max_request_size} bytes, the engine may "
            f"write records of {largest} (to {max(needed, key=needed.__getitem__)!r}): set "
            f"FAILOVER_FAUST_PRODUCER_MAX_REQUEST_SIZE to {largest} or more"
        )
    if problems:
        raise TopicsError(
            "the broker or the producer would refuse records the engine may write, and the "
            "engine does not run so: " + "; ".join(problems)
        )


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
