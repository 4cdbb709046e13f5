"""How an office reports paper records entered into the online system:
``reconcile.completed.v1`` on the service-feedback topic.

    python examples/reconcile.py legalisir LEG-2019-0001 LEG-2019-0002

After an outage the engine sends ``failover.reconcile.v1`` (on failover-commands) with the
ids of the records done by hand (examples/manual_record.py). Once staff have entered them,
this report tells the engine; a service in ``restored`` goes back to ``online`` (and its
incident closes) when every record of the incident is reconciled. ``--incident`` names the
incident the records belong to (the ``incident`` of the reconcile command); by default the
service's open one.

- Key: the service id (the event's ``subject``), as for every service input.
- ``record_ids``: 1 to 10,000 distinct ids. Ids the incident's ledger does not hold are
  ignored; a report of none it holds is refused and dead-lettered (``unknown-records``).
- ``id``: unique per report; a report whose id was seen already changes nothing.

Environment: ``KAFKA_BOOTSTRAP_SERVERS`` (127.0.0.1:9092), ``FAILOVER_TOPIC_FEEDBACK``
(service-feedback), and on a secured cluster ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*`` and
``KAFKA_SSL_*`` as the worker reads them (streams/security.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer

from streams.security import KafkaSecurity, SecurityError


def reconciled(
    service: str,
    record_ids: Sequence[str],
    incident: str | None = None,
    now: datetime | None = None,
) -> bytes:
    """The event, stamped ``now`` (the wall clock by default)."""
    stamp = (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    data: dict[str, object] = {"record_ids": list(dict.fromkeys(record_ids))}
    if incident is not None:
        data["incident"] = incident
    event = {
        "specversion": "1.0",
        "id": f"reconciled/{service}/{uuid.uuid4()}",
        "source": "/offices/example",
        "type": "reconcile.completed.v1",
        "time": stamp,
        "subject": service,
        "datacontenttype": "application/json",
        "data": data,
    }
    return orjson.dumps(event)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", help="service id, as in the topology")
    parser.add_argument("record_ids", nargs="+", help="ids of the records entered online")
    parser.add_argument("--incident", default=None, help="the incident (default: the open one)")
    args = parser.parse_args()
    try:
        security = KafkaSecurity.from_env()
    except SecurityError as exc:
        parser.error(str(exc))
    producer = AIOKafkaProducer(
        bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        enable_idempotence=True,
        **security.client_options(),
    )
    await producer.start()
    try:
        metadata = await producer.send_and_wait(
            os.environ.get("FAILOVER_TOPIC_FEEDBACK", "service-feedback"),
            reconciled(args.service, args.record_ids, args.incident),
            key=args.service.encode(),
            headers=[("content-type", b"application/cloudevents+json; charset=UTF-8")],
        )
        print(f"sent to {metadata.topic}[{metadata.partition}]@{metadata.offset}")
    finally:
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(main())
