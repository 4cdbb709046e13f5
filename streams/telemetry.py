"""OpenTelemetry providers for the engine, configured from the standard ``OTEL_*`` variables.

:func:`configure` returns a :class:`Telemetry`: a tracer, a meter, the engine's instruments,
``force_flush`` and ``shutdown``. Providers are *not* installed globally: whoever needs the
tracer gets it from the :class:`Telemetry` object (see :mod:`streams.tracing`), so a test can
configure twice, and a replay inside a worker cannot disturb the worker's export. A process
that wants the globals too (the Kafka worker, for third-party instrumentation) calls
:func:`install_globals` once.

What the environment says (https://opentelemetry.io/docs/specs/otel/configuration/):

- ``OTEL_SDK_DISABLED=true``: everything off, whatever else is set (even ``console=True``).
- ``OTEL_TRACES_EXPORTER``: a comma-separated list of ``otlp``, ``console``, ``none``. Unset,
  it is ``otlp`` when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
  is set, and ``none`` otherwise: telemetry is off unless configured. (The specification's
  default is ``otlp``; a replay on a laptop should not try to reach a collector that is not
  there.) ``OTEL_METRICS_EXPORTER`` likewise, with ``..._METRICS_ENDPOINT``.
- OTLP is HTTP/protobuf (``opentelemetry.exporter.otlp.proto.http``); the exporters read the
  endpoint, headers, timeout, compression and certificate variables themselves. A protocol
  other than ``http/protobuf`` is reported and ignored.
- ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` name the resource
  (``service.name`` defaults to the ``service_name`` argument).
- ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (e.g. ``parentbased_traceidratio``),
  ``OTEL_BSP_*`` and ``OTEL_METRIC_EXPORT_INTERVAL`` are read by the SDK itself.
- ``console`` and ``otlp`` console output goes to **stderr**: stdout carries the engine's
  JSONL in ``failover replay``.

``configure(console=True)`` (``failover replay --trace``, ``failover demo --trace``) adds
:class:`StoryConsoleExporter`: one line per span, grouped per processing span, in the order
things happened; processing spans that changed nothing are counted, not printed (an OTLP
backend still receives every span).

When traces and metrics are both off, :class:`Telemetry` holds the API's no-op tracer and
meter, :attr:`Telemetry.enabled` is false, and :class:`streams.tracing.Tracing` skips its work
altogether: near zero cost. The SDK is not even imported.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Final, cast

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

from streams.printable import printable

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = [
    "INSTRUMENTATION_SCOPE",
    "STAGE_BUCKETS",
    "Instruments",
    "StoryConsoleExporter",
    "Telemetry",
    "configure",
    "install_globals",
    "install_propagator",
]

_log = logging.getLogger(__name__)

#: The instrumentation scope of the engine's spans and metrics.
INSTRUMENTATION_SCOPE: Final = "failover.streams"

#: Bucket boundaries of ``failover.stage.duration``, in seconds: a probe reading takes a few
#: microseconds in stage 1, a tick that moves many services some milliseconds.
STAGE_BUCKETS: Final = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip

_EXPORTERS: Final = frozenset({"otlp", "console", "none"})
#: Input types whose processing spans the story leaves out when they changed nothing.
_QUIET_TYPES: Final = ("link.status.v1", "clock.tick.v1")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("failover-engine")
    except Exception:  # pragma: no cover - an uninstalled checkout
        return "0"


@dataclass(frozen=True)
class Instruments:
    """The engine's metrics. Attributes are few and bounded (no ids, no free text)."""

    #: Input messages, by ``event.type`` (an input type, or ``invalid``).
    events_in: metrics.Counter
    #: Dead letters, by ``reason``: the reason code (the text before the first ``:``).
    deadletters: metrics.Counter
    #: Service transitions, by ``from`` and ``to``.
    transitions: metrics.Counter
    #: Commands sent, by ``command.type`` (the CloudEvent type).
    commands: metrics.Counter
    #: Time spent per stage, in seconds, by ``stage``.
    stage_duration: metrics.Histogram
    #: Consumer lag in messages, by topic, partition and group; fed through
    #: :meth:`Telemetry.set_consumer_lag` by the Kafka path.
    consumer_lag: metrics.ObservableGauge
    #: Full (generation 2) garbage collections, in seconds: the whole process stops for them.
    gc_pause: metrics.Histogram


class Telemetry:
    """A tracer, a meter and the instruments, over explicit providers (never the globals).

    Pass SDK providers to build one by hand (tests: an in-memory exporter); pass none for
    telemetry that is off. :func:`configure` builds one from the environment.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        *,
        console: StoryConsoleExporter | None = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        #: The story printer, when ``configure(console=True)`` added one.
        self.console = console
        #: Spans are recorded (a sampler may still drop some).
        self.traces = tracer_provider is not None
        #: Metrics are recorded.
        self.metrics = meter_provider is not None
        #: Anything at all is recorded; when false, instrumentation should skip its work.
        self.enabled = self.traces or self.metrics
        version = _version()
        self.tracer: trace.Tracer = (
            tracer_provider.get_tracer(INSTRUMENTATION_SCOPE, version)
            if tracer_provider is not None
            else trace.NoOpTracer()
        )
        self.meter: metrics.Meter = (
            meter_provider.get_meter(INSTRUMENTATION_SCOPE, version)
            if meter_provider is not None
            else metrics.NoOpMeter(INSTRUMENTATION_SCOPE, version)
        )
        self._lag: dict[tuple[str, int, str], int] = {}
        self._lag_lock = threading.Lock()
        meter = self.meter
        self.instruments = Instruments(
            events_in=meter.create_counter(
                "failover.events.in", "{event}", "Input messages, by event.type."
            ),
            deadletters=meter.create_counter(
                "failover.deadletters", "{message}", "Dead letters, by reason code."
            ),
            transitions=meter.create_counter(
                "failover.transitions", "{transition}", "Service transitions, by from and to."
            ),
            commands=meter.create_counter(
                "failover.commands", "{command}", "Commands sent, by command.type."
            ),
            stage_duration=meter.create_histogram(
                "failover.stage.duration",
                "s",
                "Time spent in a stage of the engine, by stage (stage1, stage2, commit...).",
                explicit_bucket_boundaries_advisory=STAGE_BUCKETS,
            ),
            consumer_lag=meter.create_observable_gauge(
                "failover.consumer.lag",
                [self._observe_lag],
                "{message}",
                "Messages behind the end of the partition, per consumer group.",
            ),
            gc_pause=meter.create_histogram(
                "failover.gc.pause",
                "s",
                "Full garbage collections: every input in flight waits for them.",
                explicit_bucket_boundaries_advisory=STAGE_BUCKETS,
            ),
        )
        self._gc_started: float | None = None
        self._closed = False

    # -- metrics helpers -------------------------------------------------------------------

    def set_consumer_lag(self, topic: str, partition: int, group: str, lag: int) -> None:
        """Report a partition's lag (high watermark minus committed offset)."""
        with self._lag_lock:
            self._lag[topic, partition, group] = lag

    def forget_consumer_lag(self, topic: str, partition: int, group: str) -> None:
        """Stop reporting a partition's lag (it was revoked from this worker)."""
        with self._lag_lock:
            self._lag.pop((topic, partition, group), None)

    def _observe_lag(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lag_lock:
            lags = list(self._lag.items())
        return [
            Observation(lag, {
                "messaging.destination.name": topic,
                "messaging.destination.partition.id": str(partition),
                "messaging.consumer.group.name": group,
            })
            for (topic, partition, group), lag in lags
        ]  # fmt: skip

    def record_stage(self, stage: str, seconds: float) -> None:
        """Record ``seconds`` spent in ``stage`` (``process``, ``stage1``, ``stage2``...)."""
        if self.metrics:
            self.instruments.stage_duration.record(seconds, {"stage": stage})

    @contextmanager
    def stage(self, stage: str) -> Iterator[None]:
        """Time the block into ``failover.stage.duration``."""
        if not self.metrics:
            yield
            return
        start = time.perf_counter()
        try:
            yield
        finally:
            self.record_stage(stage, time.perf_counter() - start)

    def watch_gc(self) -> Callable[[], None]:
        """Record every full collection's pause into ``failover.gc.pause`` (the worker's heap
        is frozen after each rebalance, streams.app.settle_heap: this shows whether that
        holds). Returns the function that stops it."""
        if not self.metrics:
            return lambda: None
        callback = self._gc_phase
        gc.callbacks.append(callback)

        def stop() -> None:
            if callback in gc.callbacks:
                gc.callbacks.remove(callback)

        return stop

    def _gc_phase(self, phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started is not None:
            self.instruments.gc_pause.record(time.perf_counter() - self._gc_started)
            self._gc_started = None

    # -- lifecycle -------------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export everything recorded so far; true if every exporter succeeded in time."""
        ok = True
        if self.tracer_provider is not None:
            ok = self.tracer_provider.force_flush(timeout_millis) and ok
        if self.meter_provider is not None:
            ok = self.meter_provider.force_flush(timeout_millis) and ok
        return ok

    def shutdown(self) -> None:
        """Flush and stop the exporters. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


# -- configuration from the environment ------------------------------------------------------


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def _exporters(signal: str) -> list[str]:
    """``OTEL_{signal}_EXPORTER`` as a list, with this module's default when unset."""
    value = _env(f"OTEL_{signal}_EXPORTER").lower()
    if not value:
        configured = _env("OTEL_EXPORTER_OTLP_ENDPOINT") or _env(
            f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"
        )
        return ["otlp"] if configured else []
    names = []
    for raw in value.split(","):
        name = raw.strip()
        if name not in _EXPORTERS:
            _log.warning("OTEL_%s_EXPORTER: %r is not supported (use otlp, console or none); "
                         "ignored", signal, name)  # fmt: skip
        elif name != "none" and name not in names:
            names.append(name)
    return names


def _check_protocol(signal: str) -> None:
    protocol = _env(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or _env("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol and protocol != "http/protobuf":
        _log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported: exporting %s over "
                     "http/protobuf", protocol, signal.lower())  # fmt: skip


def _resource(service_name: str) -> Resource:
    from opentelemetry.sdk.resources import (
        SERVICE_NAME,
        SERVICE_VERSION,
        OTELResourceDetector,
        Resource,
    )

    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; ours are only
    # defaults for what they leave unsaid.
    said = OTELResourceDetector().detect().attributes
    defaults = {SERVICE_NAME: service_name, SERVICE_VERSION: _version()}
    return Resource.create({key: value for key, value in defaults.items() if key not in said})


def configure(service_name: str = "failover-engine", *, console: bool = False) -> Telemetry:
    """Build a :class:`Telemetry` from the ``OTEL_*`` environment (see the module doc).

    Args:
        service_name: ``service.name`` unless ``OTEL_SERVICE_NAME`` or
            ``OTEL_RESOURCE_ATTRIBUTES`` names the service.
        console: also print spans, one line each, to stderr (:class:`StoryConsoleExporter`).
    """
    if _env("OTEL_SDK_DISABLED").lower() == "true":
        return Telemetry()
    span_exporters = _exporters("TRACES")
    metric_exporters = _exporters("METRICS")
    if not span_exporters and not metric_exporters and not console:
        return Telemetry()

    resource = _resource(service_name)
    tracer_provider = None
    story = None
    if span_exporters or console:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )

        # No sampler given: the SDK reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG.
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        if "otlp" in span_exporters:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            _check_protocol("TRACES")
            tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        if "console" in span_exporters:
            tracer_provider.add_span_processor(
                SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr))
            )
        if console:
            story = StoryConsoleExporter(sys.stderr)
            tracer_provider.add_span_processor(SimpleSpanProcessor(cast("SpanExporter", story)))

    meter_provider = None
    if metric_exporters:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            ConsoleMetricExporter,
            PeriodicExportingMetricReader,
        )

        readers: list[MetricReader] = []
        if "otlp" in metric_exporters:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )

            _check_protocol("METRICS")
            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        if "console" in metric_exporters:
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(out=sys.stderr)))
        meter_provider = MeterProvider(
            metric_readers=readers, resource=resource, shutdown_on_exit=False
        )
    return Telemetry(tracer_provider, meter_provider, console=story)


def install_propagator() -> None:
    """Make W3C trace context the global propagator (``opentelemetry.propagate``).

    :mod:`streams.tracing` does not need it (it uses its own W3C propagator); third-party
    instrumentation that injects or extracts through the globals does.
    """
    from opentelemetry.propagate import set_global_textmap
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    set_global_textmap(TraceContextTextMapPropagator())


def install_globals(telemetry: Telemetry) -> None:
    """For a long-lived process (the worker): W3C propagation, and ``telemetry``'s providers
    as the global ones. The API lets the globals be set once per process; call it once."""
    install_propagator()
    if telemetry.tracer_provider is not None:
        trace.set_tracer_provider(telemetry.tracer_provider)
    if telemetry.meter_provider is not None:
        metrics.set_meter_provider(telemetry.meter_provider)


# -- the story on the console -------------------------------------------------------------


def _span_id(value: int) -> str:
    return f"{value:016x}"


def _context(span: ReadableSpan) -> trace.SpanContext:
    context = span.get_span_context()
    assert context is not None  # an SDK span always has one
    return context


class StoryConsoleExporter:
    """Prints spans one line each, grouped per processing span, in the order they started.

    A group is flushed when its root (a span without a parent among the buffered ones, i.e.
    the processing span) ends. Processing spans that produced nothing, changed no link and
    dead-lettered nothing are counted and left out; :meth:`shutdown` prints the count.

    Implements :class:`opentelemetry.sdk.trace.export.SpanExporter` (duck-typed, so that this
    module does not import the SDK until it is configured).
    """

    def __init__(self, out: IO[str] | None = None, *, quiet: bool = True) -> None:
        self.out = out if out is not None else sys.stderr
        self.quiet = quiet
        self.hidden = 0
        self._pending: list[ReadableSpan] = []
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from opentelemetry.sdk.trace.export import SpanExportResult

        with self._lock:
            for span in spans:
                self._pending.append(span)
                if _is_scope(span):
                    self._flush()
        return SpanExportResult.SUCCESS

    def _flush(self) -> None:
        group = sorted(self._pending, key=lambda s: s.start_time or 0)
        self._pending.clear()
        depth: dict[int, int] = {}
        lines = []
        for span in group:
            parent = span.parent
            if _is_scope(span):
                level = 0
            elif parent is not None and parent.span_id in depth:
                level = depth[parent.span_id] + 1
            else:
                level = 1  # parented outside the group: a transition whose story began earlier
            depth[_context(span).span_id] = level
            if self.quiet and _is_quiet(span):
                self.hidden += 1
                continue
            lines.append(_story_line(span, level))
        if lines:
            self.out.write("".join(lines))
            self.out.flush()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        with self._lock:
            if self._pending:
                self._flush()
        return True

    def shutdown(self) -> None:
        self.force_flush()
        if self.hidden:
            self.out.write(f"trace: {self.hidden} processing spans that changed nothing "
                           "are not shown\n")  # fmt: skip
            self.out.flush()
            self.hidden = 0


def _is_scope(span: ReadableSpan) -> bool:
    """A processing span (:mod:`streams.tracing` counts its outputs on it when it ends)."""
    return "failover.outputs" in (span.attributes or {})


def _is_quiet(span: ReadableSpan) -> bool:
    """A processing span of a probe reading or a tick that changed nothing: most of them.
    An operator's or an office's message is always shown: a transition may name it later."""
    attributes = span.attributes or {}
    return (
        attributes.get("failover.outputs") == 0
        and not span.events
        and attributes.get("failover.event.type", "clock.tick.v1") in _QUIET_TYPES
    )


_SHOWN: Final[dict[str, tuple[str, ...]]] = {
    "process": ("failover.event.type", "failover.subject", "failover.outputs"),
    "transition": ("failover.service", "failover.incident", "failover.reason", "failover.cause"),
    "send": (
        "messaging.kafka.message.key",
        "failover.command.type",
        "messaging.message.id",
        "failover.deadletter.reason",
    ),
    # Replay's spans (streams/tracing/replay.py): the same story, no messaging system.
    "replay": ("failover.event.type", "failover.subject", "failover.outputs"),
    "emit": (
        "failover.key",
        "failover.command.type",
        "failover.event.id",
        "failover.deadletter.reason",
    ),
}


def _story_line(span: ReadableSpan, level: int) -> str:
    attributes = span.attributes or {}
    ctx = _context(span)
    parent = span.parent
    if parent is None:
        origin = "root"
    else:
        origin = f"parent {_span_id(parent.span_id)}{' (remote)' if parent.is_remote else ''}"
    head = span.name.split(" ", 1)[0]
    fields = " ".join(
        f"{key.rsplit('.', 1)[-1]}={attributes[key]!s}"
        for key in _SHOWN.get(head, ())
        if key in attributes
    )
    extra: list[str] = []
    for event in span.events:
        ea: Any = event.attributes or {}
        if event.name == "failover.link.health":
            extra.append(f"link {ea.get('failover.link')} → {ea.get('failover.health')} "
                         f"({ea.get('failover.health.reason')})")  # fmt: skip
        elif event.name == "failover.deadletter":
            extra.append(f"dead letter: {ea.get('failover.deadletter.reason')}")
    for link in span.links:
        role = (link.attributes or {}).get("failover.link.role", "link")
        extra.append(f"{role}→{_span_id(link.context.span_id)}")
    when = str(attributes.get("failover.event.time", "-"))
    indent = "  " * level
    tail = f"  [{'; '.join(extra)}]" if extra else ""
    line = (f"{when}  {indent}{span.name}  {fields}{tail}  "
            f"trace {ctx.trace_id:032x} span {_span_id(ctx.span_id)} {origin}")  # fmt: skip
    return printable(line, None) + "\n"  # subjects, reasons, keys: from inputs, shown inert
