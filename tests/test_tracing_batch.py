"""The batch path of ``streams.tracing`` (:meth:`KafkaTracing.process`): one processing span
per consumed batch, a link to each record's context, and what each record caused traced from
that record's context, through the internal changes topic to the commands' headers.

Records are fakes shaped like aiokafka's ``ConsumerRecord`` (in) and
``streams.partitions.Record`` (out); the outputs are what the partitions would produce."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler
from opentelemetry.trace import SpanKind, StatusCode

from streams.codec import Origin as KafkaOrigin
from streams.codec import deadletter_headers, encode_health, encode_watermark
from streams.config import Settings
from streams.telemetry import Telemetry
from streams.tracing import (
    MAX_BATCH_LINKS,
    Batch,
    KafkaTopics,
    KafkaTracing,
    extract,
    kafka_autoinstrumentation,
)
from workflows.links import HealthChange
from workflows.records import COMMANDS, TRANSITIONS, Emitted
from workflows.topology import Topology

TOPOLOGY = Path(__file__).resolve().parent.parent / "streams" / "demo" / "ambon.yaml"
LINK = "telkom-sto-pattimura"  # ektp requires it, and nothing else
TOPICS = KafkaTopics.of(Settings())
CHANGELOG = "failover-engine-link-health-changelog"
GROUP = "failover-engine"


@pytest.fixture(autouse=True)
def _no_otel_env(no_otel_env: None) -> None:
    """Tests decide the telemetry configuration (conftest's ``no_otel_env``)."""


# -- fakes ----------------------------------------------------------------------------------------


@dataclass
class In:
    """A consumed record; counts how often its headers are read."""

    offset: int
    value: bytes | None = b"{}"
    raw_headers: Sequence[tuple[str, bytes]] = ()
    topic: str = "link-status"
    partition: int = 0
    key: bytes | None = None
    reads: list[int] = field(default_factory=list)

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]:
        self.reads.append(self.offset)
        return self.raw_headers


class Out(NamedTuple):
    """A record to produce, like ``streams.partitions.Record``."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int
    headers: list[tuple[str, bytes]]
    made: Emitted | HealthChange | None = None


def probe(n: int) -> tuple[int, int]:
    return 0x5EED0000_00000000_00000000_00000000 + n, 0x0B0B0000_00000000 + n


def traceparent(n: int, sampled: bool = True) -> list[tuple[str, bytes]]:
    trace_id, span_id = probe(n)
    return [
        ("traceparent", f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}".encode())
    ]


def context_of(headers: Sequence[tuple[str, bytes]]) -> tuple[int, int, int]:
    from opentelemetry import trace

    span_context = trace.get_current_span(extract(headers)).get_span_context()
    return span_context.trace_id, span_context.span_id, int(span_context.trace_flags)


def memory(
    sampler: Sampler | None = None,
) -> tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]:
    spans = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler or ParentBased(ALWAYS_ON), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    return Telemetry(provider, MeterProvider([reader], shutdown_on_exit=False)), spans, reader


@pytest.fixture
def topology() -> Topology:
    return Topology.load(TOPOLOGY)


def change(health: int, reading: str, service: str = "ektp") -> Out:
    made = HealthChange(1_000, 0, reading, LINK, health, reading, "probe")
    return Out(TOPICS.changes, service.encode(), encode_health(made), 3, [], made)


def reading(offset: int, headers: Sequence[tuple[str, bytes]] = ()) -> In:
    event = {"id": f"probe/{offset}", "type": "link.status.v1", "subject": LINK}
    return In(offset, orjson.dumps(event), headers)


def emitted(
    topic: str, event: dict[str, Any], headers: list[tuple[str, bytes]] | None = None
) -> Out:
    key = event["data"]["service"].encode()
    logical = {TOPICS.commands: COMMANDS, TOPICS.transitions: TRANSITIONS}.get(topic, topic)
    made = Emitted(logical, key.decode(), event)
    return Out(topic, key, orjson.dumps(event), 1, headers or [("content-type", b"ce")], made)


TIME = "2019-02-04T23:12:00Z"
INCIDENT = "ektp@20190204T231200Z"


def transition(source: str, dest: str, reason: str, cause: str, n: int = 1) -> dict[str, Any]:
    return {
        "id": f"t{n}", "type": "failover.transition.v1", "time": TIME,
        "data": {"service": "ektp", "site": "disdukcapil-ambon", "incident": INCIDENT,
                 "from": source, "to": dest, "reason": reason, "cause": cause},
    }  # fmt: skip


def command(type_: str, n: int = 1) -> dict[str, Any]:
    return {
        "id": f"c{n}", "type": type_, "time": TIME,
        "data": {"service": "ektp", "site": "disdukcapil-ambon", "incident": INCIDENT},
    }  # fmt: skip


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def ids(span: ReadableSpan) -> tuple[int, int]:
    context = span.get_span_context()
    assert context is not None
    return context.trace_id, context.span_id


def by_name(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


def roles(span: ReadableSpan) -> dict[str, int]:
    return {str((link.attributes or {})["failover.link.role"]): link.context.span_id
            for link in span.links}  # fmt: skip


def as_input(record: Out, offset: int) -> In:
    """What the consumer of ``record``'s topic reads."""
    return In(offset, record.value, record.headers, record.topic, record.partition, record.key)


# -- the batch span -------------------------------------------------------------------------------


def test_one_consumer_span_per_batch_with_a_link_per_sampled_record() -> None:
    telemetry, exporter, _ = memory()
    tracing = KafkaTracing(telemetry, kafka=TOPICS)
    records = [
        reading(10, traceparent(1)),
        reading(11),  # no context: nothing to link
        reading(12, traceparent(2, sampled=False)),  # the probe did not keep its span
        In(13, orjson.dumps({"id": "probe/13", "traceparent": traceparent(3)[0][1].decode()})),
    ]
    with tracing.process("link-status", 4, GROUP, records) as batch:
        for record in records:
            assert batch.handled(record, []) == []
    [span] = exporter.get_finished_spans()
    assert span.name == "process link-status"
    assert span.kind == SpanKind.CONSUMER
    assert span.parent is None
    assert attrs(span) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "link-status",
        "messaging.destination.partition.id": "4",
        "messaging.consumer.group.name": GROUP,
        "messaging.batch.message_count": 4,
        "failover.batch.offset.first": 10,
        "failover.batch.offset.last": 13,
        "failover.outputs": 0,
    }
    assert [(link.context.span_id, dict(link.attributes or {})) for link in span.links] == [
        (probe(1)[1], {"messaging.kafka.offset": 10}),
        (probe(3)[1], {"messaging.kafka.offset": 13}),  # the CloudEvent extension attribute
    ]
    assert all(link.context.is_remote for link in span.links)
    telemetry.shutdown()


def test_links_are_capped_and_the_rest_counted() -> None:
    telemetry, exporter, _ = memory()
    records = [reading(n, traceparent(n)) for n in range(MAX_BATCH_LINKS + 7)]
    with KafkaTracing(telemetry, kafka=TOPICS).process("link-status", 0, GROUP, records):
        pass
    [span] = exporter.get_finished_spans()
    assert len(span.links) == MAX_BATCH_LINKS
    assert attrs(span)["failover.batch.links_dropped"] == 7
    with KafkaTracing(telemetry, kafka=TOPICS).process(
        "link-status", 0, GROUP, records[:5], max_links=2
    ):
        pass
    assert attrs(exporter.get_finished_spans()[-1])["failover.batch.links_dropped"] == 3
    telemetry.shutdown()


# -- cost -----------------------------------------------------------------------------------------


def test_off_returns_the_records_and_reads_nothing() -> None:
    tracing = KafkaTracing(Telemetry(), kafka=TOPICS)
    records = [reading(n, traceparent(n)) for n in range(3)]
    out = [change(1, "probe/1")]
    batch = tracing.process("link-status", 0, GROUP, records)
    assert batch is tracing.process("x", 1, None, [])  # one shared no-op
    with batch as entered:
        assert not entered.active
        assert entered.handled(records[0], out) is out
    assert all(not record.reads for record in records)


def test_a_batch_sampled_out_reads_only_the_records_that_caused_something() -> None:
    telemetry, exporter, _ = memory(ParentBased(ALWAYS_OFF))
    tracing = KafkaTracing(telemetry, kafka=TOPICS)
    records = [reading(n, traceparent(n)) for n in range(100)]
    with tracing.process("link-status", 0, GROUP, records) as batch:
        assert batch.active
        assert not batch.span.is_recording()
        hops = []
        for record in records:
            out = [change(1, f"probe/{record.offset}")] if record.offset == 42 else []
            hops.extend(batch.handled(record, out))
    assert exporter.get_finished_spans() == ()
    assert [r.reads for r in records if r.reads] == [[42]]
    # The probe kept its span: the change goes on in the probe's trace, sampled.
    [hop] = hops
    assert context_of(hop.headers) == (*probe(42), 1)
    telemetry.shutdown()


# -- the causal chain, stage 1 to stage 2 ---------------------------------------------------------


@pytest.fixture
def story(topology: Topology) -> Iterator[tuple[KafkaTracing, InMemorySpanExporter]]:
    telemetry, exporter, _ = memory()
    yield KafkaTracing(telemetry, topology, kafka=TOPICS), exporter
    telemetry.shutdown()


def stage1(tracing: KafkaTracing) -> tuple[list[Out], Out]:
    """Stage 1: the reading at offset 11 (from a probe that traces) makes the link impaired;
    its change goes to ektp's partition; the link's state to the changelog."""
    records = [reading(10, traceparent(1)), reading(11, traceparent(2)), reading(12)]
    state = Out(CHANGELOG, LINK.encode(), b"{}", 0, [])
    sent: list[Out] = []
    with tracing.process("link-status", 0, GROUP, records, stage="stage1") as batch:
        for record in records:
            out = (
                [change(1, "probe/11"), change(1, "probe/11", "kia"), state]
                if record.offset == 11
                else []
            )
            sent.extend(batch.handled(record, out))
    return sent, state


def test_a_change_carries_the_readings_context_to_stage_2(
    story: tuple[KafkaTracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = story
    sent, state = stage1(tracing)
    first, second, changelog = sent
    assert changelog is state  # not the engine's output: untouched
    for hop in (first, second):
        assert context_of(hop.headers) == (*probe(2), 1)
    [span] = exporter.get_finished_spans()
    [event] = span.events  # one per link health change, not one per service it goes to
    assert event.name == "failover.link.health"
    assert dict(event.attributes or {}) == {
        "failover.link": LINK, "failover.health": "impaired", "failover.health.reason": "probe",
    }  # fmt: skip
    assert attrs(span)["failover.outputs"] == 0  # internal records are not outputs


def test_the_opening_transition_continues_the_probes_trace(
    story: tuple[KafkaTracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = story
    hop = stage1(tracing)[0][0]
    stale = [("content-type", b"ce"), ("traceparent", traceparent(99)[0][1])]
    outputs = [
        emitted(TOPICS.transitions, transition("online", "degraded", "impaired", "tick/1"), stale),
        emitted(TOPICS.commands, command("failover.queue.hold.v1", 2)),
        Out(CHANGELOG, b"ektp", b"{}", 3, []),
    ]
    tick = as_input(
        Out(TOPICS.changes, b"__watermark__", encode_watermark([(1, "tick/1")], "links/0"), 3, []),
        8,
    )
    records = [as_input(hop, 7), tick]
    with tracing.process(TOPICS.changes, 3, GROUP, records, stage="stage2") as batch:
        assert batch.handled(records[0], []) == []
        sent = batch.handled(tick, outputs)
    spans = exporter.get_finished_spans()
    process = [s for s in spans if s.name == f"process {TOPICS.changes}"]
    [opening] = [s for s in spans if s.name == "transition online→degraded"]
    sends = {attrs(s)["messaging.message.id"]: s for s in spans if s.name.startswith("send ")}
    [stage2] = process
    # The reading's context (the probe's span) is the transition's parent: one trace.
    assert opening.parent is not None
    assert (opening.parent.trace_id, opening.parent.span_id) == probe(2)
    assert roles(opening) == {"trigger": ids(stage2)[1]}  # the tick: read in this batch
    assert attrs(opening)["failover.incident"] == INCIDENT
    assert [(link.context.span_id, dict(link.attributes or {})) for link in stage2.links] == [
        (probe(2)[1], {"messaging.kafka.offset": 7}),
    ]
    [event] = stage2.events
    assert dict(event.attributes or {})["failover.link"] == LINK
    # Each output is sent under the transition, and carries its send span's context only.
    for record, message_id in zip(sent[:2], ("t1", "c2"), strict=True):
        send = sends[message_id]
        assert send.kind == SpanKind.PRODUCER
        assert send.parent is not None
        assert send.parent.span_id == ids(opening)[1]
        assert ids(send)[0] == probe(2)[0]
        assert [name for name, _ in record.headers] == ["content-type", "traceparent"]
        assert context_of(record.headers) == (*ids(send), 1)
    assert sends["t1"].name == f"send {TOPICS.transitions}"
    assert sends["c2"].name == f"send {TOPICS.commands}"
    assert attrs(sends["c2"])["failover.command.type"] == "failover.queue.hold.v1"
    assert sent[2] is outputs[2]
    assert attrs(stage2)["failover.outputs"] == 2


@pytest.mark.parametrize("topic", [TOPICS.overrides, TOPICS.service_repartition])
def test_an_operators_transition_hangs_from_the_override(
    story: tuple[KafkaTracing, InMemorySpanExporter], topic: str
) -> None:
    """On its topic, or forwarded to its service's partition (with its headers)."""
    tracing, exporter = story
    override = {"id": "override/ektp/1", "type": "operator.override.v1", "subject": "ektp"}
    overrides = [In(5, orjson.dumps(override), traceparent(5), topic, 3)]
    with tracing.process(topic, 3, GROUP, overrides) as batch:
        batch.handled(overrides[0], [])  # queued until the clock passes it
    forced = transition("online", "manual", "operator-force", "override/ektp/1")
    tick = In(6, b'{"id":"tick/2","type":"clock.tick.v1"}', (), TOPICS.feedback, 3)
    with tracing.process(TOPICS.feedback, 3, GROUP, [tick]) as batch:
        [sent] = batch.handled(tick, [emitted(TOPICS.transitions, forced)])
    spans = by_name(exporter.get_finished_spans())
    opening = spans["transition online→manual"]
    assert opening.parent is not None
    assert (opening.parent.trace_id, opening.parent.span_id) == probe(5)
    assert roles(opening) == {"trigger": ids(spans[f"process {TOPICS.feedback}"])[1]}
    assert context_of(sent.headers)[0] == probe(5)[0]


@pytest.mark.parametrize("sampled", [True, False], ids=["batch sampled", "batch sampled out"])
def test_an_override_is_parsed_once_for_its_id_and_its_context(
    topology: Topology, monkeypatch: pytest.MonkeyPatch, sampled: bool
) -> None:
    """An override whose trace context is the CloudEvent's attribute (no header): its value
    is parsed once, for both its context and its id, whether the batch's span links to it
    (sampled) or not; the transition it causes still hangs from that context."""
    import streams.tracing.kafka as kafka_tracing

    parsed: list[bytes] = []
    real = kafka_tracing.parse

    def counted(raw: bytes) -> dict[str, Any] | None:
        parsed.append(raw)
        return real(raw)

    monkeypatch.setattr(kafka_tracing, "parse", counted)
    telemetry, exporter, _ = memory(ParentBased(ALWAYS_ON if sampled else ALWAYS_OFF))
    tracing = KafkaTracing(telemetry, topology, kafka=TOPICS)
    trace_id, span_id = probe(7)
    override = {"id": "override/ektp/7", "type": "operator.override.v1", "subject": "ektp",
                "traceparent": f"00-{trace_id:032x}-{span_id:016x}-01"}  # fmt: skip
    value = orjson.dumps(override)
    record = In(5, value, (), TOPICS.overrides, 3)
    with tracing.process(TOPICS.overrides, 3, GROUP, [record]) as batch:
        batch.handled(record, [])
    assert parsed == [value]
    forced = transition("online", "manual", "operator-force", "override/ektp/7")
    tick = In(6, b'{"id":"tick/2","type":"clock.tick.v1"}', (), TOPICS.feedback, 3)
    with tracing.process(TOPICS.feedback, 3, GROUP, [tick]) as batch:
        [sent] = batch.handled(tick, [emitted(TOPICS.transitions, forced)])
    assert context_of(sent.headers)[0] == trace_id
    if sampled:
        [batch_span] = [s for s in exporter.get_finished_spans() if s.name.endswith("overrides")]
        assert [(link.context.trace_id, link.context.span_id) for link in batch_span.links] == [
            (trace_id, span_id)
        ]
    telemetry.shutdown()


def test_commands_outside_a_transition_hang_from_their_records_context(
    story: tuple[KafkaTracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = story
    records = [reading(1, traceparent(1))]
    with tracing.process("link-status", 0, GROUP, records) as batch:
        batch.handled(records[0], [emitted(TOPICS.commands, command("failover.escalate.v1"))])
    spans = by_name(exporter.get_finished_spans())
    send = spans[f"send {TOPICS.commands}"]
    assert send.parent is not None
    assert (send.parent.trace_id, send.parent.span_id) == probe(1)
    assert roles(send) == {"batch": ids(spans["process link-status"])[1]}


def test_a_dead_letter_is_sent_under_its_record_and_the_batch_is_no_error(
    story: tuple[KafkaTracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = story
    bad = In(9, b"not json", traceparent(9))
    good = reading(10)
    dead = Out(
        TOPICS.deadletter, None, b"not json", 0,
        deadletter_headers("not-json: expected value", KafkaOrigin("link-status", 0, 9)),
    )  # fmt: skip
    with tracing.process("link-status", 0, GROUP, [bad, good]) as batch:
        [sent] = batch.handled(bad, [dead])
        batch.handled(good, [])
    spans = by_name(exporter.get_finished_spans())
    process = spans["process link-status"]
    send = spans[f"send {TOPICS.deadletter}"]
    assert process.status.status_code == StatusCode.UNSET
    assert [e.name for e in process.events] == ["failover.deadletter"]
    assert send.parent is not None
    assert (send.parent.trace_id, send.parent.span_id) == probe(9)
    assert attrs(send)["error.type"] == "not-json"
    assert attrs(send)["failover.origin"] == "link-status[0]@9"
    assert [name for name, _ in sent.headers][:-1] == [name for name, _ in dead.headers]
    assert context_of(sent.headers)[:2] == ids(send)


def test_an_exception_marks_the_batch(story: tuple[KafkaTracing, InMemorySpanExporter]) -> None:
    tracing, exporter = story
    with pytest.raises(RuntimeError), tracing.process("link-status", 0, GROUP, [reading(1)]):
        raise RuntimeError("bug")
    [span] = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert attrs(span)["error.type"] == "RuntimeError"


# -- metrics --------------------------------------------------------------------------------------


def points(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
    data = reader.get_metrics_data()
    assert data is not None
    found = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        key = tuple(sorted((point.attributes or {}).items()))
                        found[key] = getattr(point, "value", None) or getattr(point, "count", None)
    return found


def test_metrics_without_traces(topology: Topology) -> None:
    reader = InMemoryMetricReader()
    telemetry = Telemetry(None, MeterProvider([reader], shutdown_on_exit=False))
    tracing = KafkaTracing(telemetry, topology, kafka=TOPICS)
    records = [reading(1, traceparent(1)), reading(2)]
    out = [
        emitted(TOPICS.transitions, transition("online", "degraded", "impaired", "tick/1")),
        emitted(TOPICS.commands, command("failover.queue.hold.v1", 2)),
    ]
    with tracing.process("link-status", 0, GROUP, records, stage="stage1") as batch:
        assert batch.handled(records[0], out) == out  # no headers without traces
        batch.handled(records[1], [])
    tracing.count_inputs({"link.status.v1": 2, "bogus": 1, "clock.tick.v1": 0})
    assert all(not record.reads for record in records)
    assert points(reader, "failover.transitions") == {(("from", "online"), ("to", "degraded")): 1}
    assert points(reader, "failover.commands") == {(("command.type", "failover.queue.hold.v1"),): 1}
    assert points(reader, "failover.stage.duration") == {(("stage", "stage1"),): 1}
    assert points(reader, "failover.events.in") == {
        (("event.type", "link.status.v1"),): 2,
        (("event.type", "invalid"),): 1,
    }
    telemetry.shutdown()


def test_off_batches_are_batches() -> None:
    assert isinstance(KafkaTracing(Telemetry(), kafka=TOPICS).process("t", 0, None, []), Batch)


# -- the aiokafka auto-instrumentation ------------------------------------------------------------


def test_aiokafka_auto_instrumentation_is_detected(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import aiokafka  # type: ignore[import-untyped]

    assert not kafka_autoinstrumentation()
    original = aiokafka.AIOKafkaProducer.send

    @functools.wraps(original)
    async def send(*args: Any, **kwargs: Any) -> Any:  # what wrapt's FunctionWrapper looks like
        return await original(*args, **kwargs)

    monkeypatch.setattr(aiokafka.AIOKafkaProducer, "send", send)
    with caplog.at_level(logging.WARNING, "streams.tracing"):
        assert kafka_autoinstrumentation(disable=False)
        assert kafka_autoinstrumentation()  # not opentelemetry's wrapper: left alone
    assert aiokafka.AIOKafkaProducer.send is send
    assert "two traceparent headers" in caplog.records[0].getMessage()
    assert "AIOKafkaProducer.send" in caplog.records[1].getMessage()


def test_full_collections_are_recorded_while_watched_and_only_then() -> None:
    import gc

    reader = InMemoryMetricReader()
    telemetry = Telemetry(None, MeterProvider([reader], shutdown_on_exit=False))
    stop = telemetry.watch_gc()
    try:
        gc.collect(0)  # a young collection: not a full one
        assert reader.get_metrics_data() is None  # nothing recorded at all
        gc.collect()
        gc.collect()
    finally:
        stop()
    gc.collect()  # no longer watched
    assert points(reader, "failover.gc.pause") == {(): 2}
    callbacks = len(gc.callbacks)
    Telemetry().watch_gc()()  # telemetry off: nothing watched, nothing to stop
    assert len(gc.callbacks) == callbacks
