"""The core, split by partition the way Kafka splits it: no faust here, only bytes in and out.

:class:`LinkPartition` is stage 1 for the links of one partition of the link-status topic;
:class:`ServicePartition` is stage 2 for the services of one partition of the (co-partitioned)
changes, overrides and feedback topics. Each takes one input message at a time and returns the
records to produce; each writes its state through to a :class:`StateTable` (a faust table in
the worker, a dict in tests) and is rebuilt from it after a restart or a rebalance.

They route every input exactly as :meth:`workflows.engine.Engine.feed` does, so that the Kafka
path gives each service what replay gives it:

- Ticks are published to every partition of the three input topics, in log order with the
  other inputs. Stage 1 partition ``p`` applies a tick, fans out the health changes it causes,
  then tells every stage-2 partition that ``links/p`` has reached the tick (a watermark
  message on the changes topic, behind the changes it sent, on the same producer).
- Stage 2 partition ``q`` advances its services to tick ``T`` when every source has reached
  ``T``: ``links/p`` for every stage-1 partition, and its own partitions of the overrides and
  feedback topics. Each source sees every tick, in order, so the minimum moves one tick at a
  time, and at ``T`` every input ordered below ``(T, TICK)`` has arrived.
- An override or feedback input is ordered with the last tick seen on *its own* topic
  partition, which is replay's global watermark at the same point of the log, because ticks
  are in every partition in file order. Health changes were ordered by stage 1 already.
- A maintenance window's action (``operator.maintenance.v1``, keyed by the window id) is
  published to every partition of the overrides topic, as ticks are: each stage-2 partition
  judges its copy with its own registry of windows (kept in its state, the same in each, as
  each sees every action in log order), and gives an accepted one to its own services; only
  the partition the window id hashes to writes the audit record and the dead letter, so each
  is written once (:mod:`workflows.maintenance`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple, Protocol

import orjson

from streams.codec import (
    ConsumerRecord,
    Headers,
    Origin,
    Watermark,
    binary_mode,
    deadletter_headers,
    decode_change,
    emitted_headers,
    encode_health,
    encode_watermark,
    structured_from_binary,
)
from streams.config import Settings
from streams.topics import partition_for
from workflows.engine import (
    Decoded,
    decode,
    flood_reason,
    read_input,
    service_input,
    window_inputs,
)
from workflows.isolation import fatal, internal_error, restore, slot_getter
from workflows.links import HealthChange, LinkStage, LinkState
from workflows.maintenance import MAINTENANCE_TYPE, Accepted, Windows
from workflows.operators import override_judge
from workflows.records import AUDIT, COMMANDS, STATE, TRANSITIONS, Emitted
from workflows.service import Input, ServiceStage, ServiceState
from workflows.topology import Topology

__all__ = [
    "FEEDBACK_SOURCE",
    "OVERRIDES_SOURCE",
    "WATERMARK_TICKS",
    "LinkPartition",
    "Record",
    "Routing",
    "ServicePartition",
    "StateTable",
    "Trace",
    "link_source",
]

#: The most ticks one watermark record carries: a tick id is at most 256 characters (1,536
#: bytes as JSON, escaped), so a record stays well within the changes topic's limit
#: (``streams.topics.OUTPUT_RECORD_BYTES``) however many ticks a batch applied.
WATERMARK_TICKS: Final = 256

#: Stage-2 source names of the two input topics it reads directly.
OVERRIDES_SOURCE: Final = "overrides"
FEEDBACK_SOURCE: Final = "feedback"


def link_source(partition: int) -> str:
    """The stage-2 source name of stage-1 partition ``partition``."""
    return f"links/{partition}"


class Record(NamedTuple):
    """One record to produce, to an explicit partition. ``made``: what ``value`` encodes, as
    the core made it (an output, a health change), for the tracing to read instead of
    parsing ``value`` back; None for the rest (dead letters, watermarks, table changelogs)."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int
    headers: Headers
    made: Emitted | HealthChange | None = None


#: ``trace(record, caused)``: the records one input caused, as they are to be sent (with
#: trace headers): :meth:`streams.tracing.kafka.Batch.handled`.
Trace = Callable[[Any, list[Record]], list[Record]]


class StateTable(Protocol):
    """Where a partition keeps its state: string keys, bytes values, one partition's worth."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...


class Routing:
    """Topic names and partition counts: what both stages need to address their records."""

    def __init__(self, settings: Settings, counts: Mapping[str, int] | None = None) -> None:
        self.settings = settings
        self.partitions = settings.partitions
        counts = counts or {}
        self._counts = {
            name: counts.get(name, settings.partitions)
            for name in (
                settings.topic_commands,
                settings.topic_transitions,
                settings.topic_state,
                settings.topic_deadletter,
                settings.topic_audit,
            )
        }
        self._output = {
            COMMANDS: settings.topic_commands,
            TRANSITIONS: settings.topic_transitions,
            STATE: settings.topic_state,
            AUDIT: settings.topic_audit,
        }
        self._owned: list[tuple[Collection[str], list[set[str]]]] = []
        #: The clock guards decode applies (workflows/clock.py): the latest event time accepted
        #: and the ticks' key. None: unbounded, unchecked (as replay); the worker sets both
        #: before every batch (:meth:`guard`).
        self.not_after: int | None = None
        self.tick_key: bytes | None = None

    def guard(self, not_after: int | None, tick_key: bytes | None) -> None:
        """Refuse inputs stamped after ``not_after`` (``future-time``) and ticks without a
        valid tag under ``tick_key`` (``unauthenticated-tick``) from now on."""
        self.not_after = not_after
        self.tick_key = tick_key

    def owned(self, keys: Collection[str], partition: int) -> set[str]:
        """The ``keys`` that Kafka's partitioner (murmur2) puts in ``partition``.

        Computed once per collection for every partition: aiokafka's murmur2 is pure Python
        (4 us a key), and a worker builds a stage per partition after every rebalance; for
        100,000 services, asking each partition anew took 3.3 s of a restore.
        """
        for known, groups in self._owned:
            if known is keys:
                return groups[partition]
        groups = [set() for _ in range(self.partitions)]
        for key in keys:
            groups[partition_for(key, self.partitions)].add(key)
        self._owned.append((keys, groups))
        return groups[partition]

    def emitted(self, record: Emitted) -> Record:
        topic = self._output[record.topic]
        key = record.key.encode()
        return Record(
            topic,
            key,
            orjson.dumps(record.event),
            partition_for(key, self._counts[topic]),
            emitted_headers(record),
            record,
        )

    def dead(
        self,
        key: bytes | None,
        reason: str,
        raw: bytes,
        origin: Origin,
        original: Sequence[tuple[str, bytes]] = (),
    ) -> Record:
        """A dead letter: the input's key, bytes and ``original`` headers as it came, then
        the engine's headers (reason, origin), which a reader of the last value sees."""
        topic = self.settings.topic_deadletter
        count = self._counts[topic]
        partition = partition_for(key, count) if key else origin.partition % count
        headers = [*original, *deadletter_headers(reason, origin)]
        return Record(topic, key, raw, partition, headers)


def _text(key: bytes | None) -> str | None:
    return key.decode("utf-8", "replace") if key is not None else None


def _queued_origin(origin: Origin, headers: Sequence[tuple[str, bytes]]) -> list[Any]:
    """What a queued input keeps of where it came from, in a JSON-able form (it is part of
    the service's state): topic, partition, offset, and its headers (values as latin-1
    text, which gives back the same bytes), so that a dead letter made when it is applied
    carries them as a refusal on arrival would."""
    if not headers:
        return list(origin)
    return [*origin, [[name, value.decode("latin-1")] for name, value in headers]]


def _origin(value: Any) -> tuple[Origin | None, Headers]:
    """The origin and original headers of a queued input (:func:`_queued_origin`)."""
    if isinstance(value, Origin):
        return value, []
    if isinstance(value, list | tuple) and len(value) in (3, 4):
        where = Origin(str(value[0]), int(value[1]), int(value[2]))
        if len(value) == 3:
            return where, []
        return where, [(str(name), str(text).encode("latin-1")) for name, text in value[3]]
    return None, []


class _Partition:
    """What both stages share: dead letters, counts, writing state through."""

    def __init__(
        self,
        topology: Topology,
        routing: Routing,
        partition: int,
        table: StateTable,
        counts: Counter[str] | None,
    ) -> None:
        self.topology = topology
        self.routing = routing
        self.partition = partition
        self.table = table
        self.counts = counts if counts is not None else Counter()
        self._written: dict[str, bytes] = {}
        #: Keys whose state changed since the last :meth:`flush`: a batch writes each once.
        self._dirty: set[str] = set()

    def _owned(self, keys: Collection[str]) -> set[str]:
        """The keys (link or service ids) that Kafka's partitioner puts in this partition."""
        return self.routing.owned(keys, self.partition)

    def _load(self, key: str) -> Any:
        raw = self.table.get(key)
        if raw is None:
            return None
        self._written[key] = raw
        return orjson.loads(raw)

    def _save(self, key: str, value: Any) -> None:
        raw = orjson.dumps(value)
        if self._written.get(key) != raw:
            self._written[key] = raw
            self.table.put(key, raw)

    def _state(self, key: str) -> Any:
        """The JSON form of ``key``'s state now (``None``: nothing to write)."""
        raise NotImplementedError

    def flush(self) -> None:
        """Write the state of every key changed since the last flush to the table."""
        if self._dirty:
            for key in sorted(self._dirty):
                value = self._state(key)
                if value is not None:
                    self._save(key, value)
            self._dirty.clear()

    def _judged(
        self,
        answer: Decoded | str,
        key: bytes | None,
        raw: bytes,
        origin: Origin | ConsumerRecord,
        out: list[Record],
    ) -> Decoded | None:
        """``decode``'s answer for an input: a refusal is dead-lettered (``None``), anything
        else counted by type and returned."""
        if isinstance(answer, str):
            self._dead(out, key, answer, raw, origin)
            return None
        self.counts[answer[0]["type"]] += 1
        return answer

    def _dead(
        self,
        out: list[Record],
        key: bytes | None,
        reason: str,
        raw: bytes,
        origin: Origin | ConsumerRecord,
    ) -> None:
        self.counts[f"deadletter:{reason.split(':', 1)[0]}"] += 1
        where = Origin(origin.topic, origin.partition, origin.offset)
        original = () if isinstance(origin, Origin) else origin.headers
        out.append(self.routing.dead(key, reason, raw, where, original))

    def _poisoned(
        self,
        exc: Exception,
        out: list[Record],
        key: bytes | None,
        raw: bytes | None,
        origin: Origin | ConsumerRecord,
    ) -> None:
        """An input whose handling raised: dead-lettered ``internal-error`` in the batch's
        transaction, and the partition goes on (:mod:`workflows.isolation`)."""
        if fatal(exc):
            raise exc
        self._dead(out, key, internal_error(exc), raw or b"", origin)

    def _failures(
        self,
        failures: list[tuple[str, str]],
        out: list[Record],
        raw: bytes | None,
        origin: Origin | ConsumerRecord,
    ) -> None:
        """Dead-letter the input once for each key (link, service) that could not take it."""
        for key, reason in failures:
            self._dead(out, key.encode(), reason, raw or b"", origin)
        failures.clear()


class LinkPartition(_Partition):
    """Stage 1 for the links of one partition of the link-status topic."""

    def __init__(
        self,
        topology: Topology,
        routing: Routing,
        partition: int,
        table: StateTable,
        counts: Counter[str] | None = None,
    ) -> None:
        super().__init__(topology, routing, partition, table, counts)
        self.links = self._owned(topology.links)
        self.stage = LinkStage(topology, self.links)
        self._services_by_link = topology.services_by_link
        self._link_snapshot = slot_getter(LinkState)
        self._watermark_key = f"__watermark__/{partition}"
        #: Ticks applied since the last watermark records: ``(tick, id)``.
        self._ticks: list[tuple[int, str]] = []
        for link in sorted(self.links):
            saved = self._load(link)
            if saved is not None:
                self.stage.restore(link, LinkState.from_json(saved))
        saved = self._load(self._watermark_key)
        #: The last tick applied, as saved under ``__watermark__/{partition}``.
        self._tick: dict[str, Any] | None = saved
        if saved is not None:
            self.stage.watermark = saved["tick"]

    def _state(self, key: str) -> Any:
        if key == self._watermark_key:
            return self._tick
        return self.stage.states[key].to_json()

    def handle(self, raw: bytes | None, key: bytes | None, origin: Origin) -> list[Record]:
        """One message of this partition of the link-status topic, its state written."""
        out: list[Record] = []
        try:
            self._handle(raw, key, origin, out)
        except Exception as exc:
            self._poisoned(exc, out, key, raw, origin)
        self._watermarks(out)
        self.flush()
        return out

    def _watermarks(self, out: list[Record]) -> None:
        """Tell every stage-2 partition the ticks applied since the last time: one record
        each, after the changes those ticks and the readings before them caused."""
        if self._ticks:
            changes_topic = self.routing.settings.topic_changes
            ticks = self._ticks
            for start in range(0, len(ticks), WATERMARK_TICKS):  # each record bounded
                chunk = ticks[start : start + WATERMARK_TICKS]
                value = encode_watermark(chunk, link_source(self.partition))
                out.extend(
                    Record(changes_topic, b"__watermark__", value, q, [])
                    for q in range(self.routing.partitions)
                )
            self._ticks.clear()

    def handle_batch(
        self, records: Iterable[ConsumerRecord], trace: Trace | None = None
    ) -> list[Record]:
        """Records of this partition of the link-status topic, in offset order: what
        :meth:`handle` gives for each in turn, but the state changed is written by the
        next :meth:`flush` (the worker flushes before each commit: a link's state is written
        once per commit, not once per reading). ``trace(record, caused)`` is called for
        every record that caused records, and returns them (with trace headers)."""
        out: list[Record] = []
        handle = self._handle
        for r in records:
            start = len(out)
            try:
                if r.headers and binary_mode(r.headers):
                    self._binary(r, out)
                else:
                    handle(r.value, r.key, r, out)
            except Exception as exc:
                self._poisoned(exc, out, r.key, r.value, r)
            # A reading that caused nothing has nothing to trace.
            if trace is not None and len(out) > start:
                out[start:] = trace(r, out[start:])
        self._watermarks(out)
        return out

    def _binary(self, record: ConsumerRecord, out: list[Record]) -> None:
        """A binary-mode record: judged as the structured event it stands for, dead-lettered
        with its own value and headers."""
        doc = structured_from_binary(
            record.headers, record.value, self.routing.settings.max_event_bytes
        )
        if isinstance(doc, str):
            self._dead(out, record.key, doc, record.value or b"", record)
        else:
            self._handle(record.value, record.key, record, out, doc)

    def _handle(
        self,
        raw: bytes | None,
        key: bytes | None,
        origin: Origin | ConsumerRecord,
        out: list[Record],
        doc: bytes | None = None,
    ) -> None:
        """One record: ``raw`` its value, ``doc`` the structured event a binary-mode record
        stands for (``None``: ``raw`` is one; its size was checked with its headers)."""
        raw = raw if raw is not None else b""
        r = self.routing
        limit = r.settings.max_event_bytes
        if doc is not None:
            limit = max(limit, len(doc))
        reading, answer = read_input(
            raw if doc is None else doc, _text(key), limit, r.not_after, r.tick_key
        )
        if reading is None:
            decoded = self._judged(answer, key, raw, origin, out)
            if decoded is None:
                return
            event, time = decoded
            type_ = event["type"]
        if reading is not None:
            self.counts["link.status.v1"] += 1
            link = reading[0]
            if link not in self._services_by_link:
                self._dead(out, key, f"unknown-link: {link!r} is not in the topology", raw, origin)
                return
            if link not in self.links:
                self._dead(out, key, self._misrouted(link), raw, origin)
                return
            state = self.stage.states.get(link)
            saved = self._link_snapshot(state) if state is not None else None
            start = len(out)
            try:
                change = self.stage.on_status(*reading)
                if isinstance(change, str):  # refused: see LinkStage.on_status
                    self._dead(out, key, change, raw, origin)
                elif change is not None:
                    self._fan_out(out, change)
            except Exception:  # the link as before the reading, and none of its changes out
                if state is None:
                    self.stage.states.pop(link, None)
                else:
                    assert saved is not None
                    restore(state, saved)
                del out[start:]
                raise
            self._dirty.add(link)
        elif type_ == "clock.tick.v1":
            before = self.stage.watermark
            changes = self.stage.on_tick(time, event["id"])
            if self.stage.watermark == before:
                return  # a tick older than one applied already (two tickers for a moment)
            self._dirty.update(self.stage.states)
            self._tick = {"tick": time, "id": event["id"]}
            self._dirty.add(self._watermark_key)
            for change in changes:
                self._fan_out(out, change)
            self._ticks.append((time, event["id"]))
            if self.stage.failures:
                self._failures(self.stage.failures, out, raw, origin)
        else:
            subject = event.get("subject")
            if subject not in self.topology.services and type_ != MAINTENANCE_TYPE:
                reason = f"unknown-service: {subject!r} is not in the topology"
            else:
                reason = (
                    f"wrong-topic: {type_} is read from the operator-overrides and "
                    "service-feedback topics, not link-status"
                )
            self._dead(out, key, reason, raw, origin)

    def _misrouted(self, link: str) -> str:
        right = partition_for(link, self.routing.partitions)
        return (
            f"wrong-partition: link {link!r} belongs to partition {right} (murmur2 of the key), "
            f"not {self.partition}"
        )

    def _fan_out(self, out: list[Record], change: HealthChange) -> None:
        value = encode_health(change)
        topic = self.routing.settings.topic_changes
        n = self.routing.partitions
        for service in self._services_by_link[change.link]:
            key = service.encode()
            out.append(Record(topic, key, value, partition_for(key, n), [], change))


class ServicePartition(_Partition):
    """Stage 2 for the services of one partition of the changes, overrides and feedback
    topics (co-partitioned: partition ``q`` of each holds the same services)."""

    def __init__(
        self,
        topology: Topology,
        routing: Routing,
        partition: int,
        table: StateTable,
        counts: Counter[str] | None = None,
    ) -> None:
        super().__init__(topology, routing, partition, table, counts)
        self.services = self._owned(topology.services)
        # The worker always writes the read model (replay only with --state).
        self.stage = ServiceStage(topology, self.services, state_records=True)
        self._judge = override_judge(topology)
        self.windows = Windows(topology)
        self.expected = frozenset(
            [*(link_source(p) for p in range(routing.partitions)), OVERRIDES_SOURCE,
             FEEDBACK_SOURCE]
        )  # fmt: skip
        self.sources: dict[str, tuple[int, str]] = {}
        self._meta_key = f"__partition__/{partition}"
        for service in sorted(self.services):
            saved = self._load(service)
            if saved is not None:
                self.stage.restore(service, ServiceState.from_json(saved))
        meta = self._load(self._meta_key)
        if meta is not None:
            self.stage.watermark = meta["watermark"]
            self.sources = {name: (tick, ident) for name, (tick, ident) in meta["sources"].items()}
            self.windows.load(meta.get("windows"))

    def _state(self, key: str) -> Any:
        if key == self._meta_key:
            sources = {k: list(v) for k, v in sorted(self.sources.items())}
            meta = {"watermark": self.stage.watermark, "sources": sources}
            windows = self.windows.to_json()
            if windows is not None:
                meta["windows"] = windows
            return meta
        state = self.stage.states.get(key)
        return state.to_json() if state is not None else None

    def handle_change(self, raw: bytes | None, key: bytes | None, origin: Origin) -> list[Record]:
        """One message of the internal changes topic (written by stage 1), its state written."""
        out: list[Record] = []
        try:
            self._change(raw, key, origin, out)
        except Exception as exc:
            self._poisoned(exc, out, key, raw, origin)
        self.flush()
        return out

    def handle_input(
        self, source: str, raw: bytes | None, key: bytes | None, origin: Origin
    ) -> list[Record]:
        """One message of this partition of the overrides (``source="overrides"``) or the
        feedback (``"feedback"``) topic, its state written."""
        out: list[Record] = []
        try:
            self._input(source, raw, key, origin, out)
        except Exception as exc:
            self._poisoned(exc, out, key, raw, origin)
        self.flush()
        return out

    def handle_batch(
        self,
        source: str | None,
        records: Iterable[ConsumerRecord],
        trace: Trace | None = None,
    ) -> list[Record]:
        """Records of one partition, in offset order: of the changes topic (``source`` None)
        or of the overrides or feedback topic (``source`` as for :meth:`handle_input`). What
        the one-message methods give for each in turn, but the state changed is written by
        the next :meth:`flush` (the worker's, before each commit). ``trace`` as for
        :meth:`LinkPartition.handle_batch`."""
        out: list[Record] = []
        for r in records:
            start = len(out)
            origin = Origin(r.topic, r.partition, r.offset)
            try:
                if source is None:
                    self._change(r.value, r.key, origin, out, r)
                else:
                    self._input(source, r.value, r.key, origin, out, r)
            except Exception as exc:
                self._poisoned(exc, out, r.key, r.value, r)
            if trace is not None:
                out[start:] = trace(r, out[start:])
        return out

    def _change(
        self,
        raw: bytes | None,
        key: bytes | None,
        origin: Origin,
        out: list[Record],
        record: ConsumerRecord | None = None,
    ) -> None:
        where = record if record is not None else origin  # with the record's headers
        message = decode_change(raw)
        if isinstance(message, str):
            self._dead(out, key, message, raw or b"", where)
        elif isinstance(message, Watermark):
            if message.source in self.expected:
                for tick, tick_id in message.ticks:
                    self._source(message.source, tick, tick_id)
            else:
                reason = f"internal: unknown watermark source {message.source!r}"
                self._dead(out, key, reason, raw or b"", where)
        else:
            service = _text(key)
            if service is None or service not in self.services:
                reason = f"internal: service {service!r} is not in partition {self.partition}"
                self._dead(out, key, reason, raw or b"", where)
            else:
                c = message
                item = Input(c.time, c.rank, c.id, "health", (c.link, c.health, c.cause))
                self.stage.offer(service, item)
                self._dirty.add(service)
        self._drain(out, raw, where)

    def _input(
        self,
        source: str,
        raw: bytes | None,
        key: bytes | None,
        origin: Origin,
        out: list[Record],
        record: ConsumerRecord | None = None,
    ) -> None:
        where = record if record is not None else origin  # with the record's headers
        raw = raw if raw is not None else b""
        r = self.routing
        limit = r.settings.max_event_bytes
        doc = raw
        if record is not None and record.headers and binary_mode(record.headers):
            made = structured_from_binary(record.headers, raw, limit)
            if isinstance(made, str):
                self._dead(out, key, made, raw, where)
                return
            doc, limit = made, max(limit, len(made))  # its size was checked with its headers
        states = self.stage.states
        flood = flood_reason(doc, _text(key), limit, states, self.topology, r.not_after)
        if flood is not None:  # a flood's copy: dead-lettered, nothing else done
            self._dead(out, key, flood[1], raw, where)
            return
        answer = decode(doc, _text(key), limit, r.not_after, r.tick_key)
        decoded = self._judged(answer, key, raw, where, out)
        if decoded is None:
            return
        event, time = decoded
        type_ = event["type"]
        if type_ == "clock.tick.v1":
            self._source(source, time, event["id"])
            self._drain(out, raw, where)
            return
        if type_ == "link.status.v1":
            reason = "wrong-topic: link.status.v1 is read from the link-status topic"
            self._dead(out, key, reason, raw, where)
            return
        if type_ == MAINTENANCE_TYPE:
            if source != OVERRIDES_SOURCE:
                reason = "wrong-topic: operator.maintenance.v1 is read from operator-overrides"
                self._dead(out, key, reason, raw, where)
                return
            self._window(event, time, raw, key, origin, out, where, record)
            return
        service = event["subject"]
        if service not in self.topology.services:
            reason = f"unknown-service: {service!r} is not in the topology"
            self._dead(out, key, reason, raw, where)
            return
        if service not in self.services:
            right = partition_for(service, self.routing.partitions)
            reason = (
                f"wrong-partition: service {service!r} belongs to partition {right} (murmur2 "
                f"of the key), not {self.partition}"
            )
            self._dead(out, key, reason, raw, where)
            return
        seen = self.sources.get(source)
        watermark = seen[0] if seen is not None else None
        if type_ == "operator.override.v1":
            state = self.stage.state_of(service)
            budget = state.budget if state.budget is not None else {}
            refused = self._judge(event, time, watermark, budget)
            if budget:
                state.budget = budget
                self._dirty.add(service)
            if refused is not None:  # audited, dead-lettered, nothing else done
                if refused[1] is not None:
                    out.append(self.routing.emitted(refused[1]))
                self._dead(out, key, refused[0], raw, where)
                return
        headers = record.headers if record is not None else ()
        item = service_input(event, time, watermark, raw, _queued_origin(origin, headers))
        self.stage.offer(service, item, time, watermark)
        self._dirty.add(service)
        self._drain(out, raw, where)

    def _window(
        self,
        event: dict[str, Any],
        time: int,
        raw: bytes,
        key: bytes | None,
        origin: Origin,
        out: list[Record],
        where: Origin | ConsumerRecord,
        record: ConsumerRecord | None,
    ) -> None:
        """This partition's copy of a window action: judged as replay judges it; audited
        and dead-lettered only by the partition that owns the window id."""
        seen = self.sources.get(OVERRIDES_SOURCE)
        watermark = seen[0] if seen is not None else None
        owner = partition_for(event["subject"], self.routing.partitions) == self.partition
        verdict = self.windows.judge(event, time, watermark)
        self._dirty.add(self._meta_key)
        if not isinstance(verdict, Accepted):
            reason, audited = verdict
            if owner:
                if audited is not None:
                    out.append(self.routing.emitted(audited))
                self._dead(out, key, reason, raw, where)
            else:  # the owner's dead letter is the record of it
                self.counts[f"maintenance-copy-refused:{reason.split(':', 1)[0]}"] += 1
            return
        if owner:
            out.append(self.routing.emitted(verdict.audit))
        headers = record.headers if record is not None else ()
        queued = _queued_origin(origin, headers)
        for service, item in window_inputs(event, verdict, time, watermark, raw, queued,
                                           self.services):  # fmt: skip
            self.stage.offer(service, item, time, watermark)
            self._dirty.add(service)
        self._drain(out, raw, where)

    def _source(self, source: str, tick: int, tick_id: str) -> None:
        seen = self.sources.get(source)
        if seen is not None and tick <= seen[0]:
            return
        self.sources[source] = (tick, tick_id)
        if len(self.sources) == len(self.expected):
            low, low_id = min(self.sources.values())
            if self.stage.watermark is None or low > self.stage.watermark:
                self._dirty.update(self.stage.advance(low, low_id))
        self._dirty.add(self._meta_key)

    def _drain(self, out: list[Record], raw: bytes | None, where: Origin | ConsumerRecord) -> None:
        """The stage's outputs as records, and a dead letter of the input being handled for
        each service that could not take it (``failures``: :mod:`workflows.isolation`)."""
        if self.stage.failures:
            self._failures(self.stage.failures, out, raw, where)
        stage_out = self.stage.out
        for record in stage_out:
            if isinstance(record, Emitted):
                out.append(self.routing.emitted(record))
            else:
                origin, headers = _origin(record.origin)
                where = origin or Origin("", self.partition, -1)
                key = record.key.encode() if record.key is not None else None
                self.counts[f"deadletter:{record.reason.split(':', 1)[0]}"] += 1
                out.append(self.routing.dead(key, record.reason, record.raw, where, headers))
        stage_out.clear()
