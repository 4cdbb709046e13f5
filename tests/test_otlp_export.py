"""Export over OTLP/HTTP, configured only by ``OTEL_*`` variables, to a receiver this test
starts (tests/otlp.py: an ``http.server`` on 127.0.0.1, port 0, in a thread), which decodes
the protobuf with ``opentelemetry-proto``: the causal chain is there, ids and parents intact."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from harness.otlp import Receiver, serve, values
from streams.telemetry import configure
from streams.tracing import Headers, Tracing, extract, traced_replay
from workflows.records import Emitted
from workflows.replay import read_lines
from workflows.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "streams" / "demo"
PROBE_TRACE = 0x0123456789ABCDEF0123456789ABCDEF
PROBE_SPAN = 0x1122334455667788
# The fibre link's first bad reading, and the tick after which ektp degrades.
BAD_READING = "probe/telkom-sto-pattimura/2019-02-04T23:10:05Z"
LAST = b'"time":"2019-02-04T23:12:00Z"'


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch, no_otel_env: None) -> Iterator[Receiver]:
    received = Receiver()
    with serve(received) as endpoint:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")  # only when flushed
        yield received


def demo_start() -> list[tuple[int, bytes, Headers | None]]:
    """The demo up to the tick at which ektp degrades; the bad reading carries a probe's
    W3C context in its Kafka headers."""
    lines: list[tuple[int, bytes, Headers | None]] = []
    header = f"00-{PROBE_TRACE:032x}-{PROBE_SPAN:016x}-01".encode()
    for number, raw in read_lines(DEMO / "ambon-events.jsonl"):
        traced = BAD_READING.encode() in raw
        lines.append((number, raw, [("traceparent", header)] if traced else None))
        if LAST in raw and b"clock.tick.v1" in raw:
            return lines
    raise AssertionError("the demo changed: no tick at 23:12")


def test_the_chain_arrives_over_otlp_http(receiver: Receiver) -> None:
    telemetry = configure()
    assert telemetry.traces
    assert telemetry.metrics
    topology = Topology.load(DEMO / "ambon.yaml")
    tracing = Tracing(telemetry, topology)
    lines = demo_start()
    outputs = list(traced_replay(topology, lines, "ambon-events.jsonl", tracing))
    assert telemetry.force_flush(10_000)

    # The flush waits for the receiver's answers, and the receiver stores a request before
    # it answers; wait on the condition anyway, with a deadline, rather than trust timing.
    # A replay span per line, the finish, and 3 transitions with 3 emits each.
    expected = len(lines) + 1 + 3 * (1 + 3)
    receiver.wait(lambda: len(receiver.spans()) >= expected)
    receiver.wait(lambda: "failover.events.in" in receiver.metric_names())
    telemetry.shutdown()

    spans = receiver.spans()
    assert len(spans) == expected
    resource = spans[0][0]
    assert resource["service.name"] == "failover-engine"
    assert resource["deployment.environment.name"] == "test"
    by_id = {span.span_id: span for _, span in spans}

    [reading] = [
        s for _, s in spans if values(s.attributes).get("failover.event.id") == BAD_READING
    ]
    assert reading.name == "replay link.status.v1"
    assert reading.kind == Span.SPAN_KIND_INTERNAL
    assert reading.trace_id == PROBE_TRACE.to_bytes(16, "big")
    assert reading.parent_span_id == PROBE_SPAN.to_bytes(8, "big")
    assert values(reading.attributes)["failover.event.time"] == "2019-02-04T23:10:05Z"
    assert "messaging.system" not in values(reading.attributes)  # replay reads a file
    assert [event.name for event in reading.events] == ["failover.link.health"]

    [opening] = [
        s
        for _, s in spans
        if s.name == "transition online→degraded"
        and values(s.attributes)["failover.service"] == "ektp"
    ]
    a = values(opening.attributes)
    assert a["failover.incident"] == "ektp@20190204T231200Z"
    assert a["failover.event.time"] == "2019-02-04T23:12:00Z"
    assert opening.trace_id == reading.trace_id
    assert opening.parent_span_id == reading.span_id
    [trigger] = opening.links
    assert values(by_id[trigger.span_id].attributes)["failover.event.type"] == "clock.tick.v1"
    assert values(trigger.attributes) == {"failover.link.role": "trigger"}

    sends = [s for _, s in spans if s.parent_span_id == opening.span_id]
    commands = [
        record
        for record, _ in outputs
        if isinstance(record, Emitted) and record.key == "ektp"
    ]  # fmt: skip
    assert sorted(values(s.attributes)["failover.event.id"] for s in sends) == sorted(
        record.event["id"] for record in commands
    )
    for send in sends:
        assert send.kind == Span.SPAN_KIND_INTERNAL
        assert send.trace_id == reading.trace_id
        assert send.name.startswith("emit ")
        assert "messaging.operation.type" not in values(send.attributes)

    # What a notice sender downstream gets in the headers continues that same trace.
    for record, headers in outputs:
        if isinstance(record, Emitted) and record.key == "ektp":
            context = trace.get_current_span(extract(headers)).get_span_context()
            assert context.trace_id.to_bytes(16, "big") == reading.trace_id
            assert by_id[context.span_id.to_bytes(8, "big")].parent_span_id == opening.span_id


def test_nothing_is_exported_unless_configured(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    telemetry = configure()
    assert not telemetry.enabled
    event = {"id": "x", "type": "clock.tick.v1", "time": "2019-02-05T00:00:00Z"}
    with Tracing(telemetry).input(event, orjson.dumps(event), destination="link-status"):
        pass
    assert telemetry.force_flush()
    telemetry.shutdown()
    assert receiver.paths == []
