"""How a probe publishes a link reading: ``link.status.v1`` on the link-status topic.

    python examples/probe.py telkom-sto-pattimura down
    python examples/probe.py backup-4g up --latency-ms 90 --loss-pct 1

- Key: the link id (the event's ``subject``). The engine owns each link in the partition
  Kafka's default partitioner gives its key (murmur2, as in the Java client and aiokafka); a
  reading that lands elsewhere is forwarded to it, which costs a hop. With librdkafka
  (confluent-kafka), set ``partitioner=murmur2_random`` to spare it.
- Value: a structured-mode CloudEvent (JSON). ``id`` must be unique per reading: a message
  whose id was seen already is a duplicate. ``time`` is when the probe observed the link.
- Header ``traceparent`` (W3C trace context), optional: the engine continues the trace.
- An idempotent producer with ``acks=all``: a retried send is never written twice.

Environment: ``KAFKA_BOOTSTRAP_SERVERS`` (127.0.0.1:9092), ``FAILOVER_TOPIC_LINK_STATUS``
(link-status), and on a secured cluster ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*`` and
``KAFKA_SSL_*`` as the worker reads them (streams/security.py, which needs nothing but the
standard library). A probe needs only Write and Describe on the link-status topic.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer

from streams.security import KafkaSecurity, SecurityError


def reading(link: str, status: str, latency_ms: float | None, loss_pct: float | None) -> bytes:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event = {
        "specversion": "1.0",
        "id": f"probe/{link}/{now}",
        "source": "/probes/example",
        "type": "link.status.v1",
        "time": now,
        "subject": link,
        "datacontenttype": "application/json",
        "data": {"status": status, "latency_ms": latency_ms, "loss_pct": loss_pct},
    }
    return orjson.dumps(event)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("link", help="link id, as in the topology")
    parser.add_argument("status", choices=["up", "degraded", "down"])
    parser.add_argument("--latency-ms", type=float, default=None)
    parser.add_argument("--loss-pct", type=float, default=None)
    args = parser.parse_args()
    try:
        security = KafkaSecurity.from_env()
    except SecurityError as exc:
        parser.error(str(exc))
    producer = AIOKafkaProducer(
        bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        enable_idempotence=True,  # implies acks="all"
        **security.client_options(),
    )
    await producer.start()
    try:
        # A new trace per reading here; a real probe passes on the context it runs in.
        traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
        metadata = await producer.send_and_wait(
            os.environ.get("FAILOVER_TOPIC_LINK_STATUS", "link-status"),
            reading(args.link, args.status, args.latency_ms, args.loss_pct),
            key=args.link.encode(),
            headers=[
                ("content-type", b"application/cloudevents+json; charset=UTF-8"),
                ("traceparent", traceparent.encode()),
            ],
        )
        print(f"sent to {metadata.topic}[{metadata.partition}]@{metadata.offset}")
    finally:
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(main())
