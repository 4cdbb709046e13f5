"""How ticks are made: ``clock.tick.v1`` on every partition of the three input topics, tagged
with the engine's tick key.

    FAILOVER_TICK_SECRET_FILE=/run/secrets/tick python examples/ticker.py --interval 1
    python examples/ticker.py --once          # one tick now, then exit

The worker has this ticker built in (``FAILOVER_TICK_INTERVAL``, 1 s by default). Run one
of your own when the workers run with ``FAILOVER_TICK_INTERVAL=0``: one ticker for the whole
deployment, not one per worker, or a clock you control (a test, a replay onto Kafka).

- A tick says "event time has reached T": the engine's clock is the last tick applied, and a
  service's inputs wait in order until a tick passes them. A tick at or before the clock
  changes nothing, so two tickers for a moment do no harm.
- It goes to **every partition** of link-status, operator-overrides and service-feedback,
  after the records already there: each partition's tick is its watermark. Key ``__tick__``.
- ``failoverauth``: HMAC-SHA256 of the tick under ``FAILOVER_TICK_SECRET`` (the workers'
  key); a tick without a valid tag is dead-lettered (``unauthenticated-tick``), since a
  producer that can send a tick can move the engine's clock. Without a key the ticker, like
  the worker, refuses to start unless ``FAILOVER_UNSIGNED_TICKS=accept``.
- ``id`` is ``tick/TIME``: the same instant is the same tick wherever it is read.

Environment: ``FAILOVER_TICK_SECRET`` or ``FAILOVER_TICK_SECRET_FILE`` (as the worker),
``KAFKA_BOOTSTRAP_SERVERS``, the ``FAILOVER_TOPIC_*`` names (and ``FAILOVER_TOPIC_PREFIX``),
and on a secured cluster ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*`` and ``KAFKA_SSL_*``.
The ticker needs Write and Describe on the three input topics.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiokafka import AIOKafkaProducer

from streams.codec import CONTENT_TYPE, tick_event
from streams.config import Settings, SettingsError
from workflows.engine import TICK_KEY


def now_micros() -> int:
    """The wall clock in whole milliseconds, as µs since the epoch: the tick's time."""
    return time.time_ns() // 1_000_000 * 1_000


async def send_tick(
    producer: AIOKafkaProducer, topics: list[str], at: int, key: bytes | None
) -> int:
    """One tick at ``at`` on every partition of ``topics``, tagged under ``key`` (untagged
    when ``None``: workers with ``FAILOVER_UNSIGNED_TICKS=accept``); the copies sent."""
    _, raw = tick_event(at, key)
    sends = []
    for topic in topics:
        for partition in sorted(await producer.partitions_for(topic)):
            headers = [("content-type", CONTENT_TYPE)]
            sent = await producer.send(
                topic, raw, key=TICK_KEY.encode(), partition=partition, headers=headers
            )
            sends.append(sent)
    await asyncio.gather(*sends)
    return len(sends)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between ticks")
    parser.add_argument("--once", action="store_true", help="send one tick, then exit")
    args = parser.parse_args()
    try:
        settings = Settings.from_env()
        key = settings.tick_key()
    except SettingsError as exc:
        parser.error(str(exc))
    topics = [settings.topic_link_status, settings.topic_overrides, settings.topic_feedback]
    producer = AIOKafkaProducer(
        bootstrap_servers=list(settings.bootstrap_servers),
        enable_idempotence=True,
        **settings.security.client_options(),
    )
    await producer.start()
    try:
        while True:
            at = now_micros()
            copies = await send_tick(producer, topics, at, key)
            print(f"tick {tick_event(at)[0]} to {copies} partitions", flush=True)
            if args.once:
                return
            await asyncio.sleep(args.interval)
    finally:
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(main())
