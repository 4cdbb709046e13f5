"""The Kafka worker's batch path: one ``process {topic}`` span per consumed batch of one topic
partition (:meth:`KafkaTracing.process`, :class:`Batch`), what each record caused traced from
the record's own context, the internal changes topic carrying that context from stage 1 to
stage 2; and the check that keeps aiokafka's auto-instrumentation from doubling the headers
(:func:`kafka_autoinstrumentation`).

The one module of :mod:`streams.tracing` that knows the engine's wire format
(:mod:`streams.codec`): stage 2 reads the links' health from the changes topic it consumes.
What the engine produces is traced from what the core made (a record's ``made``), never by
parsing its value back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple, Protocol, Self, TypeVar

from opentelemetry.context import Context
from opentelemetry.semconv._incubating.attributes import messaging_attributes as msg
from opentelemetry.trace import INVALID_SPAN, SpanContext, SpanKind

from streams.codec import ConsumerRecord, decode_change
from streams.telemetry import Telemetry
from streams.tracing.propagation import NO_HEADERS, inject, merged, parse, remote, text
from streams.tracing.scopes import Off, Scope, consumer_attributes, health_event
from streams.tracing.tracer import Tracing
from workflows.links import HealthChange
from workflows.records import COMMANDS, DEADLETTER, TRANSITIONS, DeadLetter, Emitted
from workflows.topology import Topology

__all__ = [
    "MAX_BATCH_LINKS",
    "Batch",
    "KafkaTopics",
    "KafkaTracing",
    "Produced",
    "Received",
    "kafka_autoinstrumentation",
]

_log = logging.getLogger(__name__)

#: At most this many links on a batch's processing span (the SDK's default span link limit,
#: ``OTEL_SPAN_LINK_COUNT_LIMIT``); the others are counted in ``failover.batch.links_dropped``.
MAX_BATCH_LINKS: Final = 128


#: What the batch path reads of a consumed record: the engine's one description of aiokafka's
#: ``ConsumerRecord``.
Received = ConsumerRecord


class Produced(Protocol):
    """A record to produce (:class:`streams.partitions.Record`): what the batch path reads of
    it, and how it gets its headers replaced."""

    @property
    def topic(self) -> str: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...

    @property
    def made(self) -> Emitted | HealthChange | None:
        """What the value encodes, as the core made it: traced from it, never parsed back."""

    def _replace(self, *, headers: list[tuple[str, bytes]]) -> Self: ...


_P = TypeVar("_P", bound=Produced)


class KafkaTopics(NamedTuple):
    """The configured topic names (:class:`streams.config.Settings`): which records of a batch
    are outputs to trace, internal hops, or neither (table changelogs)."""

    link_status: str
    overrides: str
    feedback: str
    commands: str
    transitions: str
    deadletter: str
    changes: str
    service_repartition: str

    @classmethod
    def of(cls, settings: object) -> KafkaTopics:
        """The names ``settings`` (:class:`streams.config.Settings`, where their defaults are
        written) configures: its ``topic_*`` fields."""
        return cls(*(getattr(settings, f"topic_{name}") for name in cls._fields))


class Batch(Scope):
    """The processing of one batch of one topic partition, as consumed: one ``process
    {topic}`` CONSUMER span, and what each record of the batch caused (:meth:`handled`).

    Each record has a context of its own in the story: the W3C context it came with (its
    ``traceparent`` header, or the CloudEvent's extension attribute), else the batch's span.
    What a record causes hangs from its context, with a ``batch`` link to the batch's span:
    a transition's parent is chosen as for single messages (the context of the record that
    made the service's health bad, else the cause's, else the record's own); a command
    outside a transition, and a dead letter, are children of the record's context. A change
    sent to the internal topic carries the record's context, so that stage 2 continues it.

    When the batch's span is sampled, it links to every record's context that is sampled
    (with ``messaging.kafka.offset``), at most ``max_links``. Headers are read lazily: for a
    batch that is not sampled, only records that caused something (or that stage 2 must
    remember: health changes, overrides, feedback) are looked at.
    """

    __slots__ = (
        "_by_offset", "_causes", "_changes", "_kafka", "_max_links", "_parsed", "_records",
        "_topics",
    )  # fmt: skip

    def __init__(
        self,
        tracing: KafkaTracing | None,
        topic: str = "",
        partition: int | None = None,
        group: str | None = None,
        records: Sequence[Received] = (),
        stage: str = "process",
        max_links: int = MAX_BATCH_LINKS,
    ) -> None:
        attrs = consumer_attributes(topic, partition, group)
        attrs[msg.MESSAGING_BATCH_MESSAGE_COUNT] = len(records)
        if records:
            attrs["failover.batch.offset.first"] = records[0].offset
            attrs["failover.batch.offset.last"] = records[-1].offset
        super().__init__(
            tracing, f"process {topic}", SpanKind.CONSUMER, Context(), attrs, stage=stage
        )
        self._records = records
        self._max_links = max_links
        self._by_offset: dict[int, SpanContext] = {}
        #: Values of records of a cause's topic parsed for their context, by offset, until
        #: :meth:`handled` takes them (each record is parsed once).
        self._parsed: dict[int, Mapping[str, Any] | None] = {}
        if tracing is None:  # the batch of telemetry that is off: it looks at nothing
            return
        kafka = tracing.kafka
        self._kafka = kafka
        self._topics = {
            COMMANDS: kafka.commands,
            TRANSITIONS: kafka.transitions,
            DEADLETTER: kafka.deadletter,
        }
        #: Records of this topic may be a transition's cause (their ids are remembered): an
        #: override or feedback, on its topic or forwarded to its service's partition.
        self._causes = topic in (kafka.overrides, kafka.feedback, kafka.service_repartition)
        #: Records of this topic are link health changes (stage 2 keeps track of them).
        self._changes = topic == kafka.changes

    #: False for the batch of telemetry that is off: :meth:`handled` returns its input.
    active: bool = True

    def __enter__(self) -> Batch:
        super().__enter__()
        span = self.span
        if span.is_recording():
            linked = dropped = 0
            for record in self._records:
                context = self.context_of(record)
                if context.is_remote and context.trace_flags.sampled:
                    if linked < self._max_links:
                        span.add_link(context, {msg.MESSAGING_KAFKA_OFFSET: record.offset})
                        linked += 1
                    else:
                        dropped += 1
            if dropped:
                span.set_attribute("failover.batch.links_dropped", dropped)
        return self

    def context_of(self, record: Received, event: Mapping[str, Any] | None = None) -> SpanContext:
        """The record's context: the one it came with (its headers', else its CloudEvent's:
        ``event``, its value parsed, if the caller has it), else the batch span's."""
        offset = record.offset
        found = self._by_offset.get(offset)
        if found is None:
            found = remote(record.headers, None)
            value = record.value
            if found is None and value and b'"traceparent"' in value:
                if event is None:
                    event = parse(value)
                    if self._causes:  # handled() reads its id
                        self._parsed[offset] = event
                found = remote(None, event)
            if found is None:
                found = self.span.get_span_context()
            self._by_offset[offset] = found
        return found

    def handled(self, record: Received, out: list[_P]) -> list[_P]:
        """``record`` (of this batch, in offset order) was handled and caused ``out``: the
        same records, those the story traces with the headers to send them with.

        Call it for every record, ``out`` empty or not: stage 2 learns the links' health
        from the changes topic, and remembers overrides and feedback, through it.
        """
        tracing = self._tracing
        assert tracing is not None
        if tracing.telemetry.traces:
            if self._causes:
                parsed = self._parsed
                offset = record.offset
                event = parsed.pop(offset) if offset in parsed else parse(record.value or b"")
                ident = text(event.get("id")) if event is not None else None
                if ident is not None:
                    tracing._remember(ident, self.context_of(record, event))
            elif self._changes:
                change = decode_change(record.value)
                if isinstance(change, HealthChange):
                    _Member(self, self.context_of(record)).health(
                        change.link, change.health, change.reason
                    )
        if not out:
            return out
        return self._produced(record, out)

    def _produced(self, record: Received, out: list[_P]) -> list[_P]:
        tracing = self._tracing
        assert tracing is not None
        topics = self._kafka
        traces = tracing.telemetry.traces
        context = self.context_of(record) if traces else self.span.get_span_context()
        hop = inject(context) if context.is_valid else NO_HEADERS
        member = _Member(self, context)
        result = list(out)
        traced: list[Emitted | DeadLetter] = []
        where: list[int] = []
        seen: set[tuple[str, int]] = set()
        for i, produced in enumerate(out):
            topic = produced.topic
            if topic == topics.changes:
                if not hop:
                    continue
                result[i] = produced._replace(headers=merged(produced.headers, hop))
                if self.span.is_recording():
                    change = produced.made
                    if (
                        isinstance(change, HealthChange)
                        and (change.link, change.health) not in seen
                    ):
                        seen.add((change.link, change.health))
                        health_event(self.span, change.link, change.health, change.reason)
            elif topic in (topics.commands, topics.transitions):
                emitted = produced.made
                if isinstance(emitted, Emitted):
                    traced.append(emitted)
                    where.append(i)
            elif topic == topics.deadletter:
                traced.append(_dead_letter(produced, record))
                where.append(i)
        if traced:
            self._count += len(traced)
            for i, headers in zip(where, tracing._outputs(member, traced, self._topics, None),
                                  strict=True):  # fmt: skip
                if headers:
                    result[i] = out[i]._replace(headers=merged(out[i].headers, headers))
        return result


def _dead_letter(produced: Produced, record: Received) -> DeadLetter:
    """A dead-letter record as the core's :class:`~workflows.records.DeadLetter`: the reason
    and origin are in its headers (:func:`streams.codec.deadletter_headers`)."""
    headers = dict(produced.headers)
    reason = headers.get("failover-reason", b"").decode("utf-8", "replace")
    source = [headers.get(f"failover-source-{part}") for part in ("topic", "partition", "offset")]
    topic, partition, offset = (
        p.decode("utf-8", "replace") if p is not None else "?" for p in source
    )
    origin = f"{topic}[{partition}]@{offset}" if source[0] is not None else None
    key = produced.key.decode("utf-8", "replace") if produced.key is not None else None
    return DeadLetter(key, reason, produced.value, origin)


class _Member(Scope):
    """One record of a :class:`Batch`: the batch's span, the record's context."""

    __slots__ = ("_member_context",)

    def __init__(self, batch: Batch, context: SpanContext) -> None:
        super().__init__(batch._tracing, stage=batch._stage)
        self.span = batch.span
        self._member_context = context

    @property
    def context(self) -> SpanContext:
        return self._member_context

    def _refused(self, reason: str, code: str, this_input: bool) -> None:
        # One refused record does not make the batch's processing an error.
        super()._refused(reason, code, this_input=False)


class _OffBatch(Off, Batch):
    """Telemetry off: nothing recorded, records returned as they are (the scope methods of
    :class:`~streams.tracing.scopes.Off`, and the batch's own)."""

    __slots__ = ()
    active = False

    def __enter__(self) -> Batch:
        return self

    def context_of(self, record: Received, event: Mapping[str, Any] | None = None) -> SpanContext:
        return INVALID_SPAN.get_span_context()

    def handled(self, record: Received, out: list[_P]) -> list[_P]:
        return out


_OFF_BATCH: Final = _OffBatch(None)


def kafka_autoinstrumentation(*, disable: bool = True) -> bool:
    """Whether ``opentelemetry-instrumentation-aiokafka`` has wrapped aiokafka in this
    process (``opentelemetry-instrument``, or ``AIOKafkaInstrumentor().instrument()``), and,
    with ``disable``, undo it. Call it once in the worker, after installing the globals.

    Its consumer wrappers (``AIOKafkaConsumer.getone``, ``.getmany``) never run under faust,
    which reads through aiokafka's fetcher; but its ``AIOKafkaProducer.send`` wrapper runs for
    every record faust sends, starts a PRODUCER span of its own (a new root: nothing of ours
    is current when faust sends) and *appends* a second ``traceparent`` to the headers, after
    the engine's: consumers that read the last one (the Java agent does) would follow that
    span instead of the command's send span. It also asks for the topic's metadata again on
    every send. ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=aiokafka`` keeps
    ``opentelemetry-instrument`` from installing it in the first place.
    """
    try:
        import aiokafka  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - aiokafka comes with faust
        return False
    wrapped = [
        f"{cls.__name__}.{name}"
        for cls, name in (
            (aiokafka.AIOKafkaProducer, "send"),
            (aiokafka.AIOKafkaConsumer, "getone"),
            (aiokafka.AIOKafkaConsumer, "getmany"),
        )
        if hasattr(cls.__dict__.get(name), "__wrapped__")
    ]
    if not wrapped:
        return False
    log = _log
    if not disable:
        log.warning("aiokafka is instrumented (%s): the engine's commands will carry two "
                    "traceparent headers", ", ".join(wrapped))  # fmt: skip
        return True
    import importlib

    try:
        module = importlib.import_module("opentelemetry.instrumentation.aiokafka")
        instrumentor = module.AIOKafkaInstrumentor()
    except (ImportError, AttributeError):
        log.warning("aiokafka is wrapped (%s), not by opentelemetry-instrumentation-"
                    "aiokafka: left as it is", ", ".join(wrapped))  # fmt: skip
        return True
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
        log.warning("opentelemetry-instrumentation-aiokafka was enabled (%s): disabled, the "
                    "engine traces its Kafka records itself", ", ".join(wrapped))  # fmt: skip
    return True


class KafkaTracing(Tracing):
    """:class:`~streams.tracing.tracer.Tracing` for the Kafka worker: the topic names its
    batch path tells records apart by (``kafka``: ``KafkaTopics.of(settings)``), and
    :meth:`process`."""

    def __init__(
        self,
        telemetry: Telemetry,
        topology: Topology | None = None,
        *,
        kafka: KafkaTopics,
        remember: int = 10_000,
    ) -> None:
        super().__init__(telemetry, topology, remember=remember)
        #: The topic names the batch path (:meth:`process`) tells records apart by.
        self.kafka = kafka

    def process(
        self,
        topic: str,
        partition: int,
        group: str | None,
        records: Sequence[Received],
        *,
        stage: str = "process",
        max_links: int = MAX_BATCH_LINKS,
    ) -> Batch:
        """The processing of one consumed batch of ``topic`` partition ``partition`` (records
        in offset order) by consumer group ``group``: ``with tracing.process(...) as batch:``,
        then :meth:`Batch.handled` for each record. ``stage`` names the batch in
        ``failover.stage.duration``. Input counts are not recorded here (see
        :meth:`count_inputs`): that would mean decoding every record.
        """
        if not self.enabled:
            return _OFF_BATCH
        return Batch(self, topic, partition, group, records, stage, max_links)
