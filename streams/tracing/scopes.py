"""Scopes: the processing of one input (or one batch) as a context manager around its span,
through which stage 1's health changes and the outputs are reported (:class:`Scope`); the
no-op scope of telemetry that is off.

A scope reports to a :class:`Recorder`, which :class:`~streams.tracing.tracer.Tracing` is:
this module describes what it needs of the tracer and imports none of it, so the tracer can
build on scopes without either module depending on the other in turn.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, Final, NamedTuple, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.semconv._incubating.attributes import messaging_attributes as msg
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanContext, SpanKind
from opentelemetry.trace.status import Status, StatusCode

from streams.telemetry import Telemetry
from streams.tracing.propagation import NO_HEADERS, Headers, HeadersIn, inject
from workflows.health import HEALTH_NAMES
from workflows.records import DEADLETTER, DeadLetter, Emitted

__all__ = [
    "OFF",
    "Message",
    "Recorder",
    "Scope",
    "Send",
    "consumer_attributes",
    "current",
    "topic_of",
]

#: Called with each record, its topic and its headers, inside the record's send span.
Send = Callable[[Emitted | DeadLetter, str, Headers], object]

KAFKA: Final = msg.MessagingSystemValues.KAFKA.value
_PROCESS: Final = msg.MessagingOperationTypeValues.PROCESS.value

_CURRENT: ContextVar[Scope | None] = ContextVar("failover_tracing_scope", default=None)


class Recorder(Protocol):
    """What a :class:`Scope` reports to: :class:`~streams.tracing.tracer.Tracing`. Its
    methods are the tracing package's own, called only by scopes (and the Kafka batch)."""

    @property
    def telemetry(self) -> Telemetry:
        """Where spans and metrics go."""

    def _remember(self, ident: str, span_context: SpanContext) -> None:
        """The input ``ident`` was processed under ``span_context`` (a later transition may
        name it as its cause)."""

    def _link_changed(self, link: str, level: int, span_context: SpanContext) -> None:
        """Link ``link``'s health changed to ``level`` while processing ``span_context``."""

    def _outputs(
        self,
        scope: Scope,
        records: Sequence[Emitted | DeadLetter],
        topics: Mapping[str, str],
        send: Send | None,
    ) -> list[Headers]:
        """Trace the records ``scope`` produced (:meth:`Scope.outputs`)."""


def current() -> Scope | None:
    """The scope being processed in this task or thread, if any."""
    return _CURRENT.get()


class Message(NamedTuple):
    """One message of a batch (:meth:`~streams.tracing.tracer.Tracing.batch`)."""

    raw: bytes
    headers: HeadersIn = None
    event: Mapping[str, Any] | None = None
    key: str | None = None
    offset: int | None = None


def consumer_attributes(
    destination: str, partition: int | None, group: str | None
) -> dict[str, Any]:
    """The messaging attributes of a ``process`` span, one message's or a batch's."""
    attrs: dict[str, Any] = {
        msg.MESSAGING_SYSTEM: KAFKA,
        msg.MESSAGING_OPERATION_TYPE: _PROCESS,
        msg.MESSAGING_OPERATION_NAME: "process",
        msg.MESSAGING_DESTINATION_NAME: destination,
    }
    if partition is not None:
        attrs[msg.MESSAGING_DESTINATION_PARTITION_ID] = str(partition)
    if group is not None:
        attrs[msg.MESSAGING_CONSUMER_GROUP_NAME] = group
    return attrs


def health_event(span: Span, link: str, level: int, reason: str) -> None:
    """Record a link's health change as an event on ``span``."""
    if span.is_recording():
        span.add_event("failover.link.health", {
            "failover.link": link,
            "failover.health": HEALTH_NAMES[level],
            "failover.health.reason": reason,
        })  # fmt: skip


def topic_of(record: Emitted | DeadLetter, topics: Mapping[str, str]) -> str:
    """The topic ``record`` goes to: its logical name, or the name ``topics`` maps it to."""
    logical = DEADLETTER if isinstance(record, DeadLetter) else record.topic
    return topics.get(logical, logical)


class Scope:
    """The processing of one input message (or one batch): a context manager around the
    processing span, through which health changes and outputs are reported.

    ``messaging``: the input came through a messaging system (Kafka) and its outputs go out
    through one, so the spans carry the messaging conventions' attributes; false for replay,
    which reads a file and writes records (``emit`` spans, no ``messaging.*``).
    """

    __slots__ = (
        "_attributes", "_count", "_ids", "_kind", "_links", "_name", "_parent", "_scope_token",
        "_stage", "_start", "_token", "_tracing", "messaging", "span",
    )  # fmt: skip

    def __init__(
        self,
        tracing: Recorder | None,
        name: str = "",
        kind: SpanKind = SpanKind.INTERNAL,
        parent: Context | None = None,
        attributes: dict[str, Any] | None = None,
        links: Sequence[Link] | None = None,
        ids: Sequence[str] = (),
        stage: str = "process",
        *,
        messaging: bool = True,
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
        #: Whether the input and outputs go through Kafka (see above).
        self.messaging = messaging
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
        health_event(self.span, link, level, reason)
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
        return inject(self.context) if self.context.is_valid else NO_HEADERS

    def _refused(self, reason: str, code: str, this_input: bool) -> None:
        """A dead letter is sent from this scope; ``this_input``: of the input it processes."""
        span = self.span
        span.add_event("failover.deadletter", {
            "failover.deadletter.reason": reason, ERROR_TYPE: code,
        })  # fmt: skip
        if this_input:
            span.set_attribute(ERROR_TYPE, code)
            span.set_status(Status(StatusCode.ERROR, reason))


class Off(Scope):
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
                send(record, topic_of(record, topics or {}), NO_HEADERS)
        return [NO_HEADERS] * len(records)

    def inject(self) -> Headers:
        return NO_HEADERS


#: The one scope of telemetry that is off.
OFF: Final = Off(None)
