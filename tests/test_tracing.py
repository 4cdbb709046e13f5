"""Traces of the causal chain (``streams.tracing``) over the Ambon demo, with an in-memory
exporter: probe context → replay span per line → transition → emit spans, the headers they
inject, a downstream consumer continuing the trace, the incident's links, the metrics, and
the JSONL that tracing must not change. Replay reads a file, not Kafka: none of its spans
claims a messaging system."""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from typer.testing import CliRunner

from streams.cli import app
from streams.telemetry import StoryConsoleExporter, Telemetry, configure
from streams.tracing import Headers, Message, Tracing, extract, inject, traced_replay
from workflows.records import COMMANDS, TRANSITIONS, DeadLetter, Emitted
from workflows.replay import encode, read_lines, replay
from workflows.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "streams" / "demo"
TOPOLOGY = DEMO / "ambon.yaml"
EVENTS = DEMO / "ambon-events.jsonl"

# Probes that trace: the fibre link's probe puts W3C context in the Kafka headers; the 4G
# probe writes it into the CloudEvent (the distributed-tracing extension attribute).
HEADER_LINK = "telkom-sto-pattimura"
EXTENSION_LINK = "backup-4g"


@pytest.fixture(autouse=True)
def _no_otel_env(no_otel_env: None) -> None:
    """Tests decide the telemetry configuration (conftest's ``no_otel_env``)."""


def probe_context(number: int) -> tuple[int, int]:
    """The (trace id, span id) of the probe's own span for input line ``number``."""
    return 0x4F7E0000_00000000_00000000_00000000 + number, 0x0A0B0000_00000000 + number


def traceparent(number: int, sampled: bool = True) -> str:
    trace_id, span_id = probe_context(number)
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def traced_lines() -> list[tuple[int, bytes, Headers | None]]:
    """The demo's input, as the tracing probes would send it."""
    lines: list[tuple[int, bytes, Headers | None]] = []
    for number, raw in read_lines(EVENTS):
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            lines.append((number, raw, None))
            continue
        subject = event.get("subject") if isinstance(event, dict) else None
        if event.get("type") == "link.status.v1" and subject == HEADER_LINK:
            lines.append((number, raw, [("traceparent", traceparent(number).encode())]))
        elif event.get("type") == "link.status.v1" and subject == EXTENSION_LINK:
            event["traceparent"] = traceparent(number)
            lines.append((number, orjson.dumps(event), None))
        else:
            lines.append((number, raw, None))
    return lines


def memory_telemetry() -> tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]:
    spans = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    return Telemetry(provider, meters), spans, reader


@dataclass
class Run:
    topology: Topology
    lines: list[tuple[int, bytes, Headers | None]]
    outputs: list[tuple[Emitted | DeadLetter, Headers]]
    spans: Sequence[ReadableSpan]
    reader: InMemoryMetricReader
    telemetry: Telemetry

    def __post_init__(self) -> None:
        self.by_id = {span_id(span): span for span in self.spans}

    def one(self, **attributes: Any) -> ReadableSpan:
        found = self.find(**attributes)
        assert len(found) == 1, (attributes, [s.name for s in found])
        return found[0]

    def find(self, **attributes: Any) -> list[ReadableSpan]:
        wanted = {key.replace("__", "."): value for key, value in attributes.items()}
        return [
            span
            for span in self.spans
            if all(attrs(span).get(key) == value for key, value in wanted.items())
        ]

    def parent(self, span: ReadableSpan) -> ReadableSpan:
        assert span.parent is not None, span.name
        return self.by_id[span.parent.span_id]

    def children(self, span: ReadableSpan) -> list[ReadableSpan]:
        wanted = span_id(span)
        return [s for s in self.spans if s.parent is not None and s.parent.span_id == wanted]

    def headers_of(self, message_id: str) -> Headers:
        for record, headers in self.outputs:
            if isinstance(record, Emitted) and record.event["id"] == message_id:
                return headers
        raise AssertionError(message_id)


def span_id(span: ReadableSpan) -> int:
    context = span.get_span_context()
    assert context is not None
    return context.span_id


def trace_id(span: ReadableSpan) -> int:
    context = span.get_span_context()
    assert context is not None
    return context.trace_id


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def link_roles(span: ReadableSpan) -> dict[str, int]:
    return {
        str((link.attributes or {})["failover.link.role"]): link.context.span_id
        for link in span.links
    }


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    topology = Topology.load(TOPOLOGY)
    telemetry, exporter, reader = memory_telemetry()
    lines = traced_lines()
    outputs = list(traced_replay(topology, lines, EVENTS.name, Tracing(telemetry, topology)))
    yield Run(topology, lines, outputs, exporter.get_finished_spans(), reader, telemetry)
    telemetry.shutdown()


def line_of(run: Run, event_id: str) -> int:
    for number, raw, _ in run.lines:
        if f'"id":"{event_id}"'.encode() in raw:
            return number
    raise AssertionError(event_id)


def transition(run: Run, service: str, source: str, dest: str, n: int = 0) -> ReadableSpan:
    found = run.find(failover__service=service, failover__from=source, failover__to=dest)
    found = [span for span in found if span.name.startswith("transition ")]
    found.sort(key=lambda span: attrs(span)["failover.event.time"])
    return found[n]


# -- the chain ------------------------------------------------------------------------------------


def check_chain(run: Run, service: str, reading: str, link: str, health: str) -> ReadableSpan:
    """probe (remote) → replay the reading → transition leaving online → emit spans."""
    opening = transition(run, service, "online", "degraded")
    assert opening.name == "transition online→degraded"
    assert opening.kind == SpanKind.INTERNAL

    process = run.parent(opening)
    assert process.name == "replay link.status.v1"
    assert process.kind == SpanKind.INTERNAL
    assert attrs(process)["failover.event.id"] == reading
    assert not [key for key in attrs(process) if key.startswith("messaging.")]
    [change] = [e for e in process.events if e.name == "failover.link.health"]
    assert dict(change.attributes or {}) == {
        "failover.link": link,
        "failover.health": health,
        "failover.health.reason": "probe",
    }

    probe_trace, probe_span = probe_context(line_of(run, reading))
    assert process.parent is not None
    assert process.parent.is_remote
    assert process.parent.span_id == probe_span
    assert trace_id(process) == trace_id(opening) == probe_trace

    # The tick that completed the condition is a link, not the parent.
    tick = run.by_id[link_roles(opening)["trigger"]]
    assert attrs(tick)["failover.event.type"] == "clock.tick.v1"
    assert attrs(tick)["failover.event.id"] == attrs(opening)["failover.cause"]

    # Every record that transition made is sent in a span under it, in the same trace.
    made = [
        record
        for record, _ in run.outputs
        if isinstance(record, Emitted)
        and record.key == service
        and record.event["time"] == attrs(opening)["failover.event.time"]
    ]
    sends = run.children(opening)
    assert {attrs(s)["failover.event.id"] for s in sends} == {r.event["id"] for r in made}
    assert len(sends) == len(made) >= 3  # the transition record and its notices
    for send in sends:
        assert send.kind == SpanKind.INTERNAL
        assert trace_id(send) == probe_trace
        a = attrs(send)
        topic = a["failover.topic"]
        assert send.name == f"emit {topic}"
        assert topic in (COMMANDS, TRANSITIONS)
        assert not [key for key in a if key.startswith("messaging.")]
        assert a["failover.key"] == service
        assert a["failover.incident"] == attrs(opening)["failover.incident"]
        headers = dict(run.headers_of(a["failover.event.id"]))
        assert headers["traceparent"] == f"00-{probe_trace:032x}-{span_id(send):016x}-01".encode()
    return opening


def test_chain_from_a_probe_that_traces_in_kafka_headers(run: Run) -> None:
    opening = check_chain(
        run, "ektp", "probe/telkom-sto-pattimura/2019-02-04T23:10:05Z", HEADER_LINK, "impaired"
    )
    expected = {
        "failover.service": "ektp",
        "failover.site": "disdukcapil-ambon",
        "failover.incident": "ektp@20190204T231200Z",
        "failover.from": "online",
        "failover.to": "degraded",
        "failover.reason": "impaired",
        "failover.cause": "tick/2019-02-04T23:12:00Z",
        "failover.event.time": "2019-02-04T23:12:00Z",
    }
    assert {key: attrs(opening)[key] for key in expected} == expected


def test_chain_from_a_probe_that_traces_in_the_cloudevent(run: Run) -> None:
    # surat-pindah has a redundant path: its health went bad only when the 4G link went
    # down too, so that reading, not the fibre's, is where its incident's story begins.
    check_chain(run, "surat-pindah", "probe/backup-4g/2019-02-04T23:12:10Z", EXTENSION_LINK, "down")


def test_processing_spans_carry_the_event_and_where_it_came_from(run: Run) -> None:
    events = {}
    for number, raw, _ in run.lines:
        try:
            events[number] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            events[number] = None
    process = [s for s in run.spans if s.name.startswith("replay ") and s.name != "replay finish"]
    assert len(process) == len(run.lines)
    for span in process:
        a = attrs(span)
        assert span.kind == SpanKind.INTERNAL
        number = int(a["failover.origin"].rsplit(":", 1)[1])
        event = events[number]
        if event is None:
            assert span.name == f"replay {EVENTS.name}"
            assert a["error.type"] == "not-json"
            assert span.status.status_code == StatusCode.ERROR
            continue
        assert a["failover.event.id"] == event["id"]
        assert a["failover.event.type"] == event["type"]
        assert a["failover.event.time"] == event["time"]
        assert a.get("failover.subject") == event.get("subject")
        assert a["failover.input.size"] == len(run.lines[number - 1][1])
    traced = [s for s in process if s.parent is not None]
    assert all(s.parent is not None and s.parent.is_remote for s in traced)
    assert {attrs(s)["failover.subject"] for s in traced} == {HEADER_LINK, EXTENSION_LINK}


def test_event_time_is_on_every_span_of_the_story(run: Run) -> None:
    for span in run.spans:
        if span.name.startswith(("transition ", "emit failover-commands", "emit service-")):
            a = attrs(span)
            assert a["failover.event.time"].startswith("2019-02-0"), span.name


def test_commands_outside_a_transition_hang_from_the_processing_span(run: Run) -> None:
    escalations = run.find(failover__command__type="failover.escalate.v1")
    assert escalations
    for send in escalations:
        parent = run.parent(send)
        assert parent.name == "replay clock.tick.v1"
        assert attrs(parent)["failover.event.type"] == "clock.tick.v1"
        root = run.by_id[link_roles(send)["incident"]]
        assert attrs(root)["failover.incident"] == attrs(send)["failover.incident"]
        assert attrs(root)["failover.from"] == "online"
    pins = run.find(failover__notice__template="pinned-oncall")
    assert len(pins) == 1
    assert run.parent(pins[0]).name.startswith("replay ")


def test_later_transitions_link_to_the_first_of_their_incident(run: Run) -> None:
    by_incident: dict[str, list[ReadableSpan]] = defaultdict(list)
    for span in run.spans:
        if span.name.startswith("transition "):
            by_incident[attrs(span)["failover.incident"]].append(span)
    assert len(by_incident) == 5  # akta-lahir twice, ektp, legalisasi, surat-pindah
    for incident, spans in by_incident.items():
        spans.sort(key=lambda s: (attrs(s)["failover.event.time"], s.start_time or 0))
        first, *later = spans
        assert attrs(first)["failover.from"] == "online", incident
        assert "incident" not in link_roles(first)
        for span in later:
            assert link_roles(span)["incident"] == span_id(first), (incident, span.name)
    # The incident's story closes: its last transition goes back online.
    assert attrs(by_incident["ektp@20190204T231200Z"][-1])["failover.to"] == "online"


def test_an_operators_transition_is_a_child_of_the_override(run: Run) -> None:
    forced = transition(run, "ektp", "degraded", "manual")
    override = run.parent(forced)
    assert attrs(override)["failover.event.type"] == "operator.override.v1"
    assert attrs(override)["failover.event.id"] == attrs(forced)["failover.cause"]
    assert override.name == "replay operator.override.v1"
    # It was applied when the clock passed it: that tick is the trigger link.
    trigger = run.by_id[link_roles(forced)["trigger"]]
    assert attrs(trigger)["failover.event.type"] == "clock.tick.v1"
    hold = [s for s in run.children(forced) if "queue.hold" in attrs(s)["failover.command.type"]]
    assert len(hold) == 1


def test_a_health_driven_transition_links_the_reading_that_made_it(run: Run) -> None:
    manual = transition(run, "akta-lahir", "degraded", "manual")
    assert attrs(manual)["failover.reason"] == "down-sustained"
    reading = run.by_id[link_roles(manual)["health"]]
    assert attrs(reading)["failover.event.id"] == "probe/telkom-sto-pattimura/2019-02-04T23:18:05Z"


def test_dead_letters_are_sent_in_spans_under_the_refused_input(run: Run) -> None:
    dead = run.find(**{"failover__topic": "failover-deadletter"})
    assert sorted(attrs(s)["error.type"] for s in dead) == [
        "not-json",
        "schema",
        "unknown-service",
    ]
    for send in dead:
        assert send.name == "emit failover-deadletter"
        parent = run.parent(send)
        assert parent.name.startswith("replay ")
        assert parent.status.status_code == StatusCode.ERROR
        assert attrs(parent)["error.type"] == attrs(send)["error.type"]
        assert [e.name for e in parent.events] == ["failover.deadletter"]


def test_replay_claims_no_messaging_system(run: Run) -> None:
    """Replay reads a file and writes records: no span of it says Kafka, sends or consumes
    (a service map would otherwise show Kafka edges that do not exist)."""
    assert run.spans
    for span in run.spans:
        assert span.kind == SpanKind.INTERNAL, span.name
        assert not span.name.startswith(("send ", "process ")), span.name
        assert not [key for key in attrs(span) if key.startswith("messaging.")], span.name


# -- downstream ----------------------------------------------------------------------------------


def test_a_downstream_consumer_continues_the_trace(run: Run) -> None:
    hold = run.one(failover__command__type="failover.queue.hold.v1", failover__service="ektp")
    headers = run.headers_of(attrs(hold)["failover.event.id"])

    # A consumer elsewhere, with nothing of ours but the headers and the W3C propagator.
    downstream = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(downstream))
    carrier = {name: value.decode() for name, value in headers}
    context = TraceContextTextMapPropagator().extract(carrier)
    tracer = provider.get_tracer("notice-sender")
    with tracer.start_as_current_span("process failover-commands", context, SpanKind.CONSUMER):
        pass
    # ...and one using this module's extract, as the engine's own consumers would.
    with tracer.start_as_current_span("process again", extract(headers), SpanKind.CONSUMER):
        pass
    for span in downstream.get_finished_spans():
        assert span.parent is not None
        assert trace_id(span) == trace_id(hold)
        assert span.parent.span_id == span_id(hold)
    provider.shutdown()


# -- nothing changes the output --------------------------------------------------------------------


def test_tracing_does_not_change_the_jsonl(run: Run) -> None:
    plain = [encode(r) for r in replay(run.topology, read_lines(EVENTS), EVENTS.name)]
    assert [encode(record) for record, _ in run.outputs] == plain
    off = Tracing(Telemetry(), run.topology)
    assert not off.enabled
    untraced = list(traced_replay(run.topology, run.lines, EVENTS.name, off))
    assert [encode(record) for record, _ in untraced] == plain
    assert all(headers == () for _, headers in untraced)
    assert all(headers for _, headers in run.outputs)


def test_replay_trace_prints_spans_and_keeps_stdout_identical(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["replay", str(TOPOLOGY), str(EVENTS), "--quiet"]
    plain = runner.invoke(app, args)
    traced = runner.invoke(app, [*args, "--trace"])
    assert plain.exit_code == traced.exit_code == 0, traced.stderr
    assert traced.stdout_bytes == plain.stdout_bytes
    assert plain.stderr == ""
    lines = traced.stderr.splitlines()
    assert any("transition online→degraded" in line and "service=ektp" in line for line in lines)
    assert any("emit failover-commands" in line and "failover.queue.hold.v1" in line
               for line in lines)  # fmt: skip
    assert "processing spans that changed nothing are not shown" in lines[-1]

    demo = runner.invoke(app, ["demo", "--trace", "--out", str(tmp_path / "demo.jsonl")])
    assert demo.exit_code == 0, demo.stderr
    assert (tmp_path / "demo.jsonl").read_bytes() == plain.stdout_bytes
    assert "transition online→degraded" in demo.stderr
    quiet_demo = runner.invoke(app, ["demo", "--out", str(tmp_path / "quiet.jsonl")])
    assert "transition online→degraded" not in quiet_demo.output


# -- metrics --------------------------------------------------------------------------------------


def sums(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, Any], ...], float]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[tuple[tuple[str, Any], ...], float] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    key = tuple(sorted((point.attributes or {}).items()))
                    if isinstance(point, HistogramDataPoint):
                        found[key] = point.count
                    elif isinstance(point, NumberDataPoint):
                        found[key] = point.value
    return found


def test_metrics_count_what_went_through(run: Run) -> None:
    types: Counter[str] = Counter()
    for _, raw, _ in run.lines:
        try:
            types[orjson.loads(raw)["type"]] += 1
        except orjson.JSONDecodeError:
            types["invalid"] += 1
    assert sums(run.reader, "failover.events.in") == {
        (("event.type", type_),): count for type_, count in types.items()
    }
    assert sums(run.reader, "failover.deadletters") == {
        (("reason", "schema"),): 1,
        (("reason", "unknown-service"),): 1,
        (("reason", "not-json"),): 1,
    }
    transitions: Counter[tuple[str, str]] = Counter()
    commands: Counter[str] = Counter()
    for record, _ in run.outputs:
        if isinstance(record, Emitted) and record.topic == TRANSITIONS:
            transitions[record.event["data"]["from"], record.event["data"]["to"]] += 1
        elif isinstance(record, Emitted) and record.topic == COMMANDS:
            commands[record.event["type"]] += 1
    assert sums(run.reader, "failover.transitions") == {
        (("from", a), ("to", b)): n for (a, b), n in transitions.items()
    }
    assert sums(run.reader, "failover.commands") == {
        (("command.type", t),): n for t, n in commands.items()
    }
    stages = sums(run.reader, "failover.stage.duration")
    assert stages[(("stage", "process"),)] == len(run.lines)
    assert stages[(("stage", "replay finish"),)] == 1


def test_consumer_lag_is_observed() -> None:
    telemetry, _, reader = memory_telemetry()
    telemetry.set_consumer_lag("link-status", 3, "failover", 42)
    telemetry.set_consumer_lag("link-status", 4, "failover", 0)
    telemetry.forget_consumer_lag("link-status", 4, "failover")
    assert sums(reader, "failover.consumer.lag") == {
        (
            ("messaging.consumer.group.name", "failover"),
            ("messaging.destination.name", "link-status"),
            ("messaging.destination.partition.id", "3"),
        ): 42
    }
    telemetry.shutdown()


# -- the API the Kafka path uses ------------------------------------------------------------------


EVENT = {
    "specversion": "1.0",
    "id": "probe/x/1",
    "source": "/probes/test",
    "type": "link.status.v1",
    "time": "2019-02-05T00:00:00Z",
    "subject": HEADER_LINK,
    "data": {"status": "up", "latency_ms": 1.0, "loss_pct": 0.0},
}


def test_input_with_kafka_coordinates() -> None:
    telemetry, exporter, _ = memory_telemetry()
    tracing = Tracing(telemetry)
    raw = orjson.dumps(EVENT)
    headers = {"TraceParent": traceparent(7).encode(), "tracestate": b"probe=1"}
    with tracing.input(
        EVENT, raw, headers, destination="link-status", partition=3, offset=99,
        group="failover", key=HEADER_LINK,
    ) as scope:  # fmt: skip
        hop = dict(scope.inject())
    [span] = exporter.get_finished_spans()
    a = attrs(span)
    assert span.name == "process link-status"
    assert a["messaging.destination.partition.id"] == "3"
    assert a["messaging.kafka.offset"] == 99
    assert a["messaging.consumer.group.name"] == "failover"
    assert a["messaging.kafka.message.key"] == HEADER_LINK
    assert a["failover.outputs"] == 0
    assert span.parent is not None
    assert span.parent.span_id == probe_context(7)[1]
    assert hop["tracestate"] == b"probe=1"  # the probe's vendor state travels on
    assert hop["traceparent"].decode().split("-")[2] == f"{span_id(span):016x}"
    telemetry.shutdown()


def test_batch_links_each_message() -> None:
    telemetry, exporter, _ = memory_telemetry()
    tracing = Tracing(telemetry)
    with_extension = dict(EVENT, id="probe/x/3", traceparent=traceparent(3))
    messages = [
        Message(orjson.dumps(EVENT), [("traceparent", traceparent(1).encode())], offset=10),
        Message(orjson.dumps(dict(EVENT, id="probe/x/2")), offset=11),
        Message(orjson.dumps(with_extension), offset=12),
    ]
    command = Emitted(COMMANDS, "ektp", {
        "id": "c1", "type": "failover.escalate.v1", "time": "2019-02-05T00:00:00Z",
        "data": {"service": "ektp", "site": "s", "incident": "none", "to": "x", "reason": "r"},
    })  # fmt: skip
    with tracing.batch(messages, destination="link-status", partition=0, group="g") as scope:
        [headers] = tracing.outputs([command], topics={COMMANDS: "prod-commands"})
    spans = {s.name: s for s in exporter.get_finished_spans()}
    batch = spans["process link-status"]
    assert batch.parent is None
    assert attrs(batch)["messaging.batch.message_count"] == 3
    assert [(link.context.span_id, dict(link.attributes or {})) for link in batch.links] == [
        (probe_context(1)[1], {"messaging.message.id": "probe/x/1", "messaging.kafka.offset": 10}),
        (probe_context(3)[1], {"messaging.message.id": "probe/x/3", "messaging.kafka.offset": 12}),
    ]
    send = spans["send prod-commands"]
    assert run_parent_id(send) == span_id(batch) == scope.context.span_id
    assert dict(headers)["traceparent"].decode().split("-")[2] == f"{span_id(send):016x}"
    telemetry.shutdown()


def run_parent_id(span: ReadableSpan) -> int:
    assert span.parent is not None
    return span.parent.span_id


def test_send_callback_runs_inside_the_send_span() -> None:
    telemetry, exporter, _ = memory_telemetry()
    tracing = Tracing(telemetry)
    command = Emitted(COMMANDS, "ektp", {
        "id": "c1", "type": "failover.notice.v1", "time": "2019-02-05T00:00:00Z",
        "data": {"service": "ektp", "site": "s", "incident": "none", "audience": "oncall",
                 "template": "pinned-oncall", "text": {}},
    })  # fmt: skip
    sent: list[tuple[str, Headers, int]] = []

    def send(record: Emitted | DeadLetter, topic: str, headers: Headers) -> None:
        sent.append((topic, headers, trace.get_current_span().get_span_context().span_id))
        raise ConnectionError("broker gone")

    with pytest.raises(ConnectionError), tracing.input(EVENT, b"{}", destination="t") as scope:
        scope.outputs([command], send=send)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["send failover-commands"].status.status_code == StatusCode.ERROR
    assert spans["process t"].status.status_code == StatusCode.ERROR
    assert attrs(spans["process t"])["error.type"] == "ConnectionError"
    [(topic, headers, _)] = sent
    assert topic == "failover-commands"
    assert dict(headers)["traceparent"].decode().split("-")[2] == (
        f"{span_id(spans['send failover-commands']):016x}"
    )
    telemetry.shutdown()


def test_a_probes_sampling_decision_is_kept() -> None:
    telemetry, exporter, _ = memory_telemetry()
    tracing = Tracing(telemetry)
    unsampled = [("traceparent", traceparent(5, sampled=False).encode())]
    command = Emitted(COMMANDS, "ektp", {
        "id": "c1", "type": "failover.escalate.v1", "time": "2019-02-05T00:00:00Z",
        "data": {"service": "ektp", "site": "s", "incident": "none", "to": "x", "reason": "r"},
    })  # fmt: skip
    with tracing.input(EVENT, b"{}", unsampled, destination="link-status") as scope:
        [headers] = scope.outputs([command])
    assert exporter.get_finished_spans() == ()
    version, trace_hex, _, flags = dict(headers)["traceparent"].decode().split("-")
    assert (version, int(trace_hex, 16), flags) == ("00", probe_context(5)[0], "00")
    telemetry.shutdown()


def test_inject_and_extract_round_trip() -> None:
    context = extract([("traceparent", traceparent(9).encode())])
    span_context = trace.get_current_span(context).get_span_context()
    assert (span_context.trace_id, span_context.span_id) == probe_context(9)
    assert dict(inject(span_context))["traceparent"] == traceparent(9).encode()
    assert not trace.get_current_span(extract(None)).get_span_context().is_valid
    assert not trace.get_current_span(extract({"traceparent": b"garbage"})).get_span_context(
    ).is_valid  # fmt: skip


# -- configuration --------------------------------------------------------------------------------


def test_off_unless_configured() -> None:
    telemetry = configure()
    assert not telemetry.enabled
    tracing = Tracing(telemetry)
    scope = tracing.input(EVENT, b"{}", destination="link-status")
    with scope as entered:
        assert entered.outputs([DeadLetter(None, "x: y", b"", None)]) == [()]
        assert entered.inject() == ()
    assert tracing.input(None, b"", destination="x") is scope  # one shared no-op
    assert telemetry.force_flush()
    telemetry.shutdown()


def test_sdk_disabled_wins_over_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert not configure(console=True).enabled


def test_console_exporters_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "failover-test")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
    for _ in range(2):  # configuring twice is fine: nothing global is touched
        telemetry = configure()
        assert telemetry.traces
        assert not telemetry.metrics
        with Tracing(telemetry).input(EVENT, orjson.dumps(EVENT), destination="link-status"):
            pass
        telemetry.shutdown()
        out, err = capsys.readouterr()
        assert out == ""
        span = orjson.loads(err)
        assert span["name"] == "process link-status"
        assert span["resource"]["attributes"]["service.name"] == "failover-test"
        assert span["resource"]["attributes"]["deployment.environment.name"] == "test"


def test_default_service_name_and_sampler_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    telemetry = configure(console=True)
    assert telemetry.tracer_provider is not None
    assert telemetry.tracer_provider.resource.attributes["service.name"] == "failover-engine"
    assert telemetry.tracer_provider.sampler.get_description() == "AlwaysOffSampler"
    telemetry.shutdown()


def test_story_console_groups_spans_per_processing_span() -> None:
    out = io.StringIO()
    story = StoryConsoleExporter(out)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(story))  # type: ignore[arg-type]
    telemetry = Telemetry(provider)
    tracing = Tracing(telemetry)
    for n in range(3):  # quiet readings
        with tracing.input(dict(EVENT, id=f"q{n}"), b"{}", destination="link-status"):
            pass
    command = Emitted(COMMANDS, "ektp", {
        "id": "c1", "type": "failover.escalate.v1", "time": "2019-02-05T00:00:00Z",
        "data": {"service": "ektp", "site": "s", "incident": "none", "to": "x", "reason": "r"},
    })  # fmt: skip
    with tracing.input(EVENT, b"{}", destination="link-status") as scope:
        scope.outputs([command])
    telemetry.shutdown()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("2019-02-05T00:00:00Z  process link-status")
    assert lines[1].startswith("2019-02-05T00:00:00Z    send failover-commands")
    assert lines[2] == "trace: 3 processing spans that changed nothing are not shown"


def test_a_traces_endpoint_alone_turns_on_traces_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/v1/traces")
    telemetry = configure()
    assert telemetry.traces
    assert not telemetry.metrics
    telemetry.shutdown()  # nothing recorded: nothing sent
