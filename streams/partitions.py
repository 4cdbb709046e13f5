"""The core, split by partition the way Kafka splits it: no faust here, only bytes in and out.

:class:`LinkPartition` is stage 1 for the links of one partition of the link-status topic;
:class:`ServicePartition` is stage 2 for the services of one partition of the (co-partitioned)
changes, overrides and feedback topics. Each takes one input message at a time and returns the
records to produce; each writes its state through to a :class:`StateTable` (a faust table in
the worker, a dict in tests) and is rebuilt from it after a restart or a rebalance.

Every input enters the core through the core's one entry point,
:meth:`workflows.inputs.Inputs.route`, as in :meth:`workflows.engine.Engine.feed`: it decodes
and judges the input and says where it goes. What only Kafka has is decided here, from that
answer: a type read from a topic that does not carry it (``wrong-topic``, by the one table of
each type's topic, :meth:`Routing.misplaced`), a record on a partition its key does not hash
to, readings forwarded and held, watermarks. So the Kafka path gives each service what replay
gives it:

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
- A reading, override or feedback input on a partition its key does not hash to is forwarded
  to its own through a repartition topic, with that watermark, and marker records keep it
  ahead of the ticks it precedes (:class:`LinkPartition`, :class:`ServicePartition`).
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
from workflows.inputs import (
    INPUT_TYPES,
    Inputs,
    Refused,
    ServiceInput,
    Tick,
    Window,
    admit,
    window_inputs,
)
from workflows.isolation import fatal, internal_error, restore, slot_getter
from workflows.links import HealthChange, LinkStage, LinkState
from workflows.maintenance import Accepted, Windows
from workflows.operators import override_judge
from workflows.readings import Reading
from workflows.records import AUDIT, COMMANDS, STATE, TRANSITIONS, Emitted
from workflows.service import Input, ServiceStage, ServiceState
from workflows.topology import Topology

__all__ = [
    "FEEDBACK_SOURCE",
    "FORWARD_ORIGIN",
    "FORWARD_WATERMARK",
    "OVERRIDES_SOURCE",
    "WATERMARK_TICKS",
    "DictTable",
    "LinkPartition",
    "Record",
    "Routing",
    "ServicePartition",
    "StateTable",
    "Trace",
    "input_source",
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


def input_source(partition: int) -> str:
    """The stage-2 source name of another stage-2 partition ``partition``'s markers: the
    ticks both its overrides and its feedback partition have seen, everything it forwarded
    from before them sent."""
    return f"inputs/{partition}"


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


class DictTable:
    """A :class:`StateTable` in a dict: what the worker's store holds for one partition, for
    the stages run without faust (tests, benchmarks)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.data[key] = value


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
        self._misplaced: dict[str, dict[str, str]] = {}
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

    def misplaced(self, topic: str) -> dict[str, str]:
        """The ``wrong-topic`` reason of each input type that ``topic`` does not carry, by the
        one table of each type's input topics (:meth:`Settings.input_topics`)."""
        found = self._misplaced.get(topic)
        if found is None:
            found = {}
            for type_ in INPUT_TYPES:
                topics = self.settings.input_topics(type_)
                if topic not in topics:
                    carried = " and ".join(topics)
                    found[type_] = f"wrong-topic: {type_} is read from {carried}, not {topic}"
            self._misplaced[topic] = found
        return found

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


#: The header of a reading forwarded to its partition: the last tick (event time, in
#: microseconds) the partition it arrived on had applied then, or ``none`` before any.
FORWARD_WATERMARK: Final = "failover-forward-watermark"

#: The type of a reading, the input nearly every message is.
_STATUS: Final = "link.status.v1"

#: A forwarded reading's watermark (``None``: no tick yet).
_Watermark = int | None

#: The header of an override or feedback input forwarded to its service's partition, before
#: :data:`FORWARD_WATERMARK`: where it arrived, ``[topic, partition, offset]`` as JSON, so that
#: the partition that takes it refers to the input as it came (dead letters, queued origins).
FORWARD_ORIGIN: Final = "failover-forward-origin"

#: The stage-2 source name of the inputs forwarded to a partition (the watermark they carry
#: replaces that of a source).
FORWARDED_SOURCE: Final = "forwarded"

#: Stage 2's own input topics' sources: the ticks it marks for the other partitions.
_OWN_SOURCES: Final = frozenset((OVERRIDES_SOURCE, FEEDBACK_SOURCE))


def forward_origin(headers: Sequence[tuple[str, bytes]]) -> Origin | None:
    """Where a forwarded service input arrived: its :data:`FORWARD_ORIGIN` header, the one
    before the last (:data:`FORWARD_WATERMARK`); ``None`` if there is none that reads."""
    if len(headers) < 2 or headers[-2][0] != FORWARD_ORIGIN:
        return None
    if headers[-1][0] != FORWARD_WATERMARK:
        return None
    try:
        topic, partition, offset = orjson.loads(headers[-2][1])
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None
    if not isinstance(topic, str) or type(partition) is not int or type(offset) is not int:
        return None
    return Origin(topic, partition, offset)


def forward_watermark(headers: Sequence[tuple[str, bytes]]) -> int | bool | None:
    """The :data:`FORWARD_WATERMARK` of a forwarded record; ``False`` if it has none that
    reads."""
    for name, value in reversed(headers):
        if name == FORWARD_WATERMARK:
            if value == b"none":
                return None
            return int(value) if value.isdigit() and len(value) <= 20 else False
    return False


def _after(mark: int | None, watermark: int | None) -> bool:
    """Whether a reading with watermark ``mark`` belongs after ``watermark`` (``None``: before
    any tick)."""
    return mark is not None and (watermark is None or mark > watermark)


def _reading(value: Sequence[Any]) -> Reading:
    """A held reading as :meth:`LinkStage.on_status` takes it."""
    link, ident, time, status, latency, loss = value
    return (str(link), str(ident), int(time), str(status), latency, loss)


class _Forwarded(NamedTuple):
    """A record of the repartition topic, or a held reading, as a :class:`ConsumerRecord`."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]

    @classmethod
    def of(
        cls,
        origin: Origin,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> _Forwarded:
        return cls(origin.topic, origin.partition, origin.offset, key, value, headers)


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

    def _refused(
        self,
        answer: Refused,
        key: bytes | None,
        raw: bytes,
        origin: Origin | ConsumerRecord,
        out: list[Record],
    ) -> None:
        """An input the core refused: counted as an input of its type if it had one, and
        dead-lettered with the core's reason."""
        if answer.type is not None:
            self.counts[answer.type] += 1
        self._dead(out, key, answer.reason, raw, origin)

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
    """Stage 1 for the links of one partition of the link-status topic, and of the
    co-partitioned repartition topic, where the other partitions forward the readings of this
    partition's links that reached them (a producer whose partitioner is not murmur2).

    A forwarded reading must meet its link exactly where replay would: after the last tick its
    own partition had applied when it arrived there (carried in the :data:`FORWARD_WATERMARK`
    header), before the next. So the links are kept in two stages:

    - ``stage``: the links that have had a reading on this partition. Ticks reach them at once.
    - ``behind``: the links that have not (yet), whose readings may come through another
      partition. A tick reaches them only once every other partition has confirmed it (a
      marker record on the repartition topic, which that partition writes after what it
      forwarded before the tick, on the same producer): by then, every reading forwarded from
      before the tick has arrived. A forwarded reading that arrives ahead of them is held (in
      the partition's state) until they reach its watermark.

    The first reading of a ``behind`` link on this partition moves it to ``stage``, the ticks
    it missed applied first. So once every link has reported on its own partition, ``behind``
    is empty and nothing waits: a deployment whose producers use murmur2 pays nothing but the
    markers. Stage 2 is told a tick (watermark) only when both stages have applied it.
    """

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
        self.behind = LinkStage(topology, self.links)
        self._behind_links = set(self.links)
        self._services_by_link = topology.services_by_link
        #: The core's entry point (no service states here: stage 1 takes no override).
        self._route = Inputs(topology).route
        #: The types the link-status topic does not carry, and why (the one table).
        self._misplaced = routing.misplaced(routing.settings.topic_link_status)
        carried = set(INPUT_TYPES) - set(self._misplaced)
        if not carried <= {_STATUS, Tick.type}:
            raise ValueError(f"stage 1 takes readings and ticks, not {sorted(carried)}")
        self._link_snapshot = slot_getter(LinkState)
        self._watermark_key = f"__watermark__/{partition}"
        #: Ticks ``behind`` applied since the last watermark records: ``(tick, id)``.
        self._ticks: list[tuple[int, str]] = []
        #: Ticks ``stage`` applied since the last marker records: ``(tick, id)``.
        self._markers: list[tuple[int, str]] = []
        #: Ticks ``stage`` applied and ``behind`` not yet, in order.
        self._pending: list[tuple[int, str]] = []
        #: The last tick each other stage-1 partition confirmed (its source name: tick).
        self._confirmed: dict[str, int] = {}
        #: Forwarded readings waiting for ``behind`` to reach their watermark:
        #: ``[watermark, reading, raw (latin-1), origin]``.
        self._held: list[list[Any]] = []
        #: How many of them each link has: a reading of a link with any arrives after them.
        self._held_links: Counter[str] = Counter()
        self._others = [link_source(q) for q in range(routing.partitions) if q != partition]
        #: This partition's source name in its watermark and marker records.
        self._source = link_source(partition)
        #: Where its watermark records go (every stage-2 partition) and its markers (every
        #: other stage-1 partition).
        self._everyone = range(routing.partitions)
        self._other_partitions = [q for q in self._everyone if q != partition]
        for link in sorted(self.links):
            saved = self._load(link)
            if isinstance(saved, dict):
                self.behind.restore(link, LinkState.from_json(saved["behind"]))
            elif saved is not None:
                self._move(link, LinkState.from_json(saved))
        saved = self._load(self._watermark_key)
        #: The last tick applied, as saved under ``__watermark__/{partition}``.
        self._tick: dict[str, Any] | None = saved
        if saved is not None:
            self.stage.watermark = saved["tick"]
            self.behind.watermark = saved.get("behind", saved["tick"])
            self._pending = [(t, i) for t, i in saved.get("pending", [])]
            self._confirmed = dict(saved.get("confirmed", {}))
            self._held = saved.get("held", [])
            self._held_links.update(held[1][0] for held in self._held)

    def _move(self, link: str, state: LinkState | None) -> None:
        """``link`` leaves ``behind`` for ``stage``, with ``state``."""
        self.behind.release(link)
        self._behind_links.discard(link)
        if state is not None:
            self.stage.restore(link, state)

    def _state(self, key: str) -> Any:
        if key == self._watermark_key:
            return {
                **(self._tick or {"tick": None, "id": None}),
                "behind": self.behind.watermark,
                "pending": [list(t) for t in self._pending],
                "confirmed": dict(sorted(self._confirmed.items())),
                "held": self._held,
            }
        state = self.stage.states.get(key)
        if state is not None:
            return state.to_json()
        state = self.behind.states.get(key)
        return {"behind": state.to_json()} if state is not None else None

    def handle(
        self,
        raw: bytes | None,
        key: bytes | None,
        origin: Origin,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> list[Record]:
        """One message of this partition of the link-status or the repartition topic
        (``origin.topic``), its state written."""
        out: list[Record] = []
        try:
            if origin.topic == self.routing.settings.topic_repartition:
                self._repartitioned(_Forwarded.of(origin, key, raw, headers), out)
            else:
                self._handle(raw, key, origin, out)
        except Exception as exc:
            self._poisoned(exc, out, key, raw, origin)
        self._watermarks(out)
        self.flush()
        return out

    def _watermarks(self, out: list[Record]) -> None:
        """Tell every stage-2 partition the ticks both stages applied since the last time, and
        every other stage-1 partition the ticks this one applied (after what it forwarded
        before them): one record each, after the records those ticks and the readings before
        them caused."""
        if self._ticks:
            self._broadcast(self.routing.settings.topic_changes, self._ticks, self._everyone, out)
            self._ticks.clear()
        if self._markers:
            topic = self.routing.settings.topic_repartition
            self._broadcast(topic, self._markers, self._other_partitions, out)
            self._markers.clear()

    def _broadcast(
        self, topic: str, ticks: list[tuple[int, str]], to: Sequence[int], out: list[Record]
    ) -> None:
        for start in range(0, len(ticks), WATERMARK_TICKS):  # each record bounded
            value = encode_watermark(ticks[start : start + WATERMARK_TICKS], self._source)
            out.extend(Record(topic, b"__watermark__", value, q, []) for q in to)

    def handle_batch(
        self, records: Iterable[ConsumerRecord], trace: Trace | None = None
    ) -> list[Record]:
        """Records of this partition of the link-status or the repartition topic, in offset
        order: what :meth:`handle` gives for each in turn, but the state changed is written by
        the next :meth:`flush` (the worker flushes before each commit: a link's state is written
        once per commit, not once per reading). ``trace(record, caused)`` is called for
        every record that caused records, and returns them (with trace headers)."""
        out: list[Record] = []
        handle = self._handle
        repartition = self.routing.settings.topic_repartition
        for r in records:
            start = len(out)
            try:
                if r.topic == repartition:
                    self._repartitioned(r, out)
                elif r.headers and binary_mode(r.headers):
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

    def _binary(
        self, record: ConsumerRecord, out: list[Record], forwarded: _Watermark | bool = False
    ) -> None:
        """A binary-mode record: judged as the structured event it stands for, dead-lettered
        with its own value and headers."""
        doc = structured_from_binary(
            record.headers, record.value, self.routing.settings.max_event_bytes
        )
        if isinstance(doc, str):
            self._dead(out, record.key, doc, record.value or b"", record)
        else:
            self._handle(record.value, record.key, record, out, doc, forwarded)

    def _repartitioned(self, record: ConsumerRecord, out: list[Record]) -> None:
        """A record of the repartition topic: another partition's marker, or a reading it
        forwarded here."""
        if record.key == b"__watermark__":
            message = decode_change(record.value)
            if isinstance(message, Watermark) and message.source in self._others:
                seen = self._confirmed.get(message.source)
                if seen is None or message.tick > seen:
                    self._confirmed[message.source] = message.tick
                    self._dirty.add(self._watermark_key)
                    self._advance(out, record.value, record)
            else:
                if isinstance(message, str):
                    reason = message
                elif isinstance(message, Watermark):
                    reason = f"internal: unknown marker source {message.source!r}"
                else:
                    reason = "internal: a health change on the repartition topic"
                self._dead(out, record.key, reason, record.value or b"", record)
            return
        watermark = forward_watermark(record.headers)
        if watermark is False:
            reason = f"internal: a forwarded reading without a valid {FORWARD_WATERMARK} header"
            self._dead(out, record.key, reason, record.value or b"", record)
        elif record.headers and binary_mode(record.headers):
            self._binary(record, out, watermark)
        else:
            self._handle(record.value, record.key, record, out, None, watermark)

    def _handle(
        self,
        raw: bytes | None,
        key: bytes | None,
        origin: Origin | ConsumerRecord,
        out: list[Record],
        doc: bytes | None = None,
        forwarded: _Watermark | bool = False,
    ) -> None:
        """One record: ``raw`` its value, ``doc`` the structured event a binary-mode record
        stands for (``None``: ``raw`` is one; its size was checked with its headers).
        ``forwarded``: the record came from the repartition topic, and this is the watermark
        it had where it arrived (``None``: no tick yet); ``False``: it arrived here."""
        raw = raw if raw is not None else b""
        r = self.routing
        limit = r.settings.max_event_bytes
        if doc is not None:
            limit = max(limit, len(doc))
        answer = self._route(
            raw if doc is None else doc, _text(key), limit, r.not_after, r.tick_key
        )
        if isinstance(answer, tuple):  # a reading of a link of the topology
            reading = answer
            self.counts[_STATUS] += 1
            link = reading[0]
            if link not in self.links:
                if forwarded is not False:
                    self._dead(out, key, self._misrouted(link), raw, origin)
                else:
                    out.append(self._forward(link, key, raw, origin))
                return
            stage = self.stage
            if link in self._behind_links:
                if forwarded is not False:
                    if _after(forwarded, self.behind.watermark):
                        self._hold(forwarded, reading, raw, origin)
                        return
                    stage = self.behind
                elif self._held_links[link]:
                    self._hold(self.stage.watermark, reading, raw, origin)
                    return
                else:
                    self._adopt(link, out)
            self._apply(stage, reading, key, raw, origin, out)
        elif isinstance(answer, Refused):
            self._refused(answer, key, raw, origin, out)
        else:
            self.counts[answer.type] += 1
            wrong = self._misplaced.get(answer.type)
            if wrong is not None:
                self._dead(out, key, wrong, raw, origin)
            elif forwarded is not False:
                self._dead(out, key, "internal: a tick forwarded", raw, origin)
            else:  # the only other type the topic carries (checked when the stage is made)
                assert isinstance(answer, Tick)
                self._on_tick(answer, raw, origin, out)

    def _on_tick(
        self, tick: Tick, raw: bytes, origin: Origin | ConsumerRecord, out: list[Record]
    ) -> None:
        """A tick read from this partition: ``stage`` applies it at once, ``behind`` once
        every other partition has confirmed it (:meth:`_advance`)."""
        time, tick_id = tick.time, tick.id
        before = self.stage.watermark
        changes = self.stage.on_tick(time, tick_id, known=False)
        if self.stage.watermark == before:
            return  # a tick older than one applied already (two tickers for a moment)
        self._dirty.update(self.stage.states)
        self._tick = {"tick": time, "id": tick_id}
        self._dirty.add(self._watermark_key)
        for change in changes:
            self._fan_out(out, change)
        self._markers.append((time, tick_id))
        self._pending.append((time, tick_id))
        if self.stage.failures:
            self._failures(self.stage.failures, out, raw, origin)
        self._advance(out, raw, origin)

    def _apply(
        self,
        stage: LinkStage,
        reading: Reading,
        key: bytes | None,
        raw: bytes,
        origin: Origin | ConsumerRecord,
        out: list[Record],
    ) -> None:
        """One reading applied to its link in ``stage``; its change sent."""
        link = reading[0]
        state = stage.states.get(link)
        saved = self._link_snapshot(state) if state is not None else None
        start = len(out)
        try:
            change = stage.on_status(*reading)
            if isinstance(change, str):  # refused: see LinkStage.on_status
                self._dead(out, key, change, raw, origin)
            elif change is not None:
                self._fan_out(out, change)
        except Exception:  # the link as before the reading, and none of its changes out
            if state is None:
                stage.states.pop(link, None)
            else:
                assert saved is not None
                restore(state, saved)
            del out[start:]
            raise
        self._dirty.add(link)

    def _forward(
        self, link: str, key: bytes | None, raw: bytes, origin: Origin | ConsumerRecord
    ) -> Record:
        """A reading of a link this partition does not own, to the partition that does: its
        bytes and headers as they came, and this partition's watermark."""
        self.counts["forwarded"] += 1
        headers = list(origin.headers) if not isinstance(origin, Origin) else []
        mark = b"none" if self.stage.watermark is None else str(self.stage.watermark).encode()
        headers.append((FORWARD_WATERMARK, mark))
        right = partition_for(link, self.routing.partitions)
        return Record(self.routing.settings.topic_repartition, key, raw, right, headers)

    def _hold(
        self,
        watermark: int | None,
        reading: Reading,
        raw: bytes,
        origin: Origin | ConsumerRecord,
    ) -> None:
        """Keep a reading of a ``behind`` link until ``behind`` reaches ``watermark``."""
        headers = () if isinstance(origin, Origin) else origin.headers
        where = Origin(origin.topic, origin.partition, origin.offset)
        held = [watermark, list(reading), raw.decode("latin-1"), _queued_origin(where, headers)]
        self._held.append(held)
        self._held_links[reading[0]] += 1
        self._dirty.add(self._watermark_key)

    def _adopt(self, link: str, out: list[Record]) -> None:
        """The first reading of ``link`` on its own partition: it leaves ``behind`` for
        ``stage``, the ticks ``stage`` applied and ``behind`` not yet applied to it first."""
        for change in self.behind.catch_up(link, self._pending):
            self._fan_out(out, change)
        if self.behind.failures:
            self._failures(self.behind.failures, out, None, Origin("", self.partition, -1))
        self._move(link, self.behind.states.get(link))
        self._dirty.add(link)
        if not self._behind_links:
            self._advance(out, None, Origin("", self.partition, -1))

    def _bound(self) -> int | None:
        """The latest tick ``behind`` may apply: every other partition has confirmed it."""
        if not self._behind_links or not self._others:
            return self._pending[-1][0] if self._pending else None
        if len(self._confirmed) < len(self._others):
            return None
        return min(self._confirmed.values())

    def _advance(
        self, out: list[Record], raw: bytes | None, origin: Origin | ConsumerRecord
    ) -> None:
        """Apply to ``behind`` the pending ticks every other partition has confirmed, each
        followed by the readings held for it; tell stage 2 (:meth:`_watermarks`)."""
        if not self._pending:
            return
        bound = self._bound()
        if bound is None:
            return
        done = 0
        for time, tick_id in self._pending:
            if time > bound:
                break
            done += 1
            for change in self.behind.on_tick(time, tick_id):
                self._fan_out(out, change)
            if self.behind.failures:
                self._failures(self.behind.failures, out, raw, origin)
            if self._behind_links:
                self._dirty.update(self.behind.states)
            self._ticks.append((time, tick_id))
            self._release(time, out)
        if done:
            del self._pending[:done]
            self._dirty.add(self._watermark_key)

    def _release(self, watermark: int, out: list[Record]) -> None:
        """Apply the held readings whose watermark ``behind`` has reached, in arrival order."""
        if not self._held:
            return
        keep = []
        for held in self._held:
            if _after(held[0], watermark):
                keep.append(held)
                continue
            _, reading, text, queued = held
            raw = text.encode("latin-1")
            where, headers = _origin(queued)
            assert where is not None
            origin = _Forwarded.of(where, reading[0].encode(), raw, headers)
            link = reading[0]
            self._held_links[link] -= 1
            if not self._held_links[link]:
                del self._held_links[link]
            stage = self.behind if link in self._behind_links else self.stage
            try:
                self._apply(stage, _reading(reading), origin.key, raw, origin, out)
            except Exception as exc:
                self._poisoned(exc, out, origin.key, raw, origin)
        if len(keep) != len(self._held):
            self._held = keep
            self._dirty.add(self._watermark_key)

    def _misrouted(self, link: str) -> str:
        right = partition_for(link, self.routing.partitions)
        return (
            f"internal: a reading of link {link!r} forwarded to partition {self.partition}, "
            f"which is not its partition {right} (murmur2 of the key): the repartition topic "
            "has another partition count than the link-status topic?"
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
    topics (co-partitioned: partition ``q`` of each holds the same services), and of the
    service repartition topic, where the other partitions forward the overrides and feedback
    of this partition's services that reached them (a producer whose partitioner is not
    murmur2).

    A forwarded input must be judged and queued exactly where replay would: after the last
    tick its own topic partition had seen when it arrived there (carried in the
    :data:`FORWARD_WATERMARK` header), before the next. It can be judged and queued at once,
    as an input of this partition is, provided the services have not applied a later tick yet.
    So each partition, once both its overrides and its feedback partition have seen a tick,
    tells every other one (a marker record on the repartition topic, behind what it forwarded
    before the tick, on the same producer), and the markers of the other partitions are
    sources (:func:`input_source`) as the stage-1 partitions are: the services reach a tick
    only once every input forwarded from before it has arrived, and each service's queue holds a
    forwarded input until its tick as it holds any other. The judging (signature, grants,
    rate budget, duplicates) is this partition's, with the carried watermark, so the verdicts
    are replay's.
    """

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
        #: The core's entry point, with this partition's service states (a flood's copies).
        self._route = Inputs(topology, self.stage.states).route
        settings = routing.settings
        #: The types each source's topic does not carry, and why (the one table).
        self._misplaced = {
            OVERRIDES_SOURCE: routing.misplaced(settings.topic_overrides),
            FEEDBACK_SOURCE: routing.misplaced(settings.topic_feedback),
        }
        for source, misplaced in self._misplaced.items():
            if _STATUS not in misplaced:
                raise ValueError(f"stage 2 takes no readings, but its {source} topic carries them")
        self._judge = override_judge(topology)
        self.windows = Windows(topology)
        self.expected = frozenset(
            [*(link_source(p) for p in range(routing.partitions)), OVERRIDES_SOURCE,
             FEEDBACK_SOURCE, *(input_source(p) for p in range(routing.partitions)
                                if p != partition)]
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
        self._forwarding()

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
        self._send_markers(out)
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
        repartition = self.routing.settings.topic_service_repartition
        for r in records:
            start = len(out)
            origin = Origin(r.topic, r.partition, r.offset)
            try:
                if r.topic == repartition:
                    self._repartitioned(r, out)
                elif source is None:
                    self._change(r.value, r.key, origin, out, r)
                else:
                    self._input(source, r.value, r.key, origin, out, r)
            except Exception as exc:
                self._poisoned(exc, out, r.key, r.value, r)
            if trace is not None:
                out[start:] = trace(r, out[start:])
        self._send_markers(out)
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
        forwarded: _Watermark | bool = False,
    ) -> None:
        """``forwarded``: the record came from the service repartition topic, and this is the
        watermark it had where it arrived (``None``: no tick yet); ``False``: it arrived
        here."""
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
        answer = self._route(doc, _text(key), limit, r.not_after, r.tick_key)
        if isinstance(answer, Refused):
            self._refused(answer, key, raw, where, out)
            return
        type_ = _STATUS if isinstance(answer, tuple) else answer.type
        self.counts[type_] += 1
        if forwarded is not False:  # judged where it arrived; only a service input travels
            # (each partition takes its own copy of a tick and of a maintenance window, and
            # a reading is refused on the services' topics)
            if not isinstance(answer, ServiceInput):
                self._dead(out, key, f"internal: a {type_} forwarded", raw, where)
                return
        else:
            wrong = self._misplaced[source].get(type_)
            if wrong is not None:
                self._dead(out, key, wrong, raw, where)
                return
        if isinstance(answer, Tick):
            self._source(source, answer.time, answer.id)
            self._drain(out, raw, where)
            return
        if isinstance(answer, Window):
            self._window(answer.event, answer.time, raw, key, origin, out, where, record)
            return
        assert isinstance(answer, ServiceInput)  # no reading: checked when the stage is made
        service = answer.service
        if service not in self.services:
            self._forward_input(service, source, key, raw, where, forwarded, out)
            return
        seen = self.sources.get(source)
        watermark = seen[0] if seen is not None else None
        if forwarded is not False:
            watermark = forwarded
        headers = record.headers if record is not None else ()
        queued = _queued_origin(origin, headers)
        refused = admit(self.stage, self._judge, answer, watermark, raw, queued)
        if refused is not None:  # audited, dead-lettered, nothing else done
            if self.stage.state_of(service).budget:  # the rate budget it was counted in
                self._dirty.add(service)
            if refused[1] is not None:
                out.append(self.routing.emitted(refused[1]))
            self._dead(out, key, refused[0], raw, where)
            return
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
        if source in _OWN_SOURCES:
            self._mark()

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

    # -- forwarding: inputs of other partitions' services --------------------------------

    def _forwarding(self) -> None:
        """What forwarding needs: the other partitions, and the last tick marked, which the
        sources give back after a restart (they are saved)."""
        self._other_partitions = [q for q in range(self.routing.partitions) if q != self.partition]
        self._input_sources = frozenset(input_source(q) for q in self._other_partitions)
        #: This partition's source name in its markers.
        self._marker_source = input_source(self.partition)
        #: Ticks both own input partitions have seen since the last marker records.
        self._markers: list[tuple[int, str]] = []
        self._marked = self._inputs_reached()

    def _inputs_reached(self) -> tuple[int, str] | None:
        """The last tick both this partition's overrides and its feedback partition have
        seen (``None``: not both any yet)."""
        overrides = self.sources.get(OVERRIDES_SOURCE)
        feedback = self.sources.get(FEEDBACK_SOURCE)
        if overrides is None or feedback is None:
            return None
        return min(overrides, feedback)

    def _mark(self) -> None:
        """An own input partition saw a tick: if both have now, the other partitions are told
        (:meth:`_send_markers`), behind what this partition forwarded before it."""
        reached = self._inputs_reached()
        if reached is None or (self._marked is not None and reached[0] <= self._marked[0]):
            return
        self._marked = reached
        if self._other_partitions:
            self._markers.append(reached)

    def _send_markers(self, out: list[Record]) -> None:
        """The ticks marked since the last time, to every other partition of the service
        repartition topic: one record each (bounded), after the records the batch caused."""
        if not self._markers:
            return
        topic = self.routing.settings.topic_service_repartition
        ticks = self._markers
        for start in range(0, len(ticks), WATERMARK_TICKS):  # each record bounded
            value = encode_watermark(ticks[start : start + WATERMARK_TICKS], self._marker_source)
            out.extend(
                Record(topic, b"__watermark__", value, q, []) for q in self._other_partitions
            )
        self._markers = []

    def _forward_input(
        self,
        service: str,
        source: str,
        key: bytes | None,
        raw: bytes,
        where: Origin | ConsumerRecord,
        forwarded: _Watermark | bool,
        out: list[Record],
    ) -> None:
        """An input of a service of another partition: forwarded to it, with its bytes and
        headers as they came, where it came from (:data:`FORWARD_ORIGIN`) and the last tick
        its topic partition has seen (:data:`FORWARD_WATERMARK`). One forwarded here already
        is refused: the repartition topic does not match the input topics."""
        right = partition_for(service, self.routing.partitions)
        if forwarded is not False:
            reason = (
                f"internal: an input of service {service!r} forwarded to partition "
                f"{self.partition}, which is not its partition {right} (murmur2 of the key): "
                "the service repartition topic has another partition count than the input "
                "topics?"
            )
            self._dead(out, key, reason, raw, where)
            return
        self.counts["forwarded"] += 1
        headers = list(where.headers) if not isinstance(where, Origin) else []
        headers.append((FORWARD_ORIGIN, orjson.dumps([where.topic, where.partition, where.offset])))
        seen = self.sources.get(source)
        headers.append((FORWARD_WATERMARK, b"none" if seen is None else str(seen[0]).encode()))
        topic = self.routing.settings.topic_service_repartition
        out.append(Record(topic, key, raw, right, headers))

    def handle_forwarded(
        self,
        raw: bytes | None,
        key: bytes | None,
        origin: Origin,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> list[Record]:
        """One message of this partition of the service repartition topic, its state
        written."""
        out: list[Record] = []
        try:
            self._repartitioned(_Forwarded.of(origin, key, raw, headers), out)
        except Exception as exc:
            self._poisoned(exc, out, key, raw, origin)
        self._send_markers(out)
        self.flush()
        return out

    def _repartitioned(self, record: ConsumerRecord, out: list[Record]) -> None:
        """A record of the service repartition topic: another partition's marker, or an input
        it forwarded here, taken as it came (its origin and headers) with the watermark it
        carries."""
        raw = record.value or b""
        if record.key == b"__watermark__":
            message = decode_change(record.value)
            if isinstance(message, Watermark) and message.source in self._input_sources:
                for tick, tick_id in message.ticks:
                    self._source(message.source, tick, tick_id)
                self._drain(out, raw, record)
                return
            if isinstance(message, str):
                reason = message
            elif isinstance(message, Watermark):
                reason = f"internal: unknown marker source {message.source!r}"
            else:
                reason = "internal: a health change on the service repartition topic"
            self._dead(out, record.key, reason, raw, record)
            return
        watermark = forward_watermark(record.headers)
        origin = forward_origin(record.headers)
        if watermark is False or origin is None:
            reason = (
                f"internal: a forwarded input without valid {FORWARD_ORIGIN} and "
                f"{FORWARD_WATERMARK} headers"
            )
            self._dead(out, record.key, reason, raw, record)
            return
        came = _Forwarded.of(origin, record.key, record.value, record.headers[:-2])
        self._input(FORWARDED_SOURCE, record.value, record.key, origin, out, came, watermark)
