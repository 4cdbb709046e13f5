"""How an office reports a record it processed by hand: ``manual.record.v1`` on the
service-feedback topic.

    python examples/manual_record.py legalisir LEG-2019-0001 --kind legalisation \\
        --note "Ijazah SMA, dilegalisir manual"

While a service is ``manual``, its staff work on paper; each record done so is reported, and
the engine keeps it in the incident's ledger. Once the service is back, the engine sends a
``failover.reconcile.v1`` command with the ids to re-enter; the office reports them entered
with examples/reconcile.py, and the incident closes when every one is.

- Key: the service id (the event's ``subject``): the engine owns each service in the
  partition Kafka's default partitioner gives its key (murmur2).
- ``id``: unique per record report; a report whose id was seen already changes nothing.
- A record for an online-only service (a held queue keeps no paper ledger) is refused and
  dead-lettered (``not-applicable``); so is one while the service is ``online``.

Environment: ``KAFKA_BOOTSTRAP_SERVERS`` (127.0.0.1:9092), ``FAILOVER_TOPIC_FEEDBACK``
(service-feedback), and on a secured cluster ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*`` and
``KAFKA_SSL_*`` as the worker reads them (streams/security.py). The office needs Write and
Describe on the feedback topic.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer

from streams.security import KafkaSecurity, SecurityError


def manual_record(
    service: str,
    record_id: str,
    kind: str | None = None,
    note: str | None = None,
    now: datetime | None = None,
) -> bytes:
    """The event, stamped ``now`` (the wall clock by default: when the record was done)."""
    stamp = (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    data: dict[str, str] = {"record_id": record_id}
    if kind is not None:
        data["kind"] = kind
    if note is not None:
        data["note"] = note
    event = {
        "specversion": "1.0",
        "id": f"record/{service}/{record_id}/{uuid.uuid4()}",
        "source": "/offices/example",
        "type": "manual.record.v1",
        "time": stamp,
        "subject": service,
        "datacontenttype": "application/json",
        "data": data,
    }
    return orjson.dumps(event)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", help="service id, as in the topology")
    parser.add_argument("record_id", help="the record's id (letters, digits, . _ / : -)")
    parser.add_argument("--kind", default=None, help="kind of record, e.g. legalisation")
    parser.add_argument("--note", default=None, help="free text")
    args = parser.parse_args()
    try:
        security = KafkaSecurity.from_env()
    except SecurityError as exc:
        parser.error(str(exc))
    producer = AIOKafkaProducer(
        bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        enable_idempotence=True,  # acks=all, a retried send is never written twice
        **security.client_options(),
    )
    await producer.start()
    try:
        metadata = await producer.send_and_wait(
            os.environ.get("FAILOVER_TOPIC_FEEDBACK", "service-feedback"),
            manual_record(args.service, args.record_id, args.kind, args.note),
            key=args.service.encode(),
            headers=[("content-type", b"application/cloudevents+json; charset=UTF-8")],
        )
        print(f"sent to {metadata.topic}[{metadata.partition}]@{metadata.offset}")
    finally:
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(main())
