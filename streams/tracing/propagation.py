"""W3C trace context in and out of messages: read from Kafka headers or a CloudEvent's
``traceparent`` extension attribute (:func:`extract`), written as headers (:func:`inject`).

Nothing here knows a transport: the helpers take headers as pairs or a mapping, and events as
decoded JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import orjson
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from workflows.engine import MAX_EVENT_BYTES

__all__ = ["NO_HEADERS", "Headers", "HeadersIn", "extract", "inject"]

#: Headers to send a record with: Kafka style, ``(name, bytes)`` pairs.
Headers = Sequence[tuple[str, bytes]]
#: Headers as received: a mapping or ``(name, value)`` pairs, values bytes or str.
HeadersIn = Mapping[str, bytes | str] | Iterable[tuple[str, bytes | str]] | None

_PROPAGATOR: Final = TraceContextTextMapPropagator()
NO_HEADERS: Final[Headers] = ()


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


def remote(headers: HeadersIn, event: Mapping[str, Any] | None) -> SpanContext | None:
    """The valid span context a message came with, if any (:func:`extract`)."""
    span_context = trace.get_current_span(extract(headers, event)).get_span_context()
    return span_context if span_context.is_valid else None


def inject(span: Span | SpanContext) -> Headers:
    """``traceparent`` (and ``tracestate``) headers carrying ``span``'s context."""
    if isinstance(span, SpanContext):
        span = NonRecordingSpan(span)
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span, Context()))
    return [(name, value.encode("latin-1")) for name, value in carrier.items()]


def under(span_context: SpanContext) -> Context:
    """A context whose current span is ``span_context``: to start a child of it."""
    return trace.set_span_in_context(NonRecordingSpan(span_context), Context())


def same(a: SpanContext | None, b: SpanContext | None) -> bool:
    """Whether ``a`` and ``b`` are the same span."""
    return a is not None and b is not None and (a.trace_id, a.span_id) == (b.trace_id, b.span_id)


def merged(headers: Sequence[tuple[str, bytes]], ours: Headers) -> list[tuple[str, bytes]]:
    """``headers`` with ``ours`` (trace context) appended, and any trace context they had
    before left out: a record carries one ``traceparent``, the engine's."""
    kept = [(n, v) for n, v in headers if n.lower() not in ("traceparent", "tracestate")]
    kept.extend(ours)
    return kept


def parse(raw: bytes) -> dict[str, Any] | None:
    """``raw`` as a JSON object, or None (too large to be an input, not JSON, not an object):
    what a span can tell of a message the core may refuse."""
    if len(raw) > MAX_EVENT_BYTES:
        return None
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def text(value: object) -> str | None:
    """``value`` if it is a string."""
    return value if isinstance(value, str) else None
