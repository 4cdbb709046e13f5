"""A worker on a shared broker, for the tests and bench/kafka.py: how clients connect to the
broker under test (:func:`client_options`), a worker's environment with names of its own
(:func:`isolated_env`), where an input goes (:func:`route`) and sending inputs
(:func:`publish`), ticks tagged with the workers' key (:func:`signed`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

from streams.config import Settings
from streams.security import VARIABLES as SECURITY_VARIABLES
from streams.security import KafkaSecurity
from streams.topics import partition_for
from workflows.clock import TICK_AUTH, sign_tick
from workflows.engine import TICK_KEY

__all__ = [
    "BIG",
    "TEST_TICK_SECRET",
    "TOPIC_PURPOSES",
    "Message",
    "client_options",
    "isolated_env",
    "publish",
    "route",
    "signed",
]

#: The largest request a test or benchmark producer sends (inputs up to the topics' limit).
BIG: Final = 8 * 1024 * 1024
#: The tick key of every worker under test (FAILOVER_TICK_SECRET): :func:`publish` tags the
#: ticks it sends with it, as the engine's ticker does.
TEST_TICK_SECRET: Final = "test-tick-secret-" + "0123456789abcdef" * 2

#: Each topic variable of the worker, and the purpose its unique name is made of.
TOPIC_PURPOSES: Final = (
    ("FAILOVER_TOPIC_LINK_STATUS", "links"),
    ("FAILOVER_TOPIC_OVERRIDES", "overrides"),
    ("FAILOVER_TOPIC_FEEDBACK", "feedback"),
    ("FAILOVER_TOPIC_COMMANDS", "commands"),
    ("FAILOVER_TOPIC_TRANSITIONS", "transitions"),
    ("FAILOVER_TOPIC_STATE", "state"),
    ("FAILOVER_TOPIC_DEADLETTER", "dead"),
    ("FAILOVER_TOPIC_CHANGES", "changes"),
    ("FAILOVER_TOPIC_REPARTITION", "repartition"),
    ("FAILOVER_TOPIC_SERVICE_REPARTITION", "service-repartition"),
    ("FAILOVER_TOPIC_AUDIT", "audit"),
)


def client_options() -> dict[str, Any]:
    """aiokafka's connection arguments for the broker under test, from the environment as
    the worker reads them (``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*``, ``KAFKA_SSL_*``;
    plaintext when unset). Every Kafka client of the tests is made with them."""
    return KafkaSecurity.from_env().client_options()


def signed(raw: bytes, secret: str = TEST_TICK_SECRET) -> bytes:
    """``raw`` with its tag if it is an untagged ``clock.tick.v1``; anything else as it is."""
    if b"clock.tick.v1" not in raw:
        return raw
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    if not isinstance(event, dict) or event.get("type") != "clock.tick.v1" or TICK_AUTH in event:
        return raw
    return orjson.dumps(sign_tick(secret.encode(), event))


def isolated_env(
    bootstrap: str, topology: Path, partitions: int, data_dir: Path, name: Callable[[str], str]
) -> dict[str, str]:
    """A worker's environment on a shared broker (the tests' and bench/kafka.py's): its own
    app id and topics, ``name(purpose)`` each, the memory store, logs at info, the tick key
    :data:`TEST_TICK_SECRET`; TLS and SASL as the test's own clients have them (the
    environment's ``KAFKA_SECURITY_PROTOCOL``...)."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "FAILOVER_TOPOLOGY": str(topology),
        "FAILOVER_APP_ID": name("app"),
        "FAILOVER_PARTITIONS": str(partitions),
        "FAILOVER_STORE": "memory://",
        "FAILOVER_DATA_DIR": str(data_dir),
        "FAILOVER_LOG_LEVEL": "info",
        "FAILOVER_TICK_SECRET": TEST_TICK_SECRET,
    }
    env.update((variable, name(purpose)) for variable, purpose in TOPIC_PURPOSES)
    env.update((v, os.environ[v]) for v in SECURITY_VARIABLES if os.environ.get(v))
    return env


def route(settings: Settings, raw: bytes) -> list[tuple[str, bytes, int]]:
    """Where a line of a replay file goes on Kafka: (topic, key, partition) for each copy.

    Ticks go to every partition of the three input topics; link events to link-status keyed
    by link; overrides to operator-overrides and records/reconciliations to service-feedback,
    keyed by service (the one table: :meth:`streams.config.Settings.input_topics`); a
    maintenance window's action to every partition of operator-overrides, keyed by the
    window id; a line that is not JSON to link-status, keyed ``garbage``.
    """
    n = settings.partitions
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return [(settings.topic_link_status, b"garbage", partition_for(b"garbage", n))]
    type_ = event.get("type") if isinstance(event, dict) else None
    topics = settings.input_topics(type_ if isinstance(type_, str) else "")
    if type_ == "clock.tick.v1":
        return [(t, TICK_KEY.encode(), p) for t in topics for p in range(n)]
    key = str(event.get("subject")).encode()
    if type_ == "operator.maintenance.v1":  # a window: to every partition, by its id
        return [(topic, key, p) for topic in topics for p in range(n)]
    return [(topic, key, partition_for(key, n)) for topic in topics]


#: A record to publish: (topic, key, value, partition), optionally with its headers.
Message = (
    tuple[str, bytes | None, bytes, int | None]
    | tuple[str, bytes | None, bytes, int | None, Sequence[tuple[str, bytes]]]
)


async def publish(
    bootstrap: str,
    messages: Iterable[Message],
    *,
    sign: bool = True,
    security: KafkaSecurity | None = None,
) -> int:
    """Send (topic, key, value, partition[, headers]) in order with one idempotent producer;
    a tick is sent tagged with :data:`TEST_TICK_SECRET` (:func:`signed`) unless ``sign`` is
    false. ``security``: how to connect (by default :func:`client_options`, the
    environment's)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=BIG,
        max_batch_size=1024 * 1024,
        **(security.client_options() if security is not None else client_options()),
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                signed(value) if sign else value,
                key=key,
                partition=partition,
                headers=list(rest[0]) if rest else None,
            )
            for topic, key, value, partition, *rest in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(futures)
