"""The tracer: the engine's spans and metrics (:class:`Tracing`), and the incident story it
keeps in memory to choose each transition's parent and links (see :mod:`streams.tracing`).

Independent of the transport: it opens scopes for inputs that came through Kafka
(:meth:`Tracing.input`, :meth:`Tracing.batch`) or from a replayed file (:meth:`Tracing.line`),
and traces the core's outputs (:class:`~workflows.records.Emitted`,
:class:`~workflows.records.DeadLetter`). The batch path of the Kafka worker is
:mod:`streams.tracing.kafka`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

from opentelemetry.context import Context
from opentelemetry.semconv._incubating.attributes import messaging_attributes as msg
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import Link, Span, SpanContext, SpanKind
from opentelemetry.trace.status import Status, StatusCode

from streams.telemetry import Telemetry
from streams.tracing.propagation import (
    NO_HEADERS,
    Headers,
    HeadersIn,
    extract,
    inject,
    parse,
    remote,
    same,
    text,
    under,
)
from streams.tracing.scopes import (
    KAFKA,
    OFF,
    Message,
    Scope,
    Send,
    consumer_attributes,
    topic_of,
)
from streams.tracing.scopes import current as current_scope
from workflows.health import HEALTHY, service_health
from workflows.inputs import INPUT_TYPES
from workflows.records import COMMANDS, TRANSITIONS, DeadLetter, Emitted
from workflows.replay import Origin
from workflows.service import NO_INCIDENT
from workflows.topology import Topology

__all__ = ["Tracing"]

_SEND: Final = msg.MessagingOperationTypeValues.SEND.value
_INVALID: Final = "invalid"
#: Reasons of transitions that an operator or an office caused, not the links' health.
_NOT_HEALTH: Final = ("operator-", "reconciled")
#: Commands that never belong to a transition, even when they follow one.
_STANDALONE_TEMPLATES: Final = ("escalate-", "pinned-", "unpinned-")


class Transition(NamedTuple):
    """A transition's span, open while the commands of the same drain that belong to it
    are sent."""

    span: Span
    time: str
    incident: str


def _event_attributes(attrs: dict[str, Any], event: Mapping[str, Any] | None) -> None:
    """The CloudEvent's own attributes on an input's span: id, type, time, source, subject."""
    if event is None:
        return
    ident = text(event.get("id"))
    if ident is not None:
        attrs["failover.event.id"] = ident
    for name in ("type", "time", "source"):
        value = text(event.get(name))
        if value is not None:
            attrs[f"failover.event.{name}"] = value
    subject = text(event.get("subject"))
    if subject is not None:
        attrs["failover.subject"] = subject


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
    ) -> None:
        self.telemetry = telemetry
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
            return OFF
        if event is None:
            event = parse(raw)
        self._count_input(event)
        if not self.telemetry.traces:
            return Scope(self, stage=stage)
        ident = text(event.get("id")) if event is not None else None
        attrs = consumer_attributes(destination, partition, group)
        attrs[msg.MESSAGING_MESSAGE_BODY_SIZE] = len(raw)
        if offset is not None:
            attrs[msg.MESSAGING_KAFKA_OFFSET] = offset
        if key is not None:
            attrs[msg.MESSAGING_KAFKA_MESSAGE_KEY] = key
        if ident is not None:
            attrs[msg.MESSAGING_MESSAGE_ID] = ident
        _event_attributes(attrs, event)
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

    def line(
        self,
        event: Mapping[str, Any] | None,
        raw: bytes,
        headers: HeadersIn = None,
        *,
        file: str,
        number: int,
    ) -> Scope:
        """The replay of line ``number`` of ``file`` (``event`` as for :meth:`input`): an
        INTERNAL span ``replay {type}`` (``replay {file}`` for a line that is no input
        event), no messaging attributes (nothing came through Kafka), the W3C context the
        line came with (``headers``, or the CloudEvent's attribute) its parent. Its outputs
        are ``emit`` spans (:meth:`Scope.outputs`)."""
        if not self.enabled:
            return OFF
        if event is None:
            event = parse(raw)
        type_ = self._count_input(event)
        if not self.telemetry.traces:
            return Scope(self, messaging=False)
        ident = text(event.get("id")) if event is not None else None
        attrs: dict[str, Any] = {"failover.input.size": len(raw)}
        _event_attributes(attrs, event)
        attrs["failover.origin"] = f"{file}:{number}"
        return Scope(
            self,
            f"replay {type_ if type_ != _INVALID else file}",
            SpanKind.INTERNAL,
            extract(headers, event),
            attrs,
            ids=(ident,) if ident is not None else (),
            messaging=False,
        )

    def _count_input(self, event: Mapping[str, Any] | None) -> str:
        """Count an input in ``failover.events.in``; return its type (``invalid`` for any
        but the input types)."""
        type_ = event.get("type") if event is not None else None
        counted = type_ if isinstance(type_, str) and type_ in INPUT_TYPES else _INVALID
        self._instruments.events_in.add(1, {"event.type": counted})
        return counted

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
            return OFF
        events = [m.event if m.event is not None else parse(m.raw) for m in messages]
        for event in events:
            self._count_input(event)
        if not self.telemetry.traces:
            return Scope(self, stage=stage)
        links = []
        ids = []
        for message, event in zip(messages, events, strict=True):
            ident = text(event.get("id")) if event is not None else None
            if ident is not None:
                ids.append(ident)
            came_with = remote(message.headers, event)
            if came_with is not None:
                link_attrs: dict[str, Any] = {}
                if ident is not None:
                    link_attrs[msg.MESSAGING_MESSAGE_ID] = ident
                if message.offset is not None:
                    link_attrs[msg.MESSAGING_KAFKA_OFFSET] = message.offset
                links.append(Link(came_with, link_attrs))
        attrs = consumer_attributes(destination, partition, group)
        attrs[msg.MESSAGING_BATCH_MESSAGE_COUNT] = len(messages)
        return Scope(
            self, f"process {destination}", SpanKind.CONSUMER, Context(), attrs, links, ids, stage
        )

    def count_inputs(self, types: Mapping[str, int]) -> None:
        """Add to ``failover.events.in``: ``types`` maps an input type (anything else counts
        as ``invalid``) to a number of messages."""
        if not self.telemetry.metrics:
            return
        for type_, n in types.items():
            if n:
                self._instruments.events_in.add(
                    n, {"event.type": type_ if type_ in INPUT_TYPES else _INVALID}
                )

    def scope(
        self,
        name: str,
        *,
        parent: SpanContext | None = None,
        attributes: Mapping[str, Any] | None = None,
        stage: str | None = None,
        messaging: bool = True,
    ) -> Scope:
        """Work that no input message started (the end of a replay, a timer): an INTERNAL
        span ``name``, a root unless ``parent`` is given. ``messaging``: its outputs go
        through Kafka (``send`` spans), else they are ``emit`` spans (replay)."""
        if not self.enabled:
            return OFF
        if not self.telemetry.traces:
            return Scope(self, stage=stage or name, messaging=messaging)
        return Scope(
            self,
            name,
            SpanKind.INTERNAL,
            under(parent) if parent is not None else Context(),
            dict(attributes or {}),
            stage=stage or name,
            messaging=messaging,
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
        scope = current_scope()
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
        open_: dict[str, Transition] = {}
        try:
            for record in records:
                topic = topic_of(record, topics)
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
                    headers = NO_HEADERS
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
        messaging: bool,
    ) -> Headers:
        """The span of one output: ``send {topic}`` (PRODUCER) on Kafka, ``emit {topic}``
        (INTERNAL, no messaging attributes) in replay, which only writes it out."""
        if messaging:
            attributes[msg.MESSAGING_SYSTEM] = KAFKA
            attributes[msg.MESSAGING_OPERATION_TYPE] = _SEND
            attributes[msg.MESSAGING_OPERATION_NAME] = "send"
            attributes[msg.MESSAGING_DESTINATION_NAME] = topic
            if record.key is not None:
                attributes[msg.MESSAGING_KAFKA_MESSAGE_KEY] = record.key
            name, kind = f"send {topic}", SpanKind.PRODUCER
        else:
            attributes["failover.topic"] = topic
            if record.key is not None:
                attributes["failover.key"] = record.key
            name, kind = f"emit {topic}", SpanKind.INTERNAL
        span = self.telemetry.tracer.start_span(name, under(parent), kind, attributes, links)
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
    def _emitted_attributes(event: Mapping[str, Any], messaging: bool) -> dict[str, Any]:
        data = event["data"]
        attrs: dict[str, Any] = {
            msg.MESSAGING_MESSAGE_ID if messaging else "failover.event.id": event["id"],
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
        open_: dict[str, Transition],
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
                and not same(span_context, parent)
                and not any(same(span_context, known.context) for known in links)
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
            f"transition {source}→{dest}", under(parent), SpanKind.INTERNAL, attrs, links
        )
        span_context = span.get_span_context()
        if opening:
            self._incidents[incident] = span_context
        if dest == "online":
            self._incidents.pop(incident, None)
        previous = open_.pop(service, None)
        if previous is not None:
            previous.span.end()
        open_[service] = Transition(span, event["time"], incident)
        send_attrs = self._emitted_attributes(event, scope.messaging)
        send_attrs["failover.command.type"] = event["type"]
        return self._send(span_context, record, topic, send_attrs, (), send, scope.messaging)

    def _command(
        self,
        scope: Scope,
        record: Emitted,
        topic: str,
        open_: dict[str, Transition],
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
            if processing.is_valid and not same(processing, parent):
                links.append(Link(processing, {"failover.link.role": "batch"}))
        attrs = self._emitted_attributes(event, scope.messaging)
        attrs["failover.command.type"] = event["type"]
        if "audience" in data:
            attrs["failover.notice.audience"] = data["audience"]
            attrs["failover.notice.template"] = data["template"]
        return self._send(parent, record, topic, attrs, links, send, scope.messaging)

    def _dead(
        self, scope: Scope, record: DeadLetter, code: str, topic: str, send: Send | None
    ) -> Headers:
        current = scope.context
        event = parse(record.raw)
        ident = text(event.get("id")) if event is not None else None
        origin = self._recent.get(ident) if ident is not None else None
        reason = record.reason[:512]
        if scope.span.is_recording():
            scope._refused(reason, code, origin is None or same(origin, current))
        attrs: dict[str, Any] = {"failover.deadletter.reason": reason, ERROR_TYPE: code}
        if ident is not None:
            attrs["failover.event.id"] = ident
        if isinstance(record.origin, Origin):
            attrs["failover.origin"] = f"{record.origin.file}:{record.origin.line}"
        elif isinstance(record.origin, str):
            attrs["failover.origin"] = record.origin
        if event is not None and isinstance(event.get("time"), str):
            attrs["failover.event.time"] = event["time"]
        return self._send(origin or current, record, topic, attrs, (), send, scope.messaging)
