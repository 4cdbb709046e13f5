"""The causal chain of traces on the real Kafka path: ``failover worker`` in a subprocess,
configured by ``OTEL_*`` variables only, exporting over OTLP/HTTP to a receiver this test
starts (harness/otlp.py), while a read_committed consumer reads its commands.

The scenario is small: the three links up, then the fibre link through STO Pattimura goes
down in a reading that carries a probe's W3C ``traceparent`` in its Kafka headers (a span of
the test's own tracer), and the next tick comes more than ``manual_after`` later: the three
services that need that link alone go ``online → manual`` at once (``down-sustained``), the
reading having made them unhealthy. That reading's trace is the incidents' trace:

- stage 1's ``process {link-status}`` batch span links to the probe's span;
- each ``transition online→manual`` span is a child of the probe's span (its trace);
- each command's ``send {commands}`` span is a child of its transition, and the command on
  Kafka carries that span's context as its one ``traceparent`` header;
- the worker's metrics (inputs, transitions, commands, full collections, commit times)
  arrive too, flushed at SIGTERM.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaConsumer,
    AIOKafkaProducer,
    TopicPartition,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from harness.otlp import Receiver, serve, values
from streams.topics import partition_for
from streams.tracing import inject
from tests.kafka.kafkatools import client_options, wait_for
from tests.kafka.workers import (
    DEMO_TOPOLOGY,
    Engine,
    cloud_event,
    engine_env,
    engine_topics,
    route,
    running_worker,
    signed,
    stop_worker,
)
from workflows.records import TRANSITIONS, Emitted
from workflows.replay import replay
from workflows.topology import Topology

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]

LINK = "telkom-sto-pattimura"
SITE = "disdukcapil-ambon"
DOWN_AT = "2019-02-04T22:31:05Z"
TICK_AT = "2019-02-04T22:36:30Z"  # 325 s after the down reading: past manual_after (300 s)


def _event(type_: str, ident: str, time: str, subject: str | None, data: dict[str, Any]) -> bytes:
    return cloud_event(type_, ident, time, subject, data, source="/tests/probe")


def _tick(time: str) -> bytes:
    return _event("clock.tick.v1", f"tick/{time}", time, None, {})


def _reading(link: str, time: str, status: str = "up") -> bytes:
    data: dict[str, Any] = (
        {"status": "up", "latency_ms": 35.0, "loss_pct": 0.0}
        if status == "up"
        else {"status": "down", "latency_ms": None, "loss_pct": 100.0}
    )
    return _event("link.status.v1", f"probe/{link}/{time}", time, link, data)


BAD_READING = _reading(LINK, DOWN_AT, "down")
SCENARIO = [
    _tick("2019-02-04T22:30:00Z"),
    _reading(LINK, "2019-02-04T22:30:05Z"),
    _reading("backup-4g", "2019-02-04T22:30:10Z"),
    _reading("vsat-palapa", "2019-02-04T22:30:15Z"),
    _tick("2019-02-04T22:31:00Z"),
    BAD_READING,
    # The other two links stay fresh (stale_after is 120 s) up to the tick.
    _reading("backup-4g", "2019-02-04T22:36:20Z"),
    _reading("vsat-palapa", "2019-02-04T22:36:25Z"),
    _tick(TICK_AT),
]


@dataclass
class Read:
    """A record as a read_committed consumer got it, headers as the list they are."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = orjson.loads(self.value)
        return event


def _expected() -> list[Emitted]:
    records = list(replay(Topology.load(DEMO_TOPOLOGY), enumerate(SCENARIO, 1), "scenario"))
    assert all(isinstance(r, Emitted) for r in records)
    return [r for r in records if isinstance(r, Emitted)]


def _points(metrics: list[Metric], name: str) -> dict[frozenset[tuple[str, Any]], float]:
    """The latest value of each of a counter's attribute sets (cumulative sums)."""
    latest: dict[frozenset[tuple[str, Any]], float] = {}
    for metric in metrics:
        if metric.name == name:
            assert metric.WhichOneof("data") == "sum", metric
            for point in metric.sum.data_points:
                latest[frozenset(values(point.attributes).items())] = point.as_int
    return latest


def _traceparent(record: Read) -> tuple[bytes, bytes]:
    """(trace id, span id) of the record's one ``traceparent`` header."""
    parents = [v for n, v in record.headers if n.lower() == "traceparent"]
    assert len(parents) == 1, f"{len(parents)} traceparent headers: {record.headers}"
    version, trace_id, span_id, flags = parents[0].decode().split("-")
    assert version == "00", parents[0]
    assert int(flags, 16) & 0x01, parents[0]  # sampled
    return bytes.fromhex(trace_id), bytes.fromhex(span_id)


@pytest.mark.slow
async def test_the_probes_trace_runs_through_the_worker_to_the_commands_headers(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_otel_env: None,  # the worker's telemetry is this test's OTEL_* alone
) -> None:
    # The probe: a span of the test's own tracer, its context in the reading's headers.
    probes = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(probes))
    with provider.get_tracer("tests.probe").start_as_current_span(
        "probe telkom-sto-pattimura", kind=SpanKind.PRODUCER
    ) as probe:
        probe_headers = list(inject(probe))
    probe_context = probe.get_span_context()
    probe_trace = probe_context.trace_id.to_bytes(16, "big")
    probe_span = probe_context.span_id.to_bytes(8, "big")
    provider.shutdown()

    expected = _expected()
    transitions = [r for r in expected if r.topic == TRANSITIONS]
    commands = [r for r in expected if r.topic != TRANSITIONS]
    services = sorted(r.key for r in transitions)
    assert services == ["akta-lahir", "ektp", "legalisasi"]
    assert {(r.event["data"]["from"], r.event["data"]["to"]) for r in transitions} == {
        ("online", "manual")
    }

    receiver = Receiver()
    with serve(receiver) as endpoint:
        engine = engine_env(
            kafka_bootstrap,
            unique_name,
            tmp_path,
            partitions=2,
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_METRICS_EXPORTER="otlp",
            OTEL_BSP_SCHEDULE_DELAY="100",
            OTEL_METRIC_EXPORT_INTERVAL="600000",  # at shutdown: final cumulative values
            OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=test",
        )
        s = engine.settings
        async with engine_topics(engine):
            bad_offset = await _publish(engine, probe_headers)
            reader = AIOKafkaConsumer(
                bootstrap_servers=kafka_bootstrap,
                isolation_level="read_committed",
                enable_auto_commit=False,
                **client_options(),
            )
            await reader.start()
            try:
                tps = [
                    TopicPartition(t, p)
                    for t in (s.topic_commands, s.topic_transitions)
                    for p in range(s.partitions)
                ]
                reader.assign(tps)
                await reader.seek_to_beginning(*tps)
                got: list[Read] = []
                async with running_worker(engine) as worker:

                    async def all_out() -> bool:
                        assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
                        for tp, batch in (await reader.getmany(timeout_ms=200)).items():
                            got.extend(
                                Read(tp.topic, r.key, r.value or b"", list(r.headers or ()))
                                for r in batch
                            )
                        return len(got) >= len(expected)

                    def chain_exported() -> bool:
                        names = Counter(span.name for _, span in receiver.spans())
                        return names["transition online→manual"] == len(transitions) and names[
                            f"send {s.topic_commands}"
                        ] >= len(commands)

                    try:
                        await wait_for(all_out, timeout=60, what=f"{len(expected)} outputs")
                        receiver.wait(chain_exported, timeout=20)
                    except AssertionError:
                        print(engine.log_tail())
                        raise
                    assert await stop_worker(worker) == 0, engine.log_tail()
                # The shutdown flushed the metrics (and any span left in the queue).
                receiver.wait(lambda: "failover.commands" in receiver.metric_names(), 20)
            finally:
                await reader.stop()

    spans = receiver.spans()
    assert {resource["service.name"] for resource, _ in spans} == {"failover-engine"}
    assert {resource["deployment.environment.name"] for resource, _ in spans} == {"test"}
    by_id = {span.span_id: span for _, span in spans}
    assert len(by_id) == len(spans), "a span exported twice"

    # (a) Stage 1's batch span of the reading's partition links to the probe's span.
    partition = partition_for(LINK, s.partitions)
    batches = [span for _, span in spans if span.name == f"process {s.topic_link_status}"]
    assert batches
    for batch in batches:
        a = values(batch.attributes)
        assert batch.kind == Span.SPAN_KIND_CONSUMER
        assert not batch.parent_span_id  # a batch's span is a root; records are links
        assert a["messaging.system"] == "kafka"
        assert a["messaging.operation.type"] == "process"
        assert a["messaging.destination.name"] == s.topic_link_status
        assert a["messaging.consumer.group.name"] == s.app_id
        assert a["messaging.destination.partition.id"] in {str(p) for p in range(s.partitions)}
        first, last = a["failover.batch.offset.first"], a["failover.batch.offset.last"]
        assert a["messaging.batch.message_count"] == last - first + 1  # inputs: no gaps
    [carrier] = [
        b
        for b in batches
        if values(b.attributes)["messaging.destination.partition.id"] == str(partition)
        and values(b.attributes)["failover.batch.offset.first"]
        <= bad_offset
        <= values(b.attributes)["failover.batch.offset.last"]
    ]
    [link] = carrier.links  # the only record that came with a (sampled) context
    assert (link.trace_id, link.span_id) == (probe_trace, probe_span)
    assert values(link.attributes) == {"messaging.kafka.offset": bad_offset}
    # Stage 2 read the change through the changes topic, in batch spans of its own.
    assert any(span.name == f"process {s.topic_changes}" for _, span in spans)

    # (b) The three incidents' opening transitions continue the probe's trace.
    opened = {
        values(span.attributes)["failover.service"]: span
        for _, span in spans
        if span.name == "transition online→manual"
    }
    assert sorted(opened) == services
    for service, transition in opened.items():
        a = values(transition.attributes)
        assert transition.kind == Span.SPAN_KIND_INTERNAL
        assert transition.trace_id == probe_trace
        assert transition.parent_span_id == probe_span
        assert a["failover.site"] == SITE
        assert a["failover.incident"] == f"{service}@20190204T223630Z"
        assert (a["failover.from"], a["failover.to"]) == ("online", "manual")
        assert a["failover.reason"] == "down-sustained"
        assert a["failover.cause"] == f"tick/{TICK_AT}"
        assert a["failover.event.time"] == TICK_AT
        roles = {values(link.attributes)["failover.link.role"] for link in transition.links}
        assert "trigger" in roles, transition.links  # the tick's processing completed it
        for link in transition.links:
            assert (link.trace_id, link.span_id) != (probe_trace, probe_span)

    # (c) Each record's send span is a child of its transition, and the record on Kafka
    # carries that span's context, once.
    sends = {
        values(span.attributes)["messaging.message.id"]: span
        for _, span in spans
        if span.name.startswith("send ")
    }
    per_service: dict[str, list[str]] = defaultdict(list)
    assert sorted(r.event["id"] for r in got) == sorted(r.event["id"] for r in expected)
    for record in got:
        event = record.event
        service = event["data"]["service"]
        send = sends[event["id"]]
        assert send.name == f"send {record.topic}"
        assert send.kind == Span.SPAN_KIND_PRODUCER
        assert send.parent_span_id == opened[service].span_id
        assert send.trace_id == probe_trace
        a = values(send.attributes)
        assert a["messaging.system"] == "kafka"
        assert a["messaging.operation.type"] == "send"
        assert a["messaging.destination.name"] == record.topic
        assert a["messaging.kafka.message.key"] == service
        assert a["failover.command.type"] == event["type"]
        assert a["failover.incident"] == f"{service}@20190204T223630Z"
        assert _traceparent(record) == (probe_trace, send.span_id)
        if record.topic == s.topic_commands:
            per_service[service].append(event["type"])
    assert per_service == {
        service: [r.event["type"] for r in commands if r.key == service] for service in services
    }

    # (d) Metrics: inputs by type, the transitions, the commands (cumulative, at shutdown).
    metrics = receiver.metric_list()
    inputs = _points(metrics, "failover.events.in")
    ticks = sum(b"clock.tick.v1" in raw for raw in SCENARIO)
    assert inputs == {
        frozenset({("event.type", "link.status.v1")}): len(SCENARIO) - ticks,
        # A tick is copied to every partition of the three input topics.
        frozenset({("event.type", "clock.tick.v1")}): ticks * 3 * s.partitions,
    }
    assert _points(metrics, "failover.transitions") == {
        frozenset({("from", "online"), ("to", "manual")}): len(transitions)
    }
    assert _points(metrics, "failover.commands") == {
        frozenset({("command.type", kind)}): n
        for kind, n in Counter(r.event["type"] for r in commands).items()
    }
    # The heap settles after the rebalance with a full collection (streams.app.settle_heap),
    # and the commits are timed.
    histograms = {m.name: m for m in metrics if m.WhichOneof("data") == "histogram"}
    assert sum(p.count for p in histograms["failover.gc.pause"].histogram.data_points) >= 1
    stages = {
        a.value.string_value: p.count
        for p in histograms["failover.stage.duration"].histogram.data_points
        for a in p.attributes
    }
    assert stages["commit"] >= 1


async def _publish(engine: Engine, probe_headers: list[tuple[str, bytes]]) -> int:
    """Publish the scenario as a probe and the ticker would; the bad reading with the probe's
    headers. Returns the bad reading's offset."""
    s = engine.settings
    producer = AIOKafkaProducer(
        bootstrap_servers=list(s.bootstrap_servers),
        enable_idempotence=True,
        linger_ms=5,
        **client_options(),
    )
    await producer.start()
    try:
        futures = []
        for raw in SCENARIO:
            headers = probe_headers if raw == BAD_READING else None
            for topic, key, partition in route(s, raw):
                sent = await producer.send(
                    topic, signed(raw), key=key, partition=partition, headers=headers
                )
                futures.append((raw, sent))
        offsets = [(raw, (await sent).offset) for raw, sent in futures]
    finally:
        await producer.stop()
    [offset] = [o for raw, o in offsets if raw == BAD_READING]
    return int(offset)
