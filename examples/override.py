"""How a program sends an operator's override: ``operator.override.v1``, signed with the
operator's Ed25519 key, on the operator-overrides topic.

    FAILOVER_OPERATOR_KEY_FILE=~/.failover/kadis.key \\
    python examples/override.py ektp force_manual --operator "Kepala Dinas" \\
        --role office-head --reason "Jaringan putus; layani manual"

``failover override`` does the same and waits for the verdict; this is the shape of it for
a program of your own (a dispatch console, a chat bot):

- ``data``: ``action`` (``force_manual``, ``release``, ``pin``, ``unpin``), ``actor`` (the
  operator id, as in the topology's ``operators``), ``role`` and ``reason`` (audited).
- Signature: the extension attributes ``failoverkey`` (``OPERATOR/KEYNAME``) and
  ``failoversig``, an Ed25519 signature over the event's canonical bytes
  (``workflows.operators.sign_override``); the engine verifies it against the public key
  the topology lists, and the operator's grants, before acting. A refused override is
  dead-lettered with its reason (``unauthenticated``, ``forbidden``, ``stale-signature``,
  ``replayed``) and audited.
- Key: the service id (the event's ``subject``). ``time`` is now: a signature older than
  the policy's ``signature_max_age`` (15 min) behind the engine's clock is refused.
- The verdict, applied or refused, is a ``failover.audit.v1`` record on operator-audit whose
  ``data.override`` is this event's id.

Environment: ``FAILOVER_OPERATOR_KEY_FILE`` (or ``FAILOVER_OPERATOR_KEY``, the key itself: a
file made by ``failover keygen``), ``KAFKA_BOOTSTRAP_SERVERS`` (127.0.0.1:9092),
``FAILOVER_TOPIC_OVERRIDES`` (operator-overrides), and on a secured cluster
``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*`` and ``KAFKA_SSL_*`` (streams/security.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os

import orjson
from aiokafka import AIOKafkaProducer

from streams.operator_cli import OperatorKeyError, read_key, signed_override
from streams.security import KafkaSecurity, SecurityError


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", help="service id, as in the topology")
    parser.add_argument("action", choices=["force_manual", "release", "pin", "unpin"])
    parser.add_argument("--operator", required=True, help="your operator id")
    parser.add_argument("--role", required=True, help="your role, as the topology says")
    parser.add_argument("--reason", required=True, help="why, in your words (audited)")
    parser.add_argument("--key-name", default="k1", help="the name of your key (default k1)")
    args = parser.parse_args()
    try:
        security = KafkaSecurity.from_env()
        key = read_key(None, os.environ)
    except (SecurityError, OperatorKeyError) as exc:
        parser.error(str(exc))
    event = signed_override(
        args.action, args.service, args.reason, args.operator, args.role, args.key_name, key
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        enable_idempotence=True,
        **security.client_options(),
    )
    await producer.start()
    try:
        metadata = await producer.send_and_wait(
            os.environ.get("FAILOVER_TOPIC_OVERRIDES", "operator-overrides"),
            orjson.dumps(event),
            key=args.service.encode(),
            headers=[("content-type", b"application/cloudevents+json; charset=UTF-8")],
        )
        print(f"sent {event['id']} to {metadata.topic}[{metadata.partition}]@{metadata.offset}")
    finally:
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(main())
