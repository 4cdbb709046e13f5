"""How a downstream service reads the engine's commands exactly once.

    python examples/consumer.py            # prints each command once; Ctrl-C to stop

The engine writes ``failover-commands`` in Kafka transactions, so:

1. Read with ``isolation_level="read_committed"``: records of a transaction that was
   aborted (a worker that died mid-way) are never seen.
2. Still drop a CloudEvent ``id`` seen before: ids are deterministic, and the same decision
   has the same id whichever worker or replay made it, so a duplicate is always recognisable.
   Record the id *in the same local transaction as the effect* (here: one SQLite
   transaction that queues the notice and remembers the id), so that handling and
   remembering cannot be separated by a crash.
3. Commit the Kafka offset only *after* handling: a crash in between redelivers the
   command, and step 2 drops it.

Environment: ``KAFKA_BOOTSTRAP_SERVERS`` (127.0.0.1:9092), ``FAILOVER_TOPIC_COMMANDS``
(failover-commands), ``CONSUMER_GROUP`` (notice-sender), ``CONSUMER_DB``
(notice-sender.sqlite), and on a secured cluster ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*``
and ``KAFKA_SSL_*`` as the worker reads them (streams/security.py). The consumer needs Read
and Describe on the commands topic and Read on its group.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.security import KafkaSecurity


def handle(db: sqlite3.Connection, event: dict[str, Any]) -> bool:
    """Apply one command once; false if its id was handled before.

    The effect here is a row in the sender's own queue (a real notice sender then sends the
    SMS or e-mail from it), written in the same SQLite transaction as the id: both or neither.
    """
    with db:
        if db.execute("SELECT 1 FROM handled WHERE id = ?", (event["id"],)).fetchone():
            return False
        db.execute(
            "INSERT INTO handled (id, type, service, event) VALUES (?, ?, ?, ?)",
            (event["id"], event["type"], event["data"]["service"], orjson.dumps(event)),
        )
    data = event["data"]
    print(f"{event['time']} {event['type']} {data['service']} {data.get('audience', '')}")
    return True


async def main() -> None:
    db = sqlite3.connect(os.environ.get("CONSUMER_DB", "notice-sender.sqlite"))
    db.execute(
        "CREATE TABLE IF NOT EXISTS handled"
        " (id TEXT PRIMARY KEY, type TEXT, service TEXT, event BLOB)"
    )
    consumer = AIOKafkaConsumer(
        os.environ.get("FAILOVER_TOPIC_COMMANDS", "failover-commands"),
        bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        group_id=os.environ.get("CONSUMER_GROUP", "notice-sender"),
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **KafkaSecurity.from_env().client_options(),
    )
    await consumer.start()
    try:
        async for message in consumer:
            if not handle(db, orjson.loads(message.value or b"null")):
                print(f"duplicate dropped: {message.topic}[{message.partition}]@{message.offset}")
            tp = TopicPartition(message.topic, message.partition)
            await consumer.commit({tp: message.offset + 1})
    finally:
        await consumer.stop()
        db.close()


if __name__ == "__main__":
    asyncio.run(main())
