"""Binary-mode CloudEvents (the Kafka protocol binding: ``ce_*`` headers, the data as the
value), as the official SDK makes them, are judged exactly as structured ones: the same
outputs for the demo, the same schemas and bounds, and a dead letter that keeps the record's
own value and every header it came with."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest

from streams.codec import binary_mode, structured_from_binary, tick_event
from streams.config import Settings
from streams.demokeys import sign_as
from streams.partitions import (
    FEEDBACK_SOURCE,
    OVERRIDES_SOURCE,
    LinkPartition,
    Routing,
    ServicePartition,
)
from tests.binary import binary
from tests.test_stream_partitions import TOPOLOGY, DictTable, oracle, simulate
from workflows.timeutil import parse_event_time
from workflows.topology import Topology

READING = orjson.dumps(
    {
        "specversion": "1.0",
        "id": "probe/1",
        "source": "/probes/ambon-noc",
        "type": "link.status.v1",
        "time": "2019-02-05T00:00:00Z",
        "subject": "backup-4g",
        "datacontenttype": "application/json",
        "data": {"status": "down", "latency_ms": 10.0, "loss_pct": 0.0},
    }
)


def override(action: str) -> bytes:
    """An override signed by the demo's office head (its signature travels as ce_ headers)."""
    return orjson.dumps(
        sign_as(
            {
                "specversion": "1.0",
                "id": "override/1",
                "source": "/ops/console",
                "type": "operator.override.v1",
                "time": "2019-02-05T00:00:00Z",
                "subject": "ektp",
                "data": {
                    "action": action,
                    "actor": "Kepala Dinas",
                    "role": "office-head",
                    "reason": "r",
                },
            }
        )
    )


def sdk(raw: bytes) -> tuple[bytes, list[tuple[str, bytes]]]:
    made = binary(raw)
    assert made is not None
    return made


def test_the_sdks_binary_record_stands_for_the_structured_event() -> None:
    value, headers = sdk(READING)
    assert {name for name, _ in headers} >= {"ce_id", "ce_type", "ce_time", "content-type"}
    assert binary_mode(headers)
    doc = structured_from_binary(headers, value, 65536)
    assert isinstance(doc, bytes)
    assert orjson.loads(doc) == orjson.loads(READING)


def test_structured_mode_is_what_it_was() -> None:
    """No ce_ header, or structured mode's content type (which wins over ce_ headers)."""
    assert not binary_mode([("content-type", b"application/cloudevents+json; charset=UTF-8")])
    assert not binary_mode([("traceparent", b"00-x")])
    assert not binary_mode([("ce_id", b"1"), ("Content-Type", b"Application/CloudEvents+json")])
    assert binary_mode([("CE_ID", b"1")])


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda h: [*h, ("ce_id", b"again")], "bad-header: 'ce_id' occurs twice"),
        (lambda h: [*h, ("content-type", b"application/json")], "bad-header: 'content-type'"),
        (
            lambda h: [(n, b"\xff/x" if n == "ce_source" else v) for n, v in h],
            "bad-header: the value of 'ce_source' is not UTF-8 (byte 0)",
        ),
        (lambda h: [*h, ("ce_Foo", b"x")], "bad-header: 'ce_Foo' is not a CloudEvents"),
        (lambda h: [*h, ("CE_foo", b"x")], "bad-header: 'CE_foo' is not a CloudEvents"),
        (lambda h: [*h, ("ce_foo-bar", b"x")], "bad-header: 'ce_foo-bar' is not"),
        (lambda h: [*h, ("ce_data", b"{}")], "bad-header: 'ce_data': the data of"),
        (lambda h: [*h, ("ce_datacontenttype", b"x")], "bad-header: 'ce_datacontenttype'"),
        # Header bytes count: a value well within the limit, a header that is not.
        (lambda h: [*h, ("x-pad", b"x" * 65536)], "too-large: "),
    ],
)
def test_a_bad_header_is_refused_with_its_reason(change: object, reason: str) -> None:
    value, headers = sdk(READING)
    got = structured_from_binary(change(headers), value, 65536)  # type: ignore[operator]
    assert isinstance(got, str)
    assert got.startswith(reason)


def test_the_value_must_be_json() -> None:
    _, headers = sdk(READING)
    got = structured_from_binary(headers, b"status=up", 65536)
    assert isinstance(got, str)
    assert got.startswith("not-json: the value (the data of a binary-mode event)")


def records(
    topic: str, values: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]
) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(topic=topic, partition=0, offset=o, key=k, value=v, headers=h)
        for o, (k, v, h) in enumerate(values)
    ]


def test_schema_checks_apply_and_a_dead_letter_keeps_value_and_every_header() -> None:
    """An extension attribute the schema refuses for its form (a ``datacontenttype`` other
    than JSON, ``traceparent`` malformed), a key that is not the subject: the same reasons as
    structured mode gives. The dead letter: the record's own value, all its headers in
    order, then the engine's."""
    settings = Settings(partitions=1)
    topology = Topology.load(TOPOLOGY)
    stage = LinkPartition(topology, Routing(settings), 0, DictTable())
    value, headers = sdk(READING)
    texty = [(n, b"text/plain") if n == "content-type" else (n, v) for n, v in headers]
    traced = [*headers, ("ce_traceparent", b"not-a-traceparent"), ("x-mine", b"\x00\xff")]
    out = stage.handle_batch(
        records(
            settings.topic_link_status,
            [
                (b"backup-4g", value, texty),
                (b"backup-4g", value, traced),
                (b"vsat-palapa", value, headers),
            ],
        )
    )
    dead = [r for r in out if r.topic == settings.topic_deadletter]
    assert [dict(r.headers)["failover-reason"].split(b":")[0] for r in dead] == [
        b"schema",
        b"schema",
        b"key-mismatch",
    ]
    assert b"datacontenttype" in dict(dead[0].headers)["failover-reason"]
    assert b"traceparent" in dict(dead[1].headers)["failover-reason"]
    assert [r.value for r in dead] == [value, value, value]
    assert dead[1].headers[: len(traced)] == traced
    names = [n for n, _ in dead[1].headers[len(traced) :]]
    assert names[0] == "failover-reason"


def test_a_queued_binary_input_dead_lettered_later_keeps_its_value_and_headers() -> None:
    """An override waits for its tick with the bytes it came with; refused when applied
    (release while online: not-applicable), its dead letter is the binary record."""
    settings = Settings(partitions=1)
    topology = Topology.load(TOPOLOGY)
    stage = ServicePartition(topology, Routing(settings), 0, DictTable())
    release = override("release")
    value, headers = sdk(release)
    out = stage.handle_batch(
        OVERRIDES_SOURCE,
        records(settings.topic_overrides, [(b"ektp", value, headers)]),
    )
    assert out == []
    stage.flush()
    stage = ServicePartition(topology, Routing(settings), 0, stage.table)  # a restart
    _, tick = tick_event(parse_event_time("2019-02-05T00:01:00Z"))
    links = LinkPartition(topology, Routing(settings), 0, DictTable())
    changes = links.handle_batch(records(settings.topic_link_status, [(b"__tick__", tick, [])]))
    drained = stage.handle_batch(
        None, records(settings.topic_changes, [(r.key, r.value, []) for r in changes])
    )
    drained += stage.handle_batch(
        FEEDBACK_SOURCE, records(settings.topic_feedback, [(b"__tick__", tick, [])])
    )
    drained += stage.handle_batch(
        OVERRIDES_SOURCE, records(settings.topic_overrides, [(b"__tick__", tick, [])])
    )
    (dead,) = [r for r in drained if r.topic == settings.topic_deadletter]
    assert dict(dead.headers)["failover-reason"].startswith(b"not-applicable")
    assert dead.value == value
    assert dead.headers[: len(headers)] == headers


@pytest.mark.parametrize(("partitions", "seed", "restart_every"), [(1, 10, None), (3, 11, 3)])
def test_the_demo_in_binary_mode_gives_replays_outputs(
    partitions: int, seed: int, restart_every: int | None
) -> None:
    expected, expected_reasons = oracle()
    got, reasons = simulate(partitions, seed, restart_every, batched=True, binary=True)
    assert set(got) == set(expected)
    for service, events in expected.items():
        assert got[service] == events, service
    assert reasons == expected_reasons
