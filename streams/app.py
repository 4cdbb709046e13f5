"""The engine on Kafka: a faust app with two stages, two tables and a ticker.

Built by :func:`build_app` from :class:`~streams.config.Settings` (nothing happens at import:
tests build apps with their own ids and topics).

- Topics: every topic is raw bytes; inputs are decoded by :func:`workflows.inputs.decode`,
  never by a faust codec. All of the engine's topics, the compacted changelogs of the two
  tables included, are created before the consumer starts (:meth:`FailoverApp.on_first_start`;
  faust creates its leader topic), and their ``max.message.bytes`` checked against the
  largest record the engine may write to each (:func:`streams.topics.check_limits`): the
  worker does not run if one could be refused.
- A state larger than one changelog record is written as pages within the limit, and put
  together again on restore (:class:`_TableView`).
- Stage 1 reads the link-status topic; stage 2 reads the changes, overrides and feedback
  topics, registered as one faust topic with three names (faust's assignor puts topics with
  the same partition count and the same subscribers into one group and gives partition ``q``
  of each to the same worker: they are co-partitioned). Neither is a faust agent: faust's
  per-event path costs some 30 times what the engine does per event, so the records of each
  topic-partition come to :meth:`FailoverApp._handle` one fetch at a time
  (:mod:`streams.batches`).
- Per assigned partition, a :class:`~streams.partitions.LinkPartition` or
  :class:`~streams.partitions.ServicePartition` does the work; its state is written through
  to the ``link-health`` or ``service-state`` table, and it is rebuilt from the table the first
  time an input of its partition arrives after a rebalance (faust has recovered the table from
  its changelog by then: streams resume only after recovery).
- Every record an input causes, table changelog records included, goes out through
  :class:`~streams.eos.Outbox`, in the input partition's transaction under exactly-once;
  streams/eos.py says what faust gets wrong there, and why the outbox is right. Every patch
  of faust and aiokafka (the faust bugs that lose state, inputs or offsets after a restart
  among them) is installed by :func:`streams.patches.install`, behind one version gate.
- The ticker (``FAILOVER_TICK_INTERVAL`` > 0) runs on the leader only and publishes
  ``clock.tick.v1`` at the wall clock, tagged with the tick key, to every partition of the
  three input topics. The wall clock is read in one other place: before each batch, for the
  latest event time an input may carry (``max_future`` ahead: :mod:`workflows.clock`).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import Any, Final, cast

import faust
import orjson

from streams import patches
from streams.batches import BatchHandler
from streams.batches import forget as forget_batches
from streams.codec import ConsumerRecord, Origin, tick_event
from streams.config import FAUST_PREFIX, INPUT_MAX_MESSAGE_BYTES, Settings, SettingsError
from streams.eos import Outbox, Tombstone
from streams.outage import PRODUCER_REQUEST_TIMEOUT
from streams.partitions import (
    FEEDBACK_SOURCE,
    OVERRIDES_SOURCE,
    LinkPartition,
    Record,
    Routing,
    ServicePartition,
    Trace,
)
from streams.printable import printable
from streams.telemetry import Telemetry
from streams.topics import (
    CHANGELOG_MIN_MESSAGE_BYTES,
    TABLES,
    changelog_specs,
    changelog_topic,
    check_limits,
    default_replication,
    ensure_topics,
    topic_limits,
    topic_specs,
)
from streams.tracing import KafkaTopics, KafkaTracing
from workflows.engine import INPUT_TYPES, TICK_KEY
from workflows.topology import Topology

__all__ = ["LINK_TABLE", "PAGED", "SERVICE_TABLE", "FailoverApp", "StateError", "build_app"]

_log = logging.getLogger(__name__)

LINK_TABLE, SERVICE_TABLE = TABLES


#: The head of a state written as pages: never the start of a state itself (JSON).
PAGED: Final = b"\x00failover/paged\x00"
#: What a record adds to its key and value in a batch: the batch header (61 bytes) and the
#: record's own varints and attributes, with room to spare.
RECORD_OVERHEAD: Final = 256


class StateError(RuntimeError):
    """A table's state cannot be read back as it was written (a page missing or altered)."""


def page_key(raw_key: bytes, number: int) -> bytes:
    """The changelog key of page ``number`` of the state under ``raw_key``."""
    return raw_key + b"\x00page/" + str(number).encode()


class _TableView:
    """One partition's view of a faust table, for :class:`~streams.partitions.StateTable`.

    Writes go to the local store directly and their changelog records are collected here, to
    be sent by the :class:`~streams.eos.Outbox` with the input's other records: faust's own
    ``table[key] = value`` would send them through a buffer the commit does not wait for.

    A state larger than one changelog record may be (``record_bytes``: what the topic and the
    producer accept, read at start) is written as pages: its bytes cut into records under
    :func:`page_key` keys, then a head record under the key itself, :data:`PAGED` and the
    page count, the length and the SHA-256 of the whole. Pages the previous state of the key
    had beyond the new count are deleted (tombstones, so the compacted changelog forgets
    them). All of them go into the same transaction as the input that changed the state, so
    a read_committed restore (faust's, into the store) sees a whole version or the previous
    one; :meth:`get` reassembles it and checks length and digest. A service's ledger of
    paper records can so grow past any broker limit, and be restored exactly.
    """

    def __init__(self, table: Any, partition: int, record_bytes: int) -> None:
        store = table.data
        self._changelog: str = table.changelog_topic.get_topic_name()
        self._partition = partition
        self._record_bytes = record_bytes
        self.pending: list[Record | Tombstone] = []
        #: Pages of each key written or read as paged (0: a plain state).
        self._pages: dict[bytes, int] = {}
        # faust's RocksDB store finds the partition's database through the current faust
        # event, and the batch path has none: address the partition's database directly.
        self._db: Any = None
        self._key_index: Any = None
        if hasattr(store, "_db_for_partition"):
            self._db = store._db_for_partition(partition)
            self._key_index = store._key_index
        self._store = store

    def _read(self, raw_key: bytes) -> bytes | None:
        value = self._db.get(raw_key) if self._db is not None else self._store.get(raw_key)
        return bytes(value) if value is not None else None

    def _write(self, raw_key: bytes, value: bytes) -> None:
        if self._db is not None:
            self._db.put(raw_key, value)
            self._key_index[raw_key] = self._partition
        else:
            self._store[raw_key] = value
        self.pending.append(Record(self._changelog, raw_key, value, self._partition, []))

    def _delete(self, raw_key: bytes) -> None:
        if self._db is not None:
            self._db.delete(raw_key)
            self._key_index.pop(raw_key, None)
        else:
            self._store.pop(raw_key, None)
        self.pending.append(Tombstone(self._changelog, raw_key, None, self._partition, []))

    def _head(self, key: str, raw: bytes) -> dict[str, Any]:
        try:
            head = orjson.loads(raw[len(PAGED) :])
            if isinstance(head, dict) and isinstance(head.get("pages"), int):
                return head
        except orjson.JSONDecodeError:
            pass
        raise StateError(f"{self._changelog}[{self._partition}] {key!r}: unreadable page head")

    def get(self, key: str) -> bytes | None:
        raw_key = key.encode()
        value = self._read(raw_key)
        if value is None or not value.startswith(PAGED):
            self._pages[raw_key] = 0
            return value
        head = self._head(key, value)
        pages = []
        for number in range(head["pages"]):
            page = self._read(page_key(raw_key, number))
            if page is None:
                raise StateError(
                    f"{self._changelog}[{self._partition}] {key!r}: page {number} of "
                    f"{head['pages']} is missing"
                )
            pages.append(page)
        whole = b"".join(pages)
        if len(whole) != head.get("bytes") or hashlib.sha256(whole).hexdigest() != head.get(
            "sha256"
        ):
            raise StateError(
                f"{self._changelog}[{self._partition}] {key!r}: the pages do not make the "
                f"state they were written as ({len(whole)} bytes, {head.get('bytes')} written)"
            )
        self._pages[raw_key] = head["pages"]
        return whole

    def put(self, key: str, value: bytes) -> None:
        raw_key = key.encode()
        before = self._pages.get(raw_key)
        if before is None:  # never read: what the store holds tells
            held = self._read(raw_key)
            before = self._head(key, held)["pages"] if held and held.startswith(PAGED) else 0
        room = self._record_bytes - RECORD_OVERHEAD - len(raw_key)
        if len(value) <= room and not value.startswith(PAGED):
            pages = 0
            self._write(raw_key, value)
        else:
            size = self._record_bytes - RECORD_OVERHEAD - len(page_key(raw_key, 10**9))
            pages = -(-len(value) // size)
            for number in range(pages):
                self._write(page_key(raw_key, number), value[number * size : (number + 1) * size])
            digest = hashlib.sha256(value).hexdigest()
            head = {"pages": pages, "bytes": len(value), "sha256": digest}
            self._write(raw_key, PAGED + orjson.dumps(head))
        for number in range(pages, before):
            self._delete(page_key(raw_key, number))
        self._pages[raw_key] = pages

    def drain(self) -> list[Record | Tombstone]:
        pending, self.pending = self.pending, []
        return pending


def faust_environment(settings: Settings) -> dict[str, str]:
    """The environment faust reads its settings from: ``FAILOVER_FAUST_<NAME>`` as ``<NAME>``,
    and nothing else of the process's.

    Raises:
        SettingsError: a name is none of faust's.
    """
    known = {p.env_name for p in faust.Settings.SETTINGS.values() if p.env_name}
    for name, _ in settings.faust_env:
        if name not in known:
            raise SettingsError(
                f"{FAUST_PREFIX}{name}",
                f"faust reads no setting from {name} (faust-streaming {faust.__version__})",
            )
    return dict(settings.faust_env)


def settle_heap() -> None:
    """Collect, then freeze, the whole heap: the engine's state is long-lived, and CPython's
    full collections walk every tracked object. Measured in the worker of bench/kafka.py (c)
    at 1,000 services: 7 full collections in 30 s, 65 ms each, every in-flight input held
    up meanwhile; the pause grows with the topology. Frozen objects are never walked again.
    Run after each rebalance: ``unfreeze`` first, so that what the last one froze and the
    rebalance dropped (the revoked partitions' stages) is collected, not kept for ever."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


_TRACEPARENT: Final = re.compile(rb"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


def _trace_of(headers: Sequence[tuple[str, bytes]]) -> str:
    """`` trace=<id>`` for a log line about a record whose headers carry a W3C
    ``traceparent`` (the input's, or the engine's span under it: one trace), else nothing.
    Only a well-formed value is shown: a header is input, and must not forge the line."""
    for name, value in reversed(headers):
        if name == "traceparent":
            match = _TRACEPARENT.fullmatch(value)
            if match is not None:
                return f" trace={match.group(1).decode()}"
    return ""


class FailoverApp(faust.App):
    """The faust app of the engine. Use :func:`build_app`."""

    def __init__(
        self, settings: Settings, topology: Topology, tracing: KafkaTracing | None = None
    ) -> None:
        super().__init__(
            settings.app_id,
            broker=settings.broker_urls,
            # TLS and SASL for the consumer, the producers and topic creation (None: plaintext).
            broker_credentials=settings.security.faust_credentials(),
            store=settings.store,
            datadir=str(settings.data_dir),
            autodiscover=False,
            processing_guarantee=settings.processing_guarantee,
            topic_partitions=settings.partitions,
            # Until on_first_start has asked the brokers for their default (streams/topics.py).
            topic_replication_factor=settings.replication or 1,
            topic_allow_declare=True,
            table_standby_replicas=0,
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=settings.commit_interval,
            broker_commit_every=1_000_000,
            # One fetch hands the batch path up to this many records (streams/batches.py).
            broker_max_poll_records=10_000,
            broker_session_timeout=settings.session_timeout,
            broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
            producer_max_request_size=INPUT_MAX_MESSAGE_BYTES + 64 * 1024,
            # How long a broker outage records wait out (streams/outage.py).
            producer_request_timeout=PRODUCER_REQUEST_TIMEOUT,
            consumer_max_fetch_size=INPUT_MAX_MESSAGE_BYTES + 64 * 1024,
            key_serializer="raw",
            value_serializer="raw",
            web_enabled=settings.web_port > 0,
            web_port=settings.web_port or 6066,
            # faust reads only what FAILOVER_FAUST_* gives it (streams/config.py).
            env=faust_environment(settings),
        )
        self.settings = settings
        self.topology = topology
        self.tracing = tracing or KafkaTracing(
            Telemetry(), topology, kafka=KafkaTopics.of(settings)
        )
        #: Read by streams/patches/fetch_wait.py when faust creates its consumer.
        self.fetch_max_wait_ms = round(settings.fetch_max_wait * 1000)
        #: Read by streams/patches/transaction_timeout.py when faust creates a transactional
        #: producer.
        self.transaction_timeout_ms = round(settings.transaction_timeout * 1000)
        #: Inputs by type and dead letters by reason code, since start.
        self.counts: Counter[str] = Counter()
        self.outbox = Outbox(self, exactly_once=settings.exactly_once)
        self.outbox.before_commit = self._flush_state
        #: The ticks' HMAC key; None only with FAILOVER_UNSIGNED_TICKS=accept (refuses to
        #: build the app with neither).
        self.tick_key = settings.tick_key()
        self.routing = Routing(settings)
        #: By changelog topic, the largest record it accepts (read at start).
        self.record_bytes: dict[str, int] = {}
        self._links: dict[int, tuple[LinkPartition, _TableView]] = {}
        #: The engine's internal topics: their records are not inputs (metrics).
        self._internal = frozenset(
            (settings.topic_changes, settings.topic_repartition, settings.topic_service_repartition)
        )
        self._services: dict[int, tuple[ServicePartition, _TableView]] = {}
        self._wire()

    def _wire(self) -> None:
        s = self.settings
        raw: dict[str, Any] = {
            "key_type": bytes,
            "value_type": bytes,
            "key_serializer": "raw",
            "value_serializer": "raw",
            "partitions": s.partitions,
        }
        self.link_table = self.Table(
            LINK_TABLE, partitions=s.partitions, key_type=bytes, value_type=bytes
        )
        self.service_table = self.Table(
            SERVICE_TABLE,
            partitions=s.partitions,
            key_type=bytes,
            value_type=bytes,
            # A queued input keeps its raw bytes: allow states as large as inputs.
            extra_topic_configs={"max.message.bytes": str(INPUT_MAX_MESSAGE_BYTES)},
        )
        # faust subscribes to, and its assignor groups, the topics its conductor holds; the
        # records reach the engine in batches (streams/batches.py), not through agents.
        # The repartition topic is co-partitioned with link-status: partition p of each
        # reaches the same worker, the one with the stage of p's links.
        self.topics.add(self.topic(s.topic_link_status, s.topic_repartition, **raw))
        # So is the service repartition topic with the changes, overrides and feedback topics.
        self.topics.add(
            self.topic(
                s.topic_changes,
                s.topic_overrides,
                s.topic_feedback,
                s.topic_service_repartition,
                **raw,
            )
        )
        self.batch_handlers: dict[str, BatchHandler] = {
            s.topic_link_status: self._on_links,
            s.topic_repartition: self._on_links,
            s.topic_changes: self._on_services,
            s.topic_overrides: self._on_services,
            s.topic_feedback: self._on_services,
            s.topic_service_repartition: self._on_services,
        }
        # cast: mode's handler type (mypy_extensions NamedArg unions) matches no plain method.
        self.on_partitions_revoked.connect(cast(Any, self._on_revoked))
        self.on_partitions_assigned.connect(cast(Any, self._on_assigned))
        if s.tick_interval > 0:
            self.timer(s.tick_interval, on_leader=True, name="ticker")(self._tick)

    async def on_first_start(self) -> None:
        """Create the engine's topics before the consumer subscribes to any of them.

        Local RocksDB table data is deleted first: state comes from the changelogs only.
        The local files may hold writes of transactions that were aborted when the previous
        process died (the store is written as inputs are handled, the changelog commits
        later); rebuilding a partition from such a write would treat the input, read again,
        as a duplicate, and its output would be lost. The engine never records changelog
        offsets in the store (see ``_TableView``), so faust re-reads the compacted changelogs
        from the start anyway: keeping the files would save nothing.
        """
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        if str(self.conf.store).startswith("rocksdb"):
            shutil.rmtree(self.conf.tabledir, ignore_errors=True)
        await super().on_first_start()
        _log.info("failover worker settings: %s", s.describe())
        replication = s.replication or await default_replication(
            s.bootstrap_servers, security=s.security
        )
        # faust creates its own topics (changelogs, leader) after this, with this factor.
        self.conf.topic_replication_factor = replication
        specs = topic_specs(s) + changelog_specs(s)
        counts = await ensure_topics(s.bootstrap_servers, specs, replication, security=s.security)
        limits = await topic_limits(
            s.bootstrap_servers, [spec.name for spec in specs], security=s.security
        )
        check_limits(
            s,
            limits,
            max_request_size=self.conf.producer_max_request_size,
            max_batch_size=self.conf.producer_max_batch_size,
        )
        # The largest changelog record the topic and the producer accept: states larger
        # than that are written as pages (_TableView).
        for table in TABLES:
            name = changelog_topic(s, table)
            self.record_bytes[name] = min(limits[name], self.conf.producer_max_request_size)
        _log.info("max.message.bytes of the engine's topics: %s", limits)
        self.routing = Routing(s, counts)
        self.outbox.install()

    async def _on_revoked(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Partitions are moving: rebuild every partition's stage from its table afterwards."""
        forget_batches(self.consumer)
        self._links.clear()
        self._services.clear()

    async def _on_assigned(self, sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Sent after faust began the new transactions (``App._on_partitions_assigned``)."""
        self._links.clear()
        self._services.clear()
        self.outbox.reopen()

    def on_rebalance_end(self) -> None:
        """Recovery is done: build the stage of every assigned partition from its table now,
        and take the heap out of the cyclic collector's way (:func:`settle_heap`)."""
        super().on_rebalance_end()
        s = self.settings
        for tp in sorted(self.consumer.assignment()):
            if tp.topic == s.topic_link_status:
                self._link_partition(tp.partition)
            elif tp.topic == s.topic_changes:
                self._service_partition(tp.partition)
        settle_heap()

    def _view(self, table: Any, partition: int) -> _TableView:
        name = table.changelog_topic.get_topic_name()
        return _TableView(
            table, partition, self.record_bytes.get(name, CHANGELOG_MIN_MESSAGE_BYTES)
        )

    def _link_partition(self, partition: int) -> tuple[LinkPartition, _TableView]:
        entry = self._links.get(partition)
        if entry is None:
            view = self._view(self.link_table, partition)
            stage = LinkPartition(self.topology, self.routing, partition, view, self.counts)
            entry = self._links[partition] = (stage, view)
        return entry

    def _service_partition(self, partition: int) -> tuple[ServicePartition, _TableView]:
        entry = self._services.get(partition)
        if entry is None:
            view = self._view(self.service_table, partition)
            stage = ServicePartition(self.topology, self.routing, partition, view, self.counts)
            entry = self._services[partition] = (stage, view)
        return entry

    def _handle_links(
        self, topic: str, partition: int, records: list[ConsumerRecord], trace: Trace | None
    ) -> list[Record]:
        stage, _ = self._link_partition(partition)
        return stage.handle_batch(records, trace)

    def _handle_services(
        self, topic: str, partition: int, records: list[ConsumerRecord], trace: Trace | None
    ) -> list[Record]:
        s = self.settings
        stage, _ = self._service_partition(partition)
        if topic in (s.topic_changes, s.topic_service_repartition):
            return stage.handle_batch(None, records, trace)
        source = OVERRIDES_SOURCE if topic == s.topic_overrides else FEEDBACK_SOURCE
        return stage.handle_batch(source, records, trace)

    async def _on_links(self, tp: Any, records: list[Any], generation: int) -> bool:
        return await self._handle(tp, records, generation, self._handle_links, "stage1")

    async def _on_services(self, tp: Any, records: list[Any], generation: int) -> bool:
        return await self._handle(tp, records, generation, self._handle_services, "stage2")

    def _traced(
        self,
        tp: Any,
        records: list[Any],
        handle: Callable[[str, int, list[Any], Trace | None], list[Record]],
        stage: str,
    ) -> list[Record]:
        """``handle`` the batch inside its ``process {topic}`` span (streams/tracing/kafka.py), and
        feed the input and lag metrics."""
        tracing = self.tracing
        with tracing.process(tp.topic, tp.partition, self.conf.id, records, stage=stage) as batch:
            trace = batch.handled if batch.active else None
            if not tracing.telemetry.metrics:
                return handle(tp.topic, tp.partition, records, trace)
            before = [self.counts[t] for t in INPUT_TYPES]
            out = handle(tp.topic, tp.partition, records, trace)
        if tp.topic not in self._internal:
            counted = {t: self.counts[t] - n for t, n in zip(INPUT_TYPES, before, strict=True)}
            counted["invalid"] = len(records) - sum(counted.values())
            tracing.count_inputs(counted)
        lag = self.consumer.highwater(tp) - records[-1].offset - 1
        tracing.telemetry.set_consumer_lag(tp.topic, tp.partition, self.conf.id, max(0, lag))
        return out

    async def _handle(
        self,
        tp: Any,
        records: list[Any],
        generation: int,
        handle: Callable[[str, int, list[Any], Trace | None], list[Record]],
        stage: str,
    ) -> bool:
        """One batch of one partition (a :data:`~streams.batches.BatchHandler`): handled under
        the outbox lock, every record it causes sent in the partition's transaction, any
        failure fatal before a commit. False (nothing handled) if the batch belongs to an
        earlier consumer generation: its partition is re-read from the committed offset."""
        # faust's check that streams are alive reads this (verify_event_path, every 1.25 s):
        # the batch path is the stream, and without it faust reports every partition whose
        # high watermark is past the position (under read_committed, any partition with an
        # open transaction) as "not started processing" once stream_processing_timeout passed.
        self.monitor.stream_inbound_time[tp] = time.monotonic()
        await self.outbox.acquire()
        try:
            if generation != self.consumer_generation_id:
                _log.warning("skipping %s: consumer generation changed", tp)
                return False
            origin = Origin(tp.topic, tp.partition, records[0].offset)
            self._bound_clock()
            try:
                out = self._traced(tp, records, handle, stage)
                self._log_dead(out)
            except Exception as exc:
                await self._failed(origin, exc)
                raise
            try:
                await self.outbox.send(out, tp.topic, tp.partition)
            except asyncio.CancelledError as exc:
                # Stopping mid-send: part of the batch's records may be in the transaction.
                self.outbox.fail(exc)
                raise
            except Exception as exc:
                await self._failed(origin, exc)
                raise
            return True
        finally:
            self.outbox.lock.release()

    async def _flush_state(self, topics: Collection[Any] | None = None) -> None:
        """Before each commit (under the outbox lock): the state each partition changed since
        the last commit goes to its table, and the changelog records into the transaction
        that commits the inputs that changed it. One record per key and commit, however many
        readings changed it. ``topics``: the partitions the commit commits (``None``: all);
        the others keep their changes for their own transaction's commit."""
        self._note_commit(topics)
        s = self.settings
        stages: list[tuple[str, dict[int, tuple[Any, _TableView]]]] = [
            (s.topic_link_status, self._links),
            (s.topic_changes, self._services),
        ]
        tid = self.outbox.transactional_id
        committing = None if topics is None else {tid(tp.topic, tp.partition) for tp in topics}
        for topic, partitions in stages:
            for partition, (stage, view) in partitions.items():
                if committing is not None and tid(topic, partition) not in committing:
                    continue
                stage.flush()
                if view.pending:
                    await self.outbox.send(view.drain(), topic, partition)

    def _note_commit(self, topics: Collection[Any] | None) -> None:
        """Tell faust's livelock check when partitions were last committed: it reads that from
        the consumer's own commit (``AIOKafkaConsumerThread._commit``), which exactly-once
        never takes (the offsets go into the transactions), and would report every partition
        with unread records as "not committed since worker start" after
        ``broker_commit_livelock_soft_timeout``. Marked as the commit begins, as faust does."""
        stamps = getattr(getattr(self.consumer, "_thread", None), "tp_last_committed_at", None)
        if stamps is None:
            return
        now = time.monotonic()
        stamps.update(dict.fromkeys(self.consumer.assignment() if topics is None else topics, now))

    async def _failed(self, origin: Origin, exc: Exception) -> None:
        """A bug, or a record that cannot be sent: stop before committing past the input."""
        _log.exception("cannot handle the batch %s[%s]@%s: stopping", *origin)
        self.outbox.fail(exc)
        await self.crash(exc)

    def _log_dead(self, records: list[Record]) -> None:
        for record in records:
            if record.topic == self.settings.topic_deadletter:
                headers = dict(record.headers)
                _log.warning(
                    "dead letter from %s[%s]@%s%s: %s",
                    headers.get("failover-source-topic", b"").decode(),
                    headers.get("failover-source-partition", b"").decode(),
                    headers.get("failover-source-offset", b"").decode(),
                    _trace_of(record.headers),
                    # The reason quotes the input: escaped, so it cannot forge a log line.
                    printable(headers.get("failover-reason", b"").decode("utf-8", "replace")),
                )

    def _bound_clock(self) -> None:
        """Before each batch: the latest event time an input may carry, the wall clock plus
        ``max_future``, and the tick key, for :func:`workflows.inputs.decode`
        (:mod:`workflows.clock`). Read once a batch: a batch takes milliseconds, the bound is
        minutes."""
        now = time.time_ns() // 1_000
        self.routing.guard(now + self.topology.policy.max_future, self.tick_key)

    async def _tick(self) -> None:
        """Publish one ``clock.tick.v1`` at the wall clock (milliseconds) everywhere, tagged
        with the tick key."""
        s = self.settings
        now = time.time_ns() // 1_000_000 * 1_000
        _, value = tick_event(now, self.tick_key)
        key = TICK_KEY.encode()
        topics = (s.topic_link_status, s.topic_overrides, s.topic_feedback)
        await self.outbox.send_plain(
            Record(topic, key, value, p, []) for topic in topics for p in range(s.partitions)
        )


def build_app(
    settings: Settings, topology: Topology | None = None, tracing: KafkaTracing | None = None
) -> FailoverApp:
    """The engine's faust app for ``settings`` (the topology is read from
    ``FAILOVER_TOPOLOGY`` unless given; telemetry is off unless ``tracing`` is given)."""
    if topology is None:
        topology = Topology.load(settings.topology_path())
    patches.install()
    return FailoverApp(settings, topology, tracing)
