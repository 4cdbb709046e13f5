"""How to read the dead letters: every input the engine refused, with why and where from.

    python examples/deadletters.py              # everything committed so far, then exit
    python examples/deadletters.py --follow     # and then each new one as it comes

Each record of failover-deadletter is an input the engine did not apply, kept whole:

- the value: the input's original bytes (as sent, binary-mode or not), so it can be fixed
  and sent again;
- the key: the input's key;
- header ``failover-reason``: a code, a colon and the details (``schema: $.data.status:
  'sideways' is not one of ...``, ``unknown-link: ...``, ``unauthenticated: ...``; every
  code is in docs/contracts.md);
- headers ``failover-source-topic``, ``-partition`` and ``-offset``: where the input was
  (absent for a dead letter of a service's own timers);
- the input's own headers, ``traceparent`` included, to find its trace.

It reads with ``isolation_level="read_committed"`` (a dead letter of an aborted transaction
is never seen) and assigns the partitions by hand: no consumer group, nothing committed, so
it disturbs no one. Every value is shown inert: a control character as its escape.

Environment: ``KAFKA_BOOTSTRAP_SERVERS`` (127.0.0.1:9092), ``FAILOVER_TOPIC_DEADLETTER``
(failover-deadletter), and on a secured cluster ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*``
and ``KAFKA_SSL_*`` (streams/security.py). The reader needs Read and Describe on the topic.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.printable import printable
from streams.security import KafkaSecurity, SecurityError

#: Characters of the input's bytes shown on its line.
SHOWN = 120


def describe(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> str:
    """One line for one dead letter: reason, where from, key, and the start of the input."""
    found = dict(headers)
    reason = found.get("failover-reason", b"?").decode("utf-8", "replace")
    where = "(no input record)"
    if "failover-source-topic" in found:
        where = "{}[{}]@{}".format(
            *(found.get(f"failover-source-{p}", b"?").decode("utf-8", "replace")
              for p in ("topic", "partition", "offset"))
        )  # fmt: skip
    shown_key = "-" if key is None else key.decode("utf-8", "replace")
    body = (value or b"").decode("utf-8", "replace")
    return (
        f"{printable(reason, 300)} | {printable(where)} | key {printable(shown_key, 80)} | "
        f"{printable(body, SHOWN)}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--follow", action="store_true", help="keep reading new ones")
    args = parser.parse_args()
    try:
        security = KafkaSecurity.from_env()
    except SecurityError as exc:
        parser.error(str(exc))
    topic = os.environ.get("FAILOVER_TOPIC_DEADLETTER", "failover-deadletter")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        isolation_level="read_committed",
        enable_auto_commit=False,
        group_id=None,
        **security.client_options(),
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            parser.error(f"no topic {topic!r}: is a worker running?")
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            for records in batch.values():
                for r in records:
                    print(describe(r.key, r.value, r.headers or ()), flush=True)
            if not args.follow:
                positions = [await consumer.position(tp) for tp in tps]
                if all(at >= ends[tp] for at, tp in zip(positions, tps, strict=True)):
                    return
    finally:
        await consumer.stop()


if __name__ == "__main__":
    asyncio.run(main())
