"""The causal chain in traces: probe reading → processing → transition → each command sent.

Independent of the transport: :func:`traced_replay` (``failover replay --trace``) uses it now,
the Kafka path the same way. The pure core knows nothing of this; what it emits
(:class:`~workflows.records.Emitted`, :class:`~workflows.records.DeadLetter`) and the link
health changes of stage 1 are all it needs.

How to call it, per input message::

    tracing = Tracing(telemetry, topology)
    with tracing.input(event, raw, headers, destination="link-status", partition=3,
                       offset=1234, group="failover") as scope:
        ...                                   # run the stages
        scope.health(link, health, reason)    # for each link health change (stage 1)
        headers = scope.outputs(records)      # per record, the headers to send it with

On Kafka, per consumed batch of one topic partition (:meth:`Tracing.process`)::

    with tracing.process(topic, partition, group, records) as batch:
        for record in records:
            out = batch.handled(record, handle(record))  # the records it caused, traced

The spans (names and attributes follow OpenTelemetry's messaging conventions):

- ``process {destination}`` (CONSUMER), one per input message: the W3C ``traceparent``
  (and ``tracestate``) the producer put in the Kafka headers, or else in the CloudEvent's
  ``traceparent`` extension attribute, is its **parent** (single-message processing); with
  none, it is a root. ``messaging.system=kafka``, destination, partition, offset, consumer
  group, message id and key, ``failover.event.id``, ``.event.type``, ``.event.time`` (the event
  time, as sent), ``failover.subject``. A link health change is an event on it
  (``failover.link.health``); so is a dead letter. :meth:`Tracing.batch` is the batch form:
  one span, a **link** to each message's context, as the conventions prescribe for batches.
  :meth:`Tracing.process` is that form for consumed Kafka records (:class:`Batch`): what a
  record causes hangs from the record's own context (the probe's span it came with, else
  the batch's span), with a ``batch`` link to the batch's span; a change it sends to the
  internal topic carries that context to stage 2, so the probe's trace goes on there.
- ``transition {from}→{to}`` (INTERNAL), one per transition: ``failover.service``,
  ``.site``, ``.incident``, ``.from``, ``.to``, ``.reason``, ``.cause``, ``.event.time``.
- ``send {topic}`` (PRODUCER), one per record sent (commands, the transition record itself,
  dead letters): ``messaging.operation.type=send``, ``messaging.message.id`` (the CloudEvent
  id), the key, ``failover.command.type``. Its context is what the returned headers carry, so
  a consumer of the command continues the same trace. A command that follows a transition of
  the same service, at the same event time, in the same incident, is a child of that
  transition's span; the others (escalations, pin notices, a late record's reconcile) are
  children of the processing span.

The incident story ("one place to start per incident"):

- The transition that **opens** an incident (leaving ``online`` on the service's health) is
  a child of the processing span of the reading that made the service's health bad: the
  first bad reading. Its trace is the incident's trace: the probe's span, the reading's
  processing, the transition, its commands. (The processing span of whatever completed the
  condition, usually a clock tick, is a link: ``failover.link.role=trigger``.) An operator's
  ``force_manual`` from ``online`` is a child of the override's processing span instead.
- **Later** transitions of the incident are children of the processing span of their own
  cause (the ``cause`` field: an override, a reconcile report, the tick that completed a
  condition), and carry a link to the opening transition's span
  (``failover.link.role=incident``): the incident is a set of traces linked to one root,
  and each operator or office that traced its own message sees what it caused. A
  health-driven transition also links to the reading that last changed the service's
  health (``health``); commands outside a transition (escalations) link to the incident too.
- Every span of the story carries ``failover.incident``: searching for it finds them all.

What the first bad reading was is worked out here, from the link health changes reported to
:meth:`Scope.health` and the topology's requirements (a service's health is the worst over its
requirements, a group of redundant links counting its best): the same rule as stage 2, kept
in memory of this object. So are the recent inputs' contexts (to find a ``cause``) and the
open incidents' roots. That memory is best effort: a worker that restarts, or takes over a
partition, starts without it, and a transition then falls back to its processing span.

Metrics are recorded alongside: inputs by type, dead letters by reason code, transitions by
from and to, commands by type, and the time each processing scope took (``stage``).

When telemetry is off (:attr:`streams.telemetry.Telemetry.enabled` false), every method
returns at once and the headers are empty.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, Self, TypeVar

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.semconv._incubating.attributes import messaging_attributes as msg
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import INVALID_SPAN, Link, NonRecordingSpan, Span, SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.status import Status, StatusCode

from streams.codec import decode_change
from streams.telemetry import Telemetry
from workflows.engine import INPUT_TYPES, MAX_EVENT_BYTES, Engine
from workflows.health import HEALTH_NAMES, HEALTHY, service_health
from workflows.links import HealthChange
from workflows.records import COMMANDS, DEADLETTER, TRANSITIONS, DeadLetter, Emitted
from workflows.replay import Origin, replay
from workflows.service import NO_INCIDENT
from workflows.topology import Topology

if TYPE_CHECKING:
    from streams.config import Settings

__all__ = [
    "INPUT_TOPICS",
    "MAX_BATCH_LINKS",
    "Batch",
    "Headers",
    "HeadersIn",
    "KafkaTopics",
    "Message",
    "Produced",
    "Received",
    "Scope",
    "Tracing",
    "extract",
    "inject",
    "kafka_autoinstrumentation",
    "traced_replay",
]

#: Headers to send a record with: Kafka style, ``(name, bytes)`` pairs.
Headers = Sequence[tuple[str, bytes]]
#: Headers as received: a mapping or ``(name, value)`` pairs, values bytes or str.
HeadersIn = Mapping[str, bytes | str] | Iterable[tuple[str, bytes | str]] | None
#: Called with each record, its topic and its headers, inside the record's send span.
Send = Callable[[Emitted | DeadLetter, str, Headers], object]

#: The input topic of each input type (docs/contracts.md); replay names its process spans by them.
INPUT_TOPICS: Final[Mapping[str, str]] = {
    "link.status.v1": "link-status",
    "operator.override.v1": "operator-overrides",
    "manual.record.v1": "service-feedback",
    "reconcile.completed.v1": "service-feedback",
    "clock.tick.v1": "link-status",
}

_PROPAGATOR: Final = TraceContextTextMapPropagator()
_NO_HEADERS: Final[Headers] = ()
_KAFKA: Final = msg.MessagingSystemValues.KAFKA.value
_PROCESS: Final = msg.MessagingOperationTypeValues.PROCESS.value
_SEND: Final = msg.MessagingOperationTypeValues.SEND.value
#: Reasons of transitions that an operator or an office caused, not the links' health.
_NOT_HEALTH: Final = ("operator-", "reconciled")
#: Commands that never belong to a transition, even when they follow one.
_STANDALONE_TEMPLATES: Final = ("escalate-", "pinned-", "unpinned-")

_log = logging.getLogger(__name__)

_CURRENT: ContextVar[Scope | None] = ContextVar("failover_tracing_scope", default=None)


# -- propagation -------------------------------------------------------------------------------


def _carrier(headers: HeadersIn, event: Mapping[str, Any] | None) -> dict[str, str] | None:
    carrier: dict[str, str] = {}
    if headers:
        items = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in items:
            key = name.lower()
            if key in ("traceparent", "tracestate") and key not in carrier:
                carrier[key] = (
                    value.decode("latin-1") if isinstance(value, bytes | bytearray) else value
                )
    if "traceparent" not in carrier and event is not None:
        # The CloudEvents distributed-tracing extension, in a structured-mode envelope.
        parent = event.get("traceparent")
        if isinstance(parent, str):
            carrier = {"traceparent": parent}
            state = event.get("tracestate")
            if isinstance(state, str):
                carrier["tracestate"] = state
    return carrier if "traceparent" in carrier else None


def extract(headers: HeadersIn, event: Mapping[str, Any] | None = None) -> Context:
    """The W3C trace context of a message: from its Kafka headers (``traceparent``,
    ``tracestate``), else from the CloudEvent's ``traceparent`` extension attribute.

    Returns an empty context (a new root, once used as a parent) when there is none.
    """
    carrier = _carrier(headers, event)
    if carrier is None:
        return Context()
    return _PROPAGATOR.extract(carrier, context=Context())


def _remote(headers: HeadersIn, event: Mapping[str, Any] | None) -> SpanContext | None:
    span_context = trace.get_current_span(extract(headers, event)).get_span_context()
    return span_context if span_context.is_valid else None


def inject(span: Span | SpanContext) -> Headers:
    """``traceparent`` (and ``tracestate``) headers carrying ``span``'s context."""
    if isinstance(span, SpanContext):
        span = NonRecordingSpan(span)
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span, Context()))
    return [(name, value.encode("latin-1")) for name, value in carrier.items()]


def _under(span_context: SpanContext) -> Context:
    return trace.set_span_in_context(NonRecordingSpan(span_context), Context())


def _same(a: SpanContext | None, b: SpanContext | None) -> bool:
    return a is not None and b is not None and (a.trace_id, a.span_id) == (b.trace_id, b.span_id)


def _health_event(span: Span, link: str, level: int, reason: str) -> None:
    if span.is_recording():
        span.add_event("failover.link.health", {
            "failover.link": link,
            "failover.health": HEALTH_NAMES[level],
            "failover.health.reason": reason,
        })  # fmt: skip


def _merged(headers: Sequence[tuple[str, bytes]], ours: Headers) -> list[tuple[str, bytes]]:
    """``headers`` with ``ours`` (trace context) appended, and any trace context they had
    before left out: a record carries one ``traceparent``, the engine's."""
    kept = [(n, v) for n, v in headers if n.lower() not in ("traceparent", "tracestate")]
    kept.extend(ours)
    return kept


def _parse(raw: bytes) -> dict[str, Any] | None:
    if len(raw) > MAX_EVENT_BYTES:
        return None
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


# -- scopes --------------------------------------------------------------------------------------


class Message(NamedTuple):
    """One message of a batch (:meth:`Tracing.batch`)."""

    raw: bytes
    headers: HeadersIn = None
    event: Mapping[str, Any] | None = None
    key: str | None = None
    offset: int | None = None


def _consumer_attributes(
    destination: str, partition: int | None, group: str | None
) -> dict[str, Any]:
    """The messaging attributes of a ``process`` span, one message's or a batch's."""
    attrs: dict[str, Any] = {
        msg.MESSAGING_SYSTEM: _KAFKA,
        msg.MESSAGING_OPERATION_TYPE: _PROCESS,
        msg.MESSAGING_OPERATION_NAME: "process",
        msg.MESSAGING_DESTINATION_NAME: destination,
    }
    if partition is not None:
        attrs[msg.MESSAGING_DESTINATION_PARTITION_ID] = str(partition)
    if group is not None:
        attrs[msg.MESSAGING_CONSUMER_GROUP_NAME] = group
    return attrs


class Scope:
    """The processing of one input message (or one batch): a context manager around the
    processing span, through which health changes and outputs are reported."""

    __slots__ = (
        "_attributes", "_count", "_ids", "_kind", "_links", "_name", "_parent", "_scope_token",
        "_stage", "_start", "_token", "_tracing", "span",
    )  # fmt: skip

    def __init__(
        self,
        tracing: Tracing | None,
        name: str = "",
        kind: SpanKind = SpanKind.INTERNAL,
        parent: Context | None = None,
        attributes: dict[str, Any] | None = None,
        links: Sequence[Link] | None = None,
        ids: Sequence[str] = (),
        stage: str = "process",
    ) -> None:
        self._tracing = tracing
        self._name = name
        self._kind = kind
        self._parent = parent
        self._attributes = attributes
        self._links = links
        self._ids = ids
        self._stage = stage
        self._count = 0
        self._start = 0.0
        self._token: Token[Context] | None = None
        self._scope_token: Token[Scope | None] | None = None
        #: The processing span (non-recording when traces are off or sampled out).
        self.span: Span = INVALID_SPAN

    @property
    def context(self) -> SpanContext:
        """The processing span's context."""
        return self.span.get_span_context()

    def __enter__(self) -> Scope:
        tracing = self._tracing
        assert tracing is not None
        self._start = time.perf_counter()
        if tracing.telemetry.traces:
            self.span = tracing.telemetry.tracer.start_span(
                self._name,
                context=self._parent if self._parent is not None else Context(),
                kind=self._kind,
                attributes=self._attributes,
                links=self._links,
            )
            self._token = otel_context.attach(trace.set_span_in_context(self.span))
            span_context = self.span.get_span_context()
            for ident in self._ids:
                tracing._remember(ident, span_context)
        self._scope_token = _CURRENT.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        tracing = self._tracing
        assert tracing is not None
        if self._scope_token is not None:
            _CURRENT.reset(self._scope_token)
        span = self.span
        if span.is_recording():
            span.set_attribute("failover.outputs", self._count)
            if exc is not None:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                span.set_attribute(ERROR_TYPE, type(exc).__qualname__)
        span.end()
        if self._token is not None:
            otel_context.detach(self._token)
        tracing.telemetry.record_stage(self._stage, time.perf_counter() - self._start)

    def health(self, link: str, health: int | str, reason: str = "probe") -> None:
        """Link ``link``'s effective health changed to ``health`` (``healthy``, ``impaired``,
        ``down``, or the core's int) while processing this input; ``reason`` is the core's
        (``probe``, ``stale``, ``flapping``, ``quiet``)."""
        tracing = self._tracing
        assert tracing is not None
        level = HEALTH_NAMES.index(health) if isinstance(health, str) else health
        _health_event(self.span, link, level, reason)
        tracing._link_changed(link, level, self.context)

    def outputs(
        self,
        records: Sequence[Emitted | DeadLetter],
        *,
        topics: Mapping[str, str] | None = None,
        send: Send | None = None,
    ) -> list[Headers]:
        """Trace the records this input produced; return, per record, the headers to send
        it with (its send span's context).

        Pass all the records of one drain together, in order: a command belongs to the
        transition before it. ``topics`` maps the core's logical topic names to the
        configured ones. ``send``, if given, is called for each record inside its send span.
        """
        tracing = self._tracing
        assert tracing is not None
        self._count += len(records)
        return tracing._outputs(self, records, topics or {}, send)

    def inject(self) -> Headers:
        """Headers carrying the processing span's context: for a hop inside the engine
        (stage 1 to stage 2 through the repartition topic)."""
        return inject(self.context) if self.context.is_valid else _NO_HEADERS

    def _refused(self, reason: str, code: str, this_input: bool) -> None:
        """A dead letter is sent from this scope; ``this_input``: of the input it processes."""
        span = self.span
        span.add_event("failover.deadletter", {
            "failover.deadletter.reason": reason, ERROR_TYPE: code,
        })  # fmt: skip
        if this_input:
            span.set_attribute(ERROR_TYPE, code)
            span.set_status(Status(StatusCode.ERROR, reason))


class _Off(Scope):
    """Telemetry off: nothing recorded, nothing injected."""

    __slots__ = ()

    def __enter__(self) -> Scope:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    def health(self, link: str, health: int | str, reason: str = "probe") -> None:
        return None

    def outputs(
        self,
        records: Sequence[Emitted | DeadLetter],
        *,
        topics: Mapping[str, str] | None = None,
        send: Send | None = None,
    ) -> list[Headers]:
        if send is not None:
            for record in records:
                send(record, _topic(record, topics or {}), _NO_HEADERS)
        return [_NO_HEADERS] * len(records)

    def inject(self) -> Headers:
        return _NO_HEADERS


_OFF: Final = _Off(None)


def _topic(record: Emitted | DeadLetter, topics: Mapping[str, str]) -> str:
    logical = DEADLETTER if isinstance(record, DeadLetter) else record.topic
    return topics.get(logical, logical)


class _Transition(NamedTuple):
    span: Span
    time: str
    incident: str


# -- the Kafka batch path ------------------------------------------------------------------------

#: At most this many links on a batch's processing span (the SDK's default span link limit,
#: ``OTEL_SPAN_LINK_COUNT_LIMIT``); the others are counted in ``failover.batch.links_dropped``.
MAX_BATCH_LINKS: Final = 128


class Received(Protocol):
    """What the batch path reads of a consumed record (aiokafka's ``ConsumerRecord``)."""

    @property
    def offset(self) -> int: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


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

    def _replace(self, *, headers: list[tuple[str, bytes]]) -> Self: ...


_P = TypeVar("_P", bound=Produced)


class KafkaTopics(NamedTuple):
    """The configured topic names (:class:`streams.config.Settings`): which records of a batch
    are outputs to trace, internal hops, or neither (table changelogs)."""

    link_status: str = "link-status"
    overrides: str = "operator-overrides"
    feedback: str = "service-feedback"
    commands: str = COMMANDS
    transitions: str = TRANSITIONS
    deadletter: str = DEADLETTER
    changes: str = "failover-engine-link-changes"

    @classmethod
    def of(cls, settings: Settings) -> KafkaTopics:
        """The names ``settings`` configures (its ``topic_*`` fields)."""
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

    __slots__ = ("_by_offset", "_causes", "_changes", "_max_links", "_records", "_topics")

    def __init__(
        self,
        tracing: Tracing | None,
        topic: str = "",
        partition: int | None = None,
        group: str | None = None,
        records: Sequence[Received] = (),
        stage: str = "process",
        max_links: int = MAX_BATCH_LINKS,
    ) -> None:
        attrs = _consumer_attributes(topic, partition, group)
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
        kafka = tracing.kafka if tracing is not None else KafkaTopics()
        self._topics = {
            COMMANDS: kafka.commands,
            TRANSITIONS: kafka.transitions,
            DEADLETTER: kafka.deadletter,
        }
        #: Records of this topic may be a transition's cause (their ids are remembered).
        self._causes = topic in (kafka.overrides, kafka.feedback)
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

    def context_of(self, record: Received) -> SpanContext:
        """The record's context: the one it came with, else the batch span's."""
        offset = record.offset
        found = self._by_offset.get(offset)
        if found is None:
            found = _remote(record.headers, None)
            value = record.value
            if found is None and value and b'"traceparent"' in value:
                found = _remote(None, _parse(value))
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
                event = _parse(record.value or b"")
                ident = _str(event.get("id")) if event is not None else None
                if ident is not None:
                    tracing._remember(ident, self.context_of(record))
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
        topics = tracing.kafka
        traces = tracing.telemetry.traces
        context = self.context_of(record) if traces else self.span.get_span_context()
        hop = inject(context) if context.is_valid else _NO_HEADERS
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
                result[i] = produced._replace(headers=_merged(produced.headers, hop))
                if self.span.is_recording():
                    change = decode_change(produced.value)
                    if (
                        isinstance(change, HealthChange)
                        and (change.link, change.health) not in seen
                    ):
                        seen.add((change.link, change.health))
                        _health_event(self.span, change.link, change.health, change.reason)
            elif topic in (topics.commands, topics.transitions):
                logical = COMMANDS if topic == topics.commands else TRANSITIONS
                key = produced.key.decode("utf-8", "replace") if produced.key is not None else ""
                traced.append(Emitted(logical, key, orjson.loads(produced.value)))
                where.append(i)
            elif topic == topics.deadletter:
                traced.append(_dead_letter(produced, record))
                where.append(i)
        if traced:
            self._count += len(traced)
            for i, headers in zip(where, tracing._outputs(member, traced, self._topics, None),
                                  strict=True):  # fmt: skip
                if headers:
                    result[i] = out[i]._replace(headers=_merged(out[i].headers, headers))
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


class _OffBatch(_Off, Batch):
    """Telemetry off: nothing recorded, records returned as they are (:class:`_Off`'s
    scope methods, and the batch's own)."""

    __slots__ = ()
    active = False

    def __enter__(self) -> Batch:
        return self

    def context_of(self, record: Received) -> SpanContext:
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


# -- the tracer ----------------------------------------------------------------------------------


class Tracing:
    """The engine's spans and metrics over a :class:`~streams.telemetry.Telemetry`.

    Args:
        telemetry: where spans and metrics go.
        topology: the services' requirements, to tell which reading made a service's health
            bad; without it, an incident's first transition is a child of its processing span.
        remember: how many recent inputs' span contexts to keep, to find a transition's
            ``cause`` processed before the tick that applied it.
    """

    def __init__(
        self,
        telemetry: Telemetry,
        topology: Topology | None = None,
        *,
        remember: int = 10_000,
        kafka: KafkaTopics | None = None,
    ) -> None:
        self.telemetry = telemetry
        #: The topic names the batch path (:meth:`process`) tells records apart by.
        self.kafka = kafka if kafka is not None else KafkaTopics()
        #: False when telemetry is off: every call returns at once.
        self.enabled = telemetry.enabled
        self._instruments = telemetry.instruments
        self._remember_max = remember
        self._recent: OrderedDict[str, SpanContext] = OrderedDict()
        self._services_by_link: Mapping[str, tuple[str, ...]] = (
            topology.services_by_link if topology is not None else {}
        )
        self._requires: dict[str, tuple[tuple[str, ...], ...]] = (
            {sid: svc.requires for sid, svc in topology.services.items()}
            if topology is not None
            else {}
        )
        self._link_health: dict[str, int] = {}  # links not healthy
        self._service_level: dict[str, int] = {}  # services not healthy
        self._service_bad: dict[str, SpanContext] = {}  # the reading that made it not healthy
        self._service_last: dict[str, SpanContext] = {}  # the last change of its health
        self._incidents: dict[str, SpanContext] = {}  # open incident -> opening transition

    # -- opening scopes --------------------------------------------------------------------

    def input(
        self,
        event: Mapping[str, Any] | None,
        raw: bytes,
        headers: HeadersIn = None,
        *,
        destination: str,
        partition: int | None = None,
        offset: int | None = None,
        group: str | None = None,
        key: str | None = None,
        stage: str = "process",
        attributes: Mapping[str, Any] | None = None,
    ) -> Scope:
        """The processing of one input message: ``with tracing.input(...) as scope:``.

        ``event`` is the decoded CloudEvent if the caller has it (else ``raw`` is parsed
        here, only if telemetry is on); ``headers`` the Kafka headers; ``destination``,
        ``partition``, ``offset``, ``group`` and ``key`` where it came from. ``stage`` names
        the scope in ``failover.stage.duration``.
        """
        if not self.enabled:
            return _OFF
        if event is None:
            event = _parse(raw)
        type_ = event.get("type") if event is not None else None
        self._instruments.events_in.add(
            1, {"event.type": type_ if type_ in INPUT_TYPES else "invalid"}
        )
        if not self.telemetry.traces:
            return Scope(self, stage=stage)
        ident = _str(event.get("id")) if event is not None else None
        attrs = _consumer_attributes(destination, partition, group)
        attrs[msg.MESSAGING_MESSAGE_BODY_SIZE] = len(raw)
        if offset is not None:
            attrs[msg.MESSAGING_KAFKA_OFFSET] = offset
        if key is not None:
            attrs[msg.MESSAGING_KAFKA_MESSAGE_KEY] = key
        if event is not None:
            if ident is not None:
                attrs[msg.MESSAGING_MESSAGE_ID] = ident
                attrs["failover.event.id"] = ident
            for name, field in (("type", "type"), ("time", "time"), ("source", "source")):
                value = _str(event.get(field))
                if value is not None:
                    attrs[f"failover.event.{name}"] = value
            subject = _str(event.get("subject"))
            if subject is not None:
                attrs["failover.subject"] = subject
        if attributes:
            attrs.update(attributes)
        return Scope(
            self,
            f"process {destination}",
            SpanKind.CONSUMER,
            extract(headers, event),
            attrs,
            ids=(ident,) if ident is not None else (),
            stage=stage,
        )

    def batch(
        self,
        messages: Sequence[Message],
        *,
        destination: str,
        partition: int | None = None,
        group: str | None = None,
        stage: str = "process",
    ) -> Scope:
        """The processing of a batch: one ``process {destination}`` span, a root, with a
        link to each message's producer context (the messaging conventions' batch form)."""
        if not self.enabled:
            return _OFF
        events = [m.event if m.event is not None else _parse(m.raw) for m in messages]
        for event in events:
            type_ = event.get("type") if event is not None else None
            self._instruments.events_in.add(
                1, {"event.type": type_ if type_ in INPUT_TYPES else "invalid"}
            )
        if not self.telemetry.traces:
            return Scope(self, stage=stage)
        links = []
        ids = []
        for message, event in zip(messages, events, strict=True):
            ident = _str(event.get("id")) if event is not None else None
            if ident is not None:
                ids.append(ident)
            remote = _remote(message.headers, event)
            if remote is not None:
                link_attrs: dict[str, Any] = {}
                if ident is not None:
                    link_attrs[msg.MESSAGING_MESSAGE_ID] = ident
                if message.offset is not None:
                    link_attrs[msg.MESSAGING_KAFKA_OFFSET] = message.offset
                links.append(Link(remote, link_attrs))
        attrs = _consumer_attributes(destination, partition, group)
        attrs[msg.MESSAGING_BATCH_MESSAGE_COUNT] = len(messages)
        return Scope(
            self, f"process {destination}", SpanKind.CONSUMER, Context(), attrs, links, ids, stage
        )

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

    def count_inputs(self, types: Mapping[str, int]) -> None:
        """Add to ``failover.events.in``: ``types`` maps an input type (anything else counts
        as ``invalid``) to a number of messages."""
        if not self.telemetry.metrics:
            return
        for type_, n in types.items():
            if n:
                self._instruments.events_in.add(
                    n, {"event.type": type_ if type_ in INPUT_TYPES else "invalid"}
                )

    def scope(
        self,
        name: str,
        *,
        parent: SpanContext | None = None,
        attributes: Mapping[str, Any] | None = None,
        stage: str | None = None,
    ) -> Scope:
        """Work that no input message started (the end of a replay, a timer): an INTERNAL
        span ``name``, a root unless ``parent`` is given."""
        if not self.enabled:
            return _OFF
        if not self.telemetry.traces:
            return Scope(self, stage=stage or name)
        return Scope(
            self,
            name,
            SpanKind.INTERNAL,
            _under(parent) if parent is not None else Context(),
            dict(attributes or {}),
            stage=stage or name,
        )

    def outputs(
        self,
        records: Sequence[Emitted | DeadLetter],
        *,
        topics: Mapping[str, str] | None = None,
        send: Send | None = None,
    ) -> list[Headers]:
        """:meth:`Scope.outputs` of the current scope (in this task or thread); outside any,
        in a scope of its own named ``emit``."""
        scope = _CURRENT.get()
        if scope is not None:
            return scope.outputs(records, topics=topics, send=send)
        with self.scope("emit") as own:
            return own.outputs(records, topics=topics, send=send)

    # -- memory ----------------------------------------------------------------------------

    def _remember(self, ident: str, span_context: SpanContext) -> None:
        recent = self._recent
        recent[ident] = span_context
        recent.move_to_end(ident)
        if len(recent) > self._remember_max:
            recent.popitem(last=False)

    def _link_changed(self, link: str, level: int, span_context: SpanContext) -> None:
        if level == HEALTHY:
            self._link_health.pop(link, None)
        else:
            self._link_health[link] = level
        bad = self._link_health
        for service in self._services_by_link.get(link, ()):
            new = service_health(self._requires[service], bad)
            old = self._service_level.get(service, HEALTHY)
            if new == old:
                continue
            if new == HEALTHY:
                self._service_level.pop(service, None)
                self._service_bad.pop(service, None)
                self._service_last.pop(service, None)
                continue
            self._service_level[service] = new
            self._service_last[service] = span_context
            if old == HEALTHY:
                self._service_bad[service] = span_context

    # -- outputs ---------------------------------------------------------------------------

    def _outputs(
        self,
        scope: Scope,
        records: Sequence[Emitted | DeadLetter],
        topics: Mapping[str, str],
        send: Send | None,
    ) -> list[Headers]:
        instruments = self._instruments
        traces = self.telemetry.traces
        result: list[Headers] = []
        open_: dict[str, _Transition] = {}
        try:
            for record in records:
                topic = _topic(record, topics)
                if isinstance(record, DeadLetter):
                    code = record.reason.split(":", 1)[0]
                    instruments.deadletters.add(1, {"reason": code})
                    headers = self._dead(scope, record, code, topic, send) if traces else None
                elif record.topic == TRANSITIONS:
                    data = record.event["data"]
                    instruments.transitions.add(1, {"from": data["from"], "to": data["to"]})
                    headers = (
                        self._transition(scope, record, topic, open_, send) if traces else None
                    )
                else:
                    if record.topic == COMMANDS:
                        instruments.commands.add(1, {"command.type": record.event["type"]})
                    headers = self._command(scope, record, topic, open_, send) if traces else None
                if headers is None:
                    headers = _NO_HEADERS
                    if send is not None:
                        send(record, topic, headers)
                result.append(headers)
        finally:
            for transition in open_.values():
                transition.span.end()
        return result

    def _send(
        self,
        parent: SpanContext,
        record: Emitted | DeadLetter,
        topic: str,
        attributes: dict[str, Any],
        links: Sequence[Link],
        send: Send | None,
    ) -> Headers:
        attributes[msg.MESSAGING_SYSTEM] = _KAFKA
        attributes[msg.MESSAGING_OPERATION_TYPE] = _SEND
        attributes[msg.MESSAGING_OPERATION_NAME] = "send"
        attributes[msg.MESSAGING_DESTINATION_NAME] = topic
        if record.key is not None:
            attributes[msg.MESSAGING_KAFKA_MESSAGE_KEY] = record.key
        span = self.telemetry.tracer.start_span(
            f"send {topic}", _under(parent), SpanKind.PRODUCER, attributes, links
        )
        headers = inject(span)
        try:
            if send is not None:
                send(record, topic, headers)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.set_attribute(ERROR_TYPE, type(exc).__qualname__)
            raise
        finally:
            span.end()
        return headers

    @staticmethod
    def _emitted_attributes(event: Mapping[str, Any]) -> dict[str, Any]:
        data = event["data"]
        attrs: dict[str, Any] = {
            msg.MESSAGING_MESSAGE_ID: event["id"],
            "failover.event.time": event["time"],
            # An audit record has no incident of its own: its service and site are the
            # event's subject and source.
            "failover.service": data["service"] if "service" in data else event.get("subject"),
            "failover.site": data["site"]
            if "site" in data
            else str(event.get("source", "")).rsplit("/", 1)[-1],
        }
        if "incident" in data:
            attrs["failover.incident"] = data["incident"]
        return attrs

    def _transition(
        self,
        scope: Scope,
        record: Emitted,
        topic: str,
        open_: dict[str, _Transition],
        send: Send | None,
    ) -> Headers:
        event = record.event
        data = event["data"]
        service, incident = data["service"], data["incident"]
        source, dest, reason = data["from"], data["to"], data["reason"]
        current = scope.context
        cause = self._recent.get(data["cause"])
        health_driven = not reason.startswith(_NOT_HEALTH)
        opening = source == "online"
        parent: SpanContext | None = None
        if opening and health_driven:
            parent = self._service_bad.get(service)
        if parent is None:
            parent = cause if cause is not None else current
        links: list[Link] = []

        def link(span_context: SpanContext | None, role: str) -> None:
            if (
                span_context is not None
                and span_context.is_valid
                and not _same(span_context, parent)
                and not any(_same(span_context, known.context) for known in links)
            ):
                links.append(Link(span_context, {"failover.link.role": role}))

        link(current, "trigger")
        link(cause, "cause")
        link(scope.span.get_span_context(), "batch")  # a batch's span, when not the trigger
        if health_driven:
            link(self._service_last.get(service), "health")
        if not opening:
            link(self._incidents.get(incident), "incident")
        attrs = {
            "failover.service": service,
            "failover.site": data["site"],
            "failover.incident": incident,
            "failover.from": source,
            "failover.to": dest,
            "failover.reason": reason,
            "failover.cause": data["cause"],
            "failover.event.time": event["time"],
            "failover.event.id": event["id"],
        }
        if "operator" in data:
            attrs["failover.operator.actor"] = data["operator"]["actor"]
            attrs["failover.operator.role"] = data["operator"]["role"]
        span = self.telemetry.tracer.start_span(
            f"transition {source}→{dest}", _under(parent), SpanKind.INTERNAL, attrs, links
        )
        span_context = span.get_span_context()
        if opening:
            self._incidents[incident] = span_context
        if dest == "online":
            self._incidents.pop(incident, None)
        previous = open_.pop(service, None)
        if previous is not None:
            previous.span.end()
        open_[service] = _Transition(span, event["time"], incident)
        send_attrs = self._emitted_attributes(event)
        send_attrs["failover.command.type"] = event["type"]
        return self._send(span_context, record, topic, send_attrs, (), send)

    def _command(
        self,
        scope: Scope,
        record: Emitted,
        topic: str,
        open_: dict[str, _Transition],
        send: Send | None,
    ) -> Headers:
        event = record.event
        data = event["data"]
        incident = data.get("incident", NO_INCIDENT)
        template = data.get("template")
        standalone = (
            incident == NO_INCIDENT
            or event["type"] == "failover.escalate.v1"
            or (isinstance(template, str) and template.startswith(_STANDALONE_TEMPLATES))
        )
        owner = open_.get(record.key)
        links: list[Link] = []
        if (
            not standalone
            and owner is not None
            and owner.time == event["time"]
            and owner.incident == incident
        ):
            parent = owner.span.get_span_context()
        else:
            parent = scope.context
            root = self._incidents.get(incident)
            if root is not None:
                links.append(Link(root, {"failover.link.role": "incident"}))
            processing = scope.span.get_span_context()
            if processing.is_valid and not _same(processing, parent):
                links.append(Link(processing, {"failover.link.role": "batch"}))
        attrs = self._emitted_attributes(event)
        attrs["failover.command.type"] = event["type"]
        if "audience" in data:
            attrs["failover.notice.audience"] = data["audience"]
            attrs["failover.notice.template"] = data["template"]
        return self._send(parent, record, topic, attrs, links, send)

    def _dead(
        self, scope: Scope, record: DeadLetter, code: str, topic: str, send: Send | None
    ) -> Headers:
        current = scope.context
        event = _parse(record.raw)
        ident = _str(event.get("id")) if event is not None else None
        origin = self._recent.get(ident) if ident is not None else None
        reason = record.reason[:512]
        if scope.span.is_recording():
            scope._refused(reason, code, origin is None or _same(origin, current))
        attrs: dict[str, Any] = {"failover.deadletter.reason": reason, ERROR_TYPE: code}
        if ident is not None:
            attrs["failover.event.id"] = ident
        if isinstance(record.origin, Origin):
            attrs["failover.origin"] = f"{record.origin.file}:{record.origin.line}"
        elif isinstance(record.origin, str):
            attrs["failover.origin"] = record.origin
        if event is not None and isinstance(event.get("time"), str):
            attrs["failover.event.time"] = event["time"]
        return self._send(origin or current, record, topic, attrs, (), send)


# -- replay --------------------------------------------------------------------------------------


class _ObservedEngine(Engine):
    """The core's :class:`~workflows.engine.Engine`, reporting stage 1's health changes (which
    the Kafka path sees on its repartition topic) to the scope being processed."""

    scope: Scope | None = None

    def _fan_out(self, change: HealthChange) -> None:
        if self.scope is not None:
            self.scope.health(change.link, change.health, change.reason)
        super()._fan_out(change)


def traced_replay(
    topology: Topology,
    lines: Iterable[tuple[int, bytes] | tuple[int, bytes, HeadersIn]],
    file: str,
    tracing: Tracing,
    *,
    state: bool = False,
    on_health: Callable[[HealthChange], None] | None = None,
) -> Iterator[tuple[Emitted | DeadLetter, Headers]]:
    """:func:`workflows.replay.replay`, traced: the same records in the same order, each with
    the headers its send span injected. ``state``: the read model's records too.

    ``lines`` are numbered lines, optionally with the headers the message came with (to
    replay a capture of a topic, or to test propagation). Each line is processed in a
    ``process {topic}`` span named after its input topic (:data:`INPUT_TOPICS`; the file name
    for a line that is not an input event); the end of input in a ``replay finish`` span.
    """
    if not tracing.enabled:
        plain = ((item[0], item[1]) for item in lines)
        for record in replay(topology, plain, file, state=state, on_health=on_health):
            yield record, _NO_HEADERS
        return
    engine = _ObservedEngine(topology, state_records=state, on_health=on_health)
    for item in lines:
        number, raw, *rest = item
        headers = rest[0] if rest else None
        event = _parse(raw)
        type_ = event.get("type") if event is not None else None
        destination = INPUT_TOPICS.get(type_, file) if isinstance(type_, str) else file
        with tracing.input(
            event, raw, headers, destination=destination,
            attributes={"failover.origin": f"{file}:{number}"},
        ) as scope:  # fmt: skip
            engine.scope = scope
            try:
                engine.feed(raw, None, Origin(file, number))
            finally:
                engine.scope = None
            if not engine.out:
                continue
            records = engine.drain()
            traced = list(zip(records, scope.outputs(records), strict=True))
        yield from traced
    with tracing.scope("replay finish", attributes={"failover.origin": file}) as scope:
        engine.scope = scope
        engine.finish()
        engine.scope = None
        records = engine.drain()
        traced = list(zip(records, scope.outputs(records), strict=True))
    yield from traced
