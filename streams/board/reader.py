"""The board's Kafka side: reads ``service-state``, ``service-transitions`` and
``failover-commands`` from the beginning into a :class:`~streams.board.model.Board`, and
measures the engine's consumer lag from the broker.

Every board reads every partition itself (manual assignment, no consumer group, nothing
committed), so any number of boards behind a load balancer each hold the whole state.
``read_committed``: records of an aborted or still open transaction of the engine are never
shown. The board is *ready* once it has read the compacted state topic up to the end offsets
it found at start.

The engine's lag is read from the broker (the committed offsets of the worker's group against
the end offsets of the same partitions), not from the worker, so it keeps growing when every
worker is dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from streams.board.model import Board
from streams.security import KafkaSecurity

__all__ = ["Lag", "Reader", "Topics"]

log = logging.getLogger("failover.board")


@dataclass(frozen=True, slots=True)
class Topics:
    state: str
    transitions: str
    commands: str

    def kinds(self) -> dict[str, str]:
        return {self.state: "state", self.transitions: "transitions", self.commands: "commands"}


@dataclass(slots=True)
class Lag:
    """The engine group's lag per topic, when it was last measured (wall clock)."""

    group: str
    by_topic: dict[str, int]
    checked: datetime | None = None


class Reader:
    """Reads the topics into ``board`` until :meth:`stop`."""

    def __init__(
        self,
        board: Board,
        bootstrap: str | list[str],
        topics: Topics,
        engine_group: str,
        *,
        check_interval: float = 5.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        security: KafkaSecurity | None = None,
    ) -> None:
        self.board = board
        self.bootstrap = bootstrap
        self.topics = topics
        self.check_interval = check_interval
        self.clock = clock
        #: TLS and SASL options of the clients, as the worker's (streams/security.py).
        self.options: dict[str, Any] = security.client_options() if security is not None else {}
        self.lag = Lag(engine_group, {})
        #: The end offsets of the state topic when the board started; ``None`` until known.
        self.targets: dict[TopicPartition, int] | None = None
        self.ready = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._assigned: set[TopicPartition] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            **self.options,
        )
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **self.options)
        await self._consumer.start()
        await self._admin.start()
        self._tasks = [
            asyncio.create_task(self._read(), name="board-read"),
            asyncio.create_task(self._check(), name="board-check"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()

    async def _assign(self) -> None:
        """Assign every partition of the topics that exist, keeping the positions of those
        already assigned; the state topic's end offsets become the readiness targets."""
        consumer, admin = self._consumer, self._admin
        assert consumer is not None
        assert admin is not None
        wanted: set[TopicPartition] = set()
        for described in await admin.describe_topics(list(self.topics.kinds())):
            if described["error_code"] == 0:
                wanted |= {
                    TopicPartition(described["topic"], p["partition"])
                    for p in described["partitions"]
                }
        if wanted == self._assigned:
            return
        positions = {tp: await consumer.position(tp) for tp in self._assigned}
        consumer.assign(sorted(wanted))
        for tp in wanted:
            if tp in positions:
                consumer.seek(tp, positions[tp])
            else:
                await consumer.seek_to_beginning(tp)
        self._assigned = wanted
        state = sorted(tp for tp in wanted if tp.topic == self.topics.state)
        if state and self.targets is None:
            self.targets = await consumer.end_offsets(state)
            log.info("board: catching up to %s", {str(k): v for k, v in self.targets.items()})

    async def _caught_up(self) -> bool:
        consumer = self._consumer
        assert consumer is not None
        if self.targets is None:
            return False
        for tp, end in self.targets.items():
            if end > 0 and await consumer.position(tp) < end:
                return False
        return True

    async def _read(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        kinds = self.topics.kinds()
        while True:
            if not self._assigned or self.targets is None:
                await self._assign()
                if not self._assigned:
                    await asyncio.sleep(1.0)
                    continue
            try:
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            except KafkaError as exc:
                # The consumer reconnects by itself; the page says when it last heard.
                log.warning("board: fetch failed: %s", type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            for tp, records in batches.items():
                kind = kinds[tp.topic]
                for record in records:
                    self.board.apply(tp.topic, kind, record.key, record.value)
            if batches:
                self.board.heard(self.clock())
            if not self.ready.is_set() and await self._caught_up():
                self.ready.set()
                log.info("board: caught up with %s", self.topics.state)

    async def _check(self) -> None:
        """Every ``check_interval``: topics created since, the engine's lag, and whether the
        broker answers (which is hearing from Kafka even when no record comes)."""
        while True:
            try:
                await self._assign()
                self.board.heard(self.clock())
            except KafkaError as exc:
                log.warning("board: broker check failed: %s", type(exc).__name__)
            try:
                await self.measure_lag()
            except KafkaError as exc:
                log.warning("board: the engine's lag could not be read: %s", type(exc).__name__)
            await asyncio.sleep(self.check_interval)

    async def measure_lag(self) -> None:
        """The engine group's committed offsets against the end offsets, summed per topic.
        Partitions the group never committed are not counted (no position to lag from)."""
        admin, consumer = self._admin, self._consumer
        assert admin is not None
        assert consumer is not None
        committed = await admin.list_consumer_group_offsets(self.lag.group)
        known = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
        by_topic: dict[str, int] = {}
        if known:
            ends = await consumer.end_offsets(sorted(known))
            for tp, offset in known.items():
                by_topic[tp.topic] = by_topic.get(tp.topic, 0) + max(0, ends[tp] - offset)
        self.lag = Lag(self.lag.group, by_topic, self.clock())
