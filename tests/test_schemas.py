"""Tests for the JSON Schemas and the AsyncAPI document in ``schemas/``."""

from __future__ import annotations

import copy
import functools
import json
import zoneinfo
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

import schemas
from schemas import ASYNCAPI, load_schema, schema_names

SCHEMA_DIR = Path(schemas.__file__).parent
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

INPUT_TYPES = (
    "link.status.v1",
    "operator.override.v1",
    "operator.maintenance.v1",
    "manual.record.v1",
    "reconcile.completed.v1",
    "clock.tick.v1",
)
OUTPUT_TYPES = (
    "failover.transition.v1",
    "failover.notice.v1",
    "failover.queue.hold.v1",
    "failover.queue.release.v1",
    "failover.reconcile.v1",
    "failover.escalate.v1",
    "failover.service.state.v1",
    "failover.audit.v1",
)
MESSAGE_TYPES = INPUT_TYPES + OUTPUT_TYPES
ALL_NAMES = (*MESSAGE_TYPES, "topology", "deadletter")

Json = Any
Mutation = Callable[[dict[str, Any]], None]


@functools.cache
def validator(name: str) -> jsonschema_rs.Validator:
    return jsonschema_rs.Draft202012Validator(load_schema(name))


def valid(name: str, instance: Json) -> bool:
    return validator(name).is_valid(instance)


# --------------------------------------------------------------------------- examples

TIME = "2024-05-01T08:30:00Z"


def _envelope(type_: str, subject: str, data: Json, source: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"{type_}:0001",
        "source": source,
        "type": type_,
        "time": TIME,
        "subject": subject,
        "datacontenttype": "application/json",
        "data": data,
    }


SCOPE = {"service": "ektp", "site": "disdukcapil-ambon", "incident": "ektp@2024-05-01T08:31:00Z"}

EXAMPLES: dict[str, dict[str, Any]] = {
    "link.status.v1": _envelope(
        "link.status.v1",
        "telkom-sto-pattimura",
        {"status": "degraded", "latency_ms": 950.5, "loss_pct": 2},
        "/probes/ambon-1",
    ),
    "operator.override.v1": _envelope(
        "operator.override.v1",
        "ektp",
        {"action": "force_manual", "actor": "rina", "role": "on-call", "reason": "fire at STO"},
        "/console/ops",
    ),
    "operator.maintenance.v1": _envelope(
        "operator.maintenance.v1",
        "telkom-2024-05",
        {
            "action": "announce",
            "actor": "rina",
            "role": "on-call",
            "reason": "fibre splice at STO Pattimura",
            "links": ["telkom-sto-pattimura"],
            "start": "2024-05-04T22:00:00+09:00",
            "end": "2024-05-05T02:00:00+09:00",
            "notice": {"id": "Mohon maaf.", "en": "We apologise."},
        },
        "/operators/failover-cli",
    ),
    "manual.record.v1": _envelope(
        "manual.record.v1",
        "surat-pindah",
        {"record_id": "SP-2024/0001", "kind": "legalisation", "note": "paper form 3"},
        "/offices/disdukcapil-ambon",
    ),
    "reconcile.completed.v1": _envelope(
        "reconcile.completed.v1",
        "surat-pindah",
        {"record_ids": ["SP-2024/0001", "SP-2024/0002"], "incident": "surat-pindah@1"},
        "/offices/disdukcapil-ambon",
    ),
    "clock.tick.v1": {
        "specversion": "1.0",
        "id": "tick:1714552200000",
        "source": "/failover/ticker",
        "type": "clock.tick.v1",
        "time": TIME,
    },
    "failover.transition.v1": _envelope(
        "failover.transition.v1",
        "ektp",
        {
            **SCOPE,
            "from": "online",
            "to": "manual",
            "reason": "down-sustained",
            "detail": "telkom-sto-pattimura down for 300s",
            "cause": "link.status.v1:0001",
            "health": "down",
        },
        "/failover/disdukcapil-ambon",
    ),
    "failover.notice.v1": _envelope(
        "failover.notice.v1",
        "ektp",
        {
            **SCOPE,
            "audience": "public",
            "template": "manual-public",
            "text": {"id": "Layanan KTP-el sementara ditunda.", "en": "e-ID service suspended."},
        },
        "/failover/disdukcapil-ambon",
    ),
    "failover.queue.hold.v1": _envelope(
        "failover.queue.hold.v1",
        "ektp",
        {**SCOPE, "queue": "ektp-counter"},
        "/failover/disdukcapil-ambon",
    ),
    "failover.queue.release.v1": _envelope(
        "failover.queue.release.v1",
        "ektp",
        {**SCOPE, "queue": "ektp-counter"},
        "/failover/disdukcapil-ambon",
    ),
    "failover.reconcile.v1": _envelope(
        "failover.reconcile.v1",
        "ektp",
        {**SCOPE, "record_ids": ["SP-2024/0001"]},
        "/failover/disdukcapil-ambon",
    ),
    "failover.escalate.v1": _envelope(
        "failover.escalate.v1",
        "ektp",
        {**SCOPE, "to": "provider", "reason": "manual-too-long", "provider": "telkom"},
        "/failover/disdukcapil-ambon",
    ),
    "failover.service.state.v1": _envelope(
        "failover.service.state.v1",
        "ektp",
        {
            "schema_version": 1,
            "service": "ektp",
            "site": "disdukcapil-ambon",
            "offline": False,
            "state": "manual",
            "since": "2024-05-01T17:35:00+09:00",
            "incident": "ektp@20240501T083100Z",
            "health": "down",
            "links": [{"link": "telkom-sto-pattimura", "health": "down"}],
            "queue": {"held": True, "name": "ektp-counter"},
            "manual": {"open": 0, "reconciled": 0},
            "pin": None,
            "last_operator": {
                "action": "force_manual",
                "actor": "rina",
                "role": "on-call",
                "reason": "fire at STO",
                "time": "2024-05-01T17:35:00+09:00",
            },
            "last_reason": "forced to manual by rina (on-call): fire at STO",
            "last_reason_code": "operator-force-manual",
        },
        "/failover/disdukcapil-ambon",
    ),
    "failover.audit.v1": _envelope(
        "failover.audit.v1",
        "ektp",
        {
            "override": "override/ektp/release/1",
            "action": "release",
            "actor": "Plt. Kepala Dinas",
            "role": "acting-head",
            "key": "Plt. Kepala Dinas/demo",
            "verdict": "refused",
            "reason": "forbidden: operator 'Plt. Kepala Dinas' has no grant to release",
            "operator_reason": "Jaringan sudah pulih.",
        },
        "/failover/disdukcapil-ambon",
    ),
    "deadletter": {
        "topic": "failover-deadletter",
        "key": None,
        "reason": "not JSON",
        "source": {"file": "events.jsonl", "line": 3},
        "value": "{oops",
    },
}


def example(name: str) -> dict[str, Any]:
    return copy.deepcopy(EXAMPLES[name])


def _set(path: str, value: Json) -> Mutation:
    """A mutation setting ``a.b.c`` to value."""

    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


def _del(path: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


def _both(first: Mutation, second: Mutation) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        first(doc)
        second(doc)

    return mutate


# ------------------------------------------------------------------ the schema files


def test_schema_names_lists_every_message_type_and_nothing_else() -> None:
    assert schema_names() == tuple(sorted(ALL_NAMES))
    for name in ALL_NAMES:
        assert (SCHEMA_DIR / f"{name}.schema.json").is_file()


def test_load_schema_caches_and_rejects_unknown_names() -> None:
    assert load_schema("topology") is load_schema("topology")
    with pytest.raises(KeyError):
        load_schema("nope.v1")
    with pytest.raises(KeyError):
        load_schema("../tests/test_schemas")


def test_asyncapi_is_package_data() -> None:
    assert resources.files("schemas").joinpath(ASYNCAPI).is_file()


@pytest.mark.parametrize("name", ALL_NAMES)
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = load_schema(name)
    assert schema["$schema"] == DRAFT_2020_12
    jsonschema_rs.meta.validate(schema)
    assert jsonschema_rs.meta.is_valid(schema)


def test_meta_validation_catches_a_broken_schema() -> None:
    assert not jsonschema_rs.meta.is_valid({"$schema": DRAFT_2020_12, "type": "strnig"})


def _walk(node: Json, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield every subschema (as a dict) with its JSON pointer."""
    if not isinstance(node, dict):
        return
    yield path, node
    for key in ("properties", "$defs", "patternProperties"):
        for name, sub in node.get(key, {}).items():
            yield from _walk(sub, f"{path}/{key}/{name}")
    for key in (
        "items",
        "additionalProperties",
        "propertyNames",
        "if",
        "then",
        "else",
        "not",
        "contains",
    ):
        if key in node:
            yield from _walk(node[key], f"{path}/{key}")
    for key in ("anyOf", "allOf", "oneOf", "prefixItems"):
        for i, sub in enumerate(node.get(key, [])):
            yield from _walk(sub, f"{path}/{key}/{i}")


KNOWN_KEYWORDS = frozenset(
    {
        "$schema",
        "$id",
        "$ref",
        "$defs",
        "$comment",
        "title",
        "description",
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "propertyNames",
        "patternProperties",
        "minProperties",
        "maxProperties",
        "items",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "anyOf",
        "allOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "examples",
        "default",
    }
)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_schema_uses_only_known_keywords_and_documents_every_property(name: str) -> None:
    for path, node in _walk(load_schema(name)):
        unknown = set(node) - KNOWN_KEYWORDS
        assert not unknown, f"{name} {path}: unknown keywords {unknown}"
        if "/if" in path:  # conditions, not documentation
            continue
        for prop, sub in node.get("properties", {}).items():
            assert sub.get("description"), f"{name} {path}/properties/{prop}: no description"


@pytest.mark.parametrize("name", ALL_NAMES)
def test_schema_is_self_contained(name: str) -> None:
    text = (SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8")
    for path, node in _walk(json.loads(text)):
        ref = node.get("$ref")
        assert ref is None or ref.startswith("#/"), f"{name} {path}: $ref {ref!r} leaves the file"


@pytest.mark.parametrize("name", MESSAGE_TYPES)
def test_message_schema_type_matches_file_name(name: str) -> None:
    assert load_schema(name)["properties"]["type"]["const"] == name


@pytest.mark.parametrize("name", INPUT_TYPES)
def test_input_envelope_is_open_and_data_is_strict(name: str) -> None:
    schema = load_schema(name)
    assert schema["additionalProperties"] is True
    event = example(name)
    event["partitionkey"] = "x"  # a CloudEvents extension attribute
    assert valid(name, event)
    if name != "clock.tick.v1":
        assert schema["properties"]["data"]["additionalProperties"] is False


@pytest.mark.parametrize("name", OUTPUT_TYPES)
def test_output_envelope_is_strict(name: str) -> None:
    assert load_schema(name)["additionalProperties"] is False
    assert load_schema(name)["properties"]["data"]["additionalProperties"] is False
    event = example(name)
    event["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    event["tracestate"] = "vendor=x"
    assert valid(name, event)
    event["partitionkey"] = "x"
    assert not valid(name, event)


# ------------------------------------------------------------------------ messages


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_is_valid(name: str) -> None:
    errors = [e.message for e in validator(name).iter_errors(example(name))]
    assert errors == []


GOOD: list[tuple[str, Mutation]] = [
    ("link.status.v1", _set("data", {"status": "up"})),
    ("link.status.v1", _set("data", {"status": "down", "latency_ms": None, "loss_pct": None})),
    ("link.status.v1", _set("data", {"status": "up", "latency_ms": 0, "loss_pct": 100})),
    ("link.status.v1", _set("time", "2024-05-01T16:30:00.123456789+08:00")),
    ("link.status.v1", _set("time", "2024-05-01T08:30:00.5-03:30")),
    (
        "link.status.v1",
        _set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ),
    ("link.status.v1", _set("dataschema", "https://example.org/link.status.v1.schema.json")),
    ("link.status.v1", _del("datacontenttype")),
    ("operator.override.v1", _set("data.action", "unpin")),
    ("manual.record.v1", _set("data", {"record_id": "1"})),
    ("reconcile.completed.v1", _del("data.incident")),
    ("clock.tick.v1", _set("data", None)),
    ("clock.tick.v1", _set("data", {})),
    ("clock.tick.v1", _set("subject", "__tick__")),
    (
        "failover.transition.v1",
        _set("data.operator", {"action": "release", "actor": "a", "role": "r", "reason": "ok"}),
    ),
    (
        "failover.escalate.v1",
        _set("data", {**SCOPE, "to": "office-head", "reason": "manual-too-long"}),
    ),
    ("deadletter", _set("key", "ektp")),
    (
        "failover.reconcile.v1",
        _set("data", {**SCOPE, "record_ids": ["SP-1"], "page": 2, "pages": 3}),
    ),
    ("deadletter", _both(_del("value"), _set("value_base64", "e29vcP8="))),
    ("failover.service.state.v1", _set("data.since", None)),
    ("failover.service.state.v1", _set("data.incident", None)),
    ("failover.service.state.v1", _set("data.last_operator", None)),
    (
        "failover.service.state.v1",
        _both(_set("data.last_reason", None), _set("data.last_reason_code", None)),
    ),
    ("failover.service.state.v1", _del("data.last_reason_code")),
    ("failover.service.state.v1", _set("data.queue", {"held": False})),
    ("failover.service.state.v1", _set("data.links", [])),
    (
        "failover.service.state.v1",
        _set("data.pin", {"state": "manual", "actor": "a", "role": "r", "reason": "hold it"}),
    ),
]


@pytest.mark.parametrize(("name", "mutate"), GOOD)
def test_good_variant_is_valid(name: str, mutate: Mutation) -> None:
    event = example(name)
    mutate(event)
    assert valid(name, event)


BAD: list[tuple[str, str, Mutation]] = [
    # envelope (inputs)
    ("link.status.v1", "wrong specversion", _set("specversion", "0.3")),
    ("link.status.v1", "specversion as number", _set("specversion", 1.0)),
    ("link.status.v1", "missing specversion", _del("specversion")),
    ("link.status.v1", "missing id", _del("id")),
    ("link.status.v1", "empty id", _set("id", "")),
    ("link.status.v1", "id too long", _set("id", "x" * 257)),
    ("link.status.v1", "empty source", _set("source", "")),
    ("link.status.v1", "wrong type", _set("type", "link.status.v2")),
    ("link.status.v1", "missing subject", _del("subject")),
    ("link.status.v1", "empty subject", _set("subject", "")),
    ("link.status.v1", "subject too long", _set("subject", "x" * 129)),
    ("link.status.v1", "missing time", _del("time")),
    ("link.status.v1", "time without offset", _set("time", "2024-05-01T08:30:00")),
    ("link.status.v1", "time with a space", _set("time", "2024-05-01 08:30:00Z")),
    ("link.status.v1", "time as a date", _set("time", "2024-05-01")),
    ("link.status.v1", "time month 13", _set("time", "2024-13-01T08:30:00Z")),
    ("link.status.v1", "time hour 24", _set("time", "2024-05-01T24:00:00Z")),
    ("link.status.v1", "time leap second", _set("time", "2016-12-31T23:59:60Z")),
    ("link.status.v1", "time 10 fraction digits", _set("time", "2024-05-01T08:30:00.1234567890Z")),
    ("link.status.v1", "time as epoch", _set("time", 1714552200)),
    ("link.status.v1", "time with trailing text", _set("time", "2024-05-01T08:30:00Zjunk")),
    ("link.status.v1", "non-ascii digits in time", _set("time", "٢٠٢٤-05-01T08:30:00Z")),
    ("link.status.v1", "wrong datacontenttype", _set("datacontenttype", "text/plain")),
    (
        "link.status.v1",
        "bad traceparent",
        _set("traceparent", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
    ),
    ("link.status.v1", "missing data", _del("data")),
    ("link.status.v1", "null data", _set("data", None)),
    # link.status data
    ("link.status.v1", "wrong status enum", _set("data.status", "broken")),
    ("link.status.v1", "missing status", _del("data.status")),
    ("link.status.v1", "negative latency", _set("data.latency_ms", -1)),
    ("link.status.v1", "latency as string", _set("data.latency_ms", "12")),
    ("link.status.v1", "latency as boolean", _set("data.latency_ms", True)),
    ("link.status.v1", "loss 101", _set("data.loss_pct", 101)),
    ("link.status.v1", "negative loss", _set("data.loss_pct", -0.5)),
    ("link.status.v1", "unknown data field", _set("data.jitter_ms", 3)),
    # operator.override
    ("operator.override.v1", "unknown action", _set("data.action", "reboot")),
    ("operator.maintenance.v1", "unknown action", _set("data.action", "reboot")),
    ("operator.maintenance.v1", "announce without an end", _del("data.end")),
    ("operator.maintenance.v1", "announce without a notice", _del("data.notice")),
    ("operator.maintenance.v1", "two scopes", _set("data.site", "disdukcapil-ambon")),
    ("operator.maintenance.v1", "cancel with a scope", _set("data.action", "cancel")),
    ("operator.maintenance.v1", "bad start", _set("data.start", "tomorrow")),
    ("operator.override.v1", "empty actor", _set("data.actor", "")),
    ("operator.override.v1", "role too long", _set("data.role", "r" * 65)),
    ("operator.override.v1", "reason too long", _set("data.reason", "r" * 1001)),
    ("operator.override.v1", "missing reason", _del("data.reason")),
    ("operator.override.v1", "missing subject", _del("subject")),
    ("operator.override.v1", "unknown data field", _set("data.ticket", "INC-1")),
    # manual.record
    ("manual.record.v1", "record id with a space", _set("data.record_id", "SP 1")),
    ("manual.record.v1", "record id starting with a dash", _set("data.record_id", "-1")),
    ("manual.record.v1", "record id too long", _set("data.record_id", "r" * 129)),
    ("manual.record.v1", "kind too long", _set("data.kind", "k" * 65)),
    ("manual.record.v1", "missing record id", _del("data.record_id")),
    ("manual.record.v1", "unknown data field", _set("data.clerk", "x")),
    # reconcile.completed
    ("reconcile.completed.v1", "empty record ids", _set("data.record_ids", [])),
    ("reconcile.completed.v1", "duplicate record ids", _set("data.record_ids", ["a", "a"])),
    (
        "reconcile.completed.v1",
        "too many record ids",
        _set("data.record_ids", [f"r{i}" for i in range(10001)]),
    ),
    (
        "reconcile.completed.v1",
        "record id not an identifier",
        _set("data.record_ids", ["ok", "not ok"]),
    ),
    ("reconcile.completed.v1", "empty incident", _set("data.incident", "")),
    ("reconcile.completed.v1", "unknown data field", _set("data.count", 2)),
    # clock.tick
    ("clock.tick.v1", "tick with data", _set("data", {"now": TIME})),
    ("clock.tick.v1", "tick with list data", _set("data", [])),
    ("clock.tick.v1", "tick with string data", _set("data", "")),
    ("clock.tick.v1", "tick with empty subject", _set("subject", "")),
    ("clock.tick.v1", "tick with wrong specversion", _set("specversion", "1.1")),
    ("clock.tick.v1", "tick without time", _del("time")),
    # failover.service.state
    ("failover.service.state.v1", "schema_version 2", _set("data.schema_version", 2)),
    ("failover.service.state.v1", "state not a state", _set("data.state", "offline")),
    ("failover.service.state.v1", "missing since", _del("data.since")),
    (
        "failover.service.state.v1",
        "since without offset",
        _set("data.since", "2024-05-01T08:30:00"),
    ),
    ("failover.service.state.v1", "missing pin", _del("data.pin")),
    (
        "failover.service.state.v1",
        "link health unknown",
        _set("data.links", [{"link": "x", "health": "up"}]),
    ),
    ("failover.service.state.v1", "negative open records", _set("data.manual.open", -1)),
    ("failover.service.state.v1", "held as string", _set("data.queue.held", "yes")),
    (
        "failover.service.state.v1",
        "pin without actor",
        _set("data.pin", {"state": "manual", "role": "r", "reason": "x"}),
    ),
    ("failover.service.state.v1", "operator without time", _del("data.last_operator.time")),
    ("failover.service.state.v1", "unknown data field", _set("data.colour", "red")),
    ("failover.service.state.v1", "wrong type", _set("type", "failover.transition.v1")),
    # outputs: envelope
    ("failover.transition.v1", "source outside /failover/", _set("source", "/probes/x")),
    ("failover.transition.v1", "missing datacontenttype", _del("datacontenttype")),
    ("failover.transition.v1", "missing subject", _del("subject")),
    ("failover.transition.v1", "subject not an identifier", _set("subject", "e ktp")),
    ("failover.transition.v1", "dataschema on an output", _set("dataschema", "x")),
    ("failover.notice.v1", "bad time", _set("time", "yesterday")),
    # outputs: data
    ("failover.transition.v1", "unknown state", _set("data.to", "offline")),
    ("failover.transition.v1", "unknown health", _set("data.health", "ok")),
    ("failover.transition.v1", "missing cause", _del("data.cause")),
    ("failover.transition.v1", "missing detail", _del("data.detail")),
    ("failover.transition.v1", "unknown data field", _set("data.extra", 1)),
    (
        "failover.transition.v1",
        "operator without actor",
        _set("data.operator", {"action": "pin", "role": "r", "reason": "x"}),
    ),
    (
        "failover.transition.v1",
        "operator with unknown action",
        _set("data.operator", {"action": "x", "actor": "a", "role": "r", "reason": "x"}),
    ),
    ("failover.notice.v1", "unknown audience", _set("data.audience", "everyone")),
    ("failover.notice.v1", "text without en", _del("data.text.en")),
    ("failover.notice.v1", "text with another language", _set("data.text.fr", "Service suspendu.")),
    ("failover.notice.v1", "empty text", _set("data.text.id", "")),
    ("failover.notice.v1", "missing template", _del("data.template")),
    ("failover.queue.hold.v1", "missing queue", _del("data.queue")),
    ("failover.queue.hold.v1", "missing incident", _del("data.incident")),
    ("failover.queue.release.v1", "queue not an identifier", _set("data.queue", "")),
    ("failover.queue.release.v1", "wrong type", _set("type", "failover.queue.hold.v1")),
    ("failover.reconcile.v1", "empty record ids", _set("data.record_ids", [])),
    ("failover.reconcile.v1", "page without pages", _set("data.page", 1)),
    ("failover.reconcile.v1", "pages without page", _set("data.pages", 2)),
    (
        "failover.reconcile.v1",
        "page 0",
        _set("data", {**SCOPE, "record_ids": ["a"], "page": 0, "pages": 2}),
    ),
    (
        "failover.reconcile.v1",
        "more ids than a page holds",
        _set("data.record_ids", [f"r{i}" for i in range(1001)]),
    ),
    ("failover.reconcile.v1", "duplicate record ids", _set("data.record_ids", ["a", "a"])),
    ("failover.escalate.v1", "unknown target", _set("data.to", "mayor")),
    ("failover.escalate.v1", "provider target without provider", _del("data.provider")),
    ("failover.escalate.v1", "missing reason", _del("data.reason")),
    # deadletter
    ("deadletter", "wrong topic", _set("topic", "link-status")),
    ("deadletter", "line 0", _set("source.line", 0)),
    ("deadletter", "line as string", _set("source.line", "3")),
    ("deadletter", "key as number", _set("key", 5)),
    ("deadletter", "missing key", _del("key")),
    ("deadletter", "missing value", _del("value")),
    ("deadletter", "value not a string", _set("value", {"a": 1})),
    ("deadletter", "both value and value_base64", _set("value_base64", "e29vcHM=")),
    ("deadletter", "value_base64 not base64", _both(_del("value"), _set("value_base64", "e2=9"))),
    ("deadletter", "unknown field", _set("partition", 0)),
    ("deadletter", "unknown source field", _set("source.offset", 0)),
]


@pytest.mark.parametrize(("name", "why", "mutate"), BAD, ids=[f"{n}:{w}" for n, w, _ in BAD])
def test_bad_variant_is_invalid(name: str, why: str, mutate: Mutation) -> None:
    event = example(name)
    mutate(event)
    assert not valid(name, event), why


# ------------------------------------------------------------------------ topology

TOPOLOGY_YAML = (Path(__file__).parent / "data" / "design-topology.yaml").read_text()


def topology() -> dict[str, Any]:
    doc = yaml.safe_load(TOPOLOGY_YAML)
    assert isinstance(doc, dict)
    return doc


def test_design_topology_is_valid() -> None:
    errors = [e.message for e in validator("topology").iter_errors(topology())]
    assert errors == []


GOOD_TOPOLOGY: list[tuple[str, Mutation]] = [
    ("no policy", _del("policy")),
    ("site head", _set("sites.disdukcapil-ambon.head", "Kepala Dinas")),
    (
        "link policy",
        _set(
            "links.backup-4g.policy",
            {
                "stale_after": "90s",
                "latency_degraded_ms": 1500,
                "loss_degraded_pct": 10.5,
                "flap_window": "10m",
                "flap_threshold": 4,
                "flap_quiet": "15m",
            },
        ),
    ),
    (
        "other duration keys",
        _set("policy", dict.fromkeys(("flap_window", "flap_quiet", "dedup_horizon"), "1d")),
    ),
    ("millisecond duration", _set("policy.degrade_after", "1500ms")),
    (
        "mixed requirements",
        _set("services.ektp.requires", ["backup-4g", ["telkom-sto-pattimura", "backup-4g"]]),
    ),
    ("UTC", _set("sites.disdukcapil-ambon.timezone", "UTC")),
    ("Etc zone", _set("sites.disdukcapil-ambon.timezone", "Etc/GMT-9")),
]


@pytest.mark.parametrize(("why", "mutate"), GOOD_TOPOLOGY, ids=[w for w, _ in GOOD_TOPOLOGY])
def test_good_topology_variant_is_valid(why: str, mutate: Mutation) -> None:
    doc = topology()
    mutate(doc)
    errors = [e.message for e in validator("topology").iter_errors(doc)]
    assert errors == [], why


BAD_TOPOLOGY: list[tuple[str, Mutation]] = [
    ("duration in words", _set("policy.manual_after", "5 minutes")),
    ("duration without unit", _set("policy.manual_after", "300")),
    ("duration as number", _set("policy.manual_after", 300)),
    ("duration with fraction", _set("policy.manual_after", "1.5h")),
    ("unknown policy key", _set("policy.manual_before", "5m")),
    ("unknown service policy key", _set("services.ektp.policy", {"foo": "1s"})),
    ("service-level key on a link", _set("links.backup-4g.policy", {"manual_after": "1m"})),
    ("latency threshold 0", _set("policy.latency_degraded_ms", 0)),
    ("loss threshold 101", _set("policy.loss_degraded_pct", 101)),
    ("flap threshold 1", _set("policy.flap_threshold", 1)),
    ("flap threshold not integer", _set("policy.flap_threshold", 2.5)),
    ("service without site", _del("services.ektp.site")),
    ("service without name", _del("services.ektp.name")),
    ("name without en", _del("services.ektp.name.en")),
    ("name as a string", _set("services.ektp.name", "KTP")),
    ("requires empty", _set("services.ektp.requires", [])),
    ("requires an empty group", _set("services.ektp.requires", [[]])),
    (
        "requires a duplicate in a group",
        _set("services.ektp.requires", [["backup-4g", "backup-4g"]]),
    ),
    ("requires a bad link id", _set("services.ektp.requires", ["bad link"])),
    ("requires nested groups", _set("services.ektp.requires", [[["backup-4g"]]])),
    ("requires missing", _del("services.ektp.requires")),
    ("offline not boolean", _set("services.ektp.offline", "no")),
    ("offline missing", _del("services.ektp.offline")),
    ("queue not an identifier", _set("services.ektp.queue", "")),
    ("unknown service key", _set("services.ektp.owner", "x")),
    ("site without timezone", _del("sites.disdukcapil-ambon.timezone")),
    ("timezone with a space", _set("sites.disdukcapil-ambon.timezone", "Asia Jayapura")),
    ("timezone as offset", _set("sites.disdukcapil-ambon.timezone", "+09:00")),
    ("unknown site key", _set("sites.disdukcapil-ambon.address", "Jl. x")),
    ("link without provider", _del("links.backup-4g.provider")),
    ("unknown link key", _set("links.backup-4g.bandwidth", "10M")),
    ("bad site id", _set("sites.-bad", {"name": "x", "timezone": "UTC"})),
    (
        "bad service id",
        _set(
            "services.e ktp",
            {"site": "s", "name": {"id": "a", "en": "b"}, "requires": ["x"], "offline": True},
        ),
    ),
    ("no sites", _set("sites", {})),
    ("no links", _set("links", {})),
    ("no services", _set("services", {})),
    ("missing services", _del("services")),
    ("unknown top-level key", _set("version", 1)),
]


@pytest.mark.parametrize(("why", "mutate"), BAD_TOPOLOGY, ids=[w for w, _ in BAD_TOPOLOGY])
def test_bad_topology_variant_is_invalid(why: str, mutate: Mutation) -> None:
    doc = topology()
    mutate(doc)
    assert not valid("topology", doc), why


def test_every_iana_zone_matches_the_timezone_pattern() -> None:
    zones = zoneinfo.available_timezones()
    if not zones:
        pytest.skip("no time zone database")
    site = {"name": "x", "timezone": ""}
    doc = topology()
    doc["sites"] = {"s": site}
    bad = []
    for zone in zones:
        site["timezone"] = zone
        if not valid("topology", doc):
            bad.append(zone)
    assert bad == []


# ------------------------------------------------------------------------ AsyncAPI


@functools.cache
def asyncapi() -> dict[str, Any]:
    doc = yaml.safe_load(resources.files("schemas").joinpath(ASYNCAPI).read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def _refs(node: Json) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _pointer(doc: Json, ref: str) -> Json:
    assert ref.startswith("#/"), ref
    node = doc
    for token in ref[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def _deref(node: Json) -> Json:
    while isinstance(node, dict) and "$ref" in node and node["$ref"].startswith("#/"):
        node = _pointer(asyncapi(), node["$ref"])
    return node


def _message(msg: dict[str, Any]) -> dict[str, Any]:
    """A message with its traits applied (message fields win)."""
    merged: dict[str, Any] = {}
    for trait in msg.get("traits", []):
        merged.update(_deref(trait))
    merged.update({k: v for k, v in msg.items() if k != "traits"})
    return merged


def test_asyncapi_header() -> None:
    doc = asyncapi()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] == "Failover workflow engine"
    assert doc["info"]["version"] == "1.0.0"
    assert doc["servers"]["kafka"]["host"] == "127.0.0.1:9092"
    assert doc["servers"]["kafka"]["protocol"] == "kafka"


def test_asyncapi_refs_resolve() -> None:
    doc = asyncapi()
    refs = list(_refs(doc))
    assert refs
    for ref in refs:
        if ref.startswith("#"):
            _pointer(doc, ref)  # raises if dangling
        else:
            target = ref.split("#", 1)[0]
            assert (SCHEMA_DIR / target).is_file(), f"{ref} does not exist"


TOPICS = {
    "link-status": ("receive", {"link.status.v1", "clock.tick.v1"}),
    "operator-overrides": (
        "receive",
        {"operator.override.v1", "operator.maintenance.v1", "clock.tick.v1"},
    ),
    "service-feedback": (
        "receive",
        {"manual.record.v1", "reconcile.completed.v1", "clock.tick.v1"},
    ),
    "operator-audit": ("send", {"failover.audit.v1"}),
    "failover-commands": (
        "send",
        {
            "failover.notice.v1",
            "failover.queue.hold.v1",
            "failover.queue.release.v1",
            "failover.reconcile.v1",
            "failover.escalate.v1",
        },
    ),
    "service-transitions": ("send", {"failover.transition.v1"}),
    "service-state": ("send", {"failover.service.state.v1"}),
    "failover-deadletter": ("send", {"deadletter"}),
}


def test_asyncapi_channels_operations_and_messages() -> None:
    doc = asyncapi()
    by_address = {ch["address"]: ch for ch in doc["channels"].values()}
    assert set(by_address) == set(TOPICS)
    seen_payloads: set[str] = set()
    for address, (action, types) in TOPICS.items():
        channel = by_address[address]
        assert channel["bindings"]["kafka"]["topic"] == address
        messages = {name: _message(_deref(m)) for name, m in channel["messages"].items()}
        assert {m["name"] for m in messages.values()} == types
        ops = [op for op in doc["operations"].values() if _deref(op["channel"]) is channel]
        assert len(ops) == 1, address
        assert ops[0]["action"] == action
        assert {_message(_deref(m))["name"] for m in ops[0]["messages"]} == types
        for msg in messages.values():
            assert "traceparent" in _deref(msg["headers"])["properties"], msg["name"]
            assert "key" in msg["bindings"]["kafka"], msg["name"]
            ref = _deref(msg["payload"]).get("$ref") if msg["name"] != "deadletter" else None
            if ref is not None:
                assert ref == f"./{msg['name']}.schema.json"
                seen_payloads.add(msg["name"])
    assert seen_payloads == set(MESSAGE_TYPES)


def test_asyncapi_deadletter_headers() -> None:
    doc = asyncapi()
    channel = next(ch for ch in doc["channels"].values() if ch["address"] == "failover-deadletter")
    (msg,) = (_message(_deref(m)) for m in channel["messages"].values())
    headers = set(msg["headers"]["properties"])
    assert {
        "failover-reason",
        "failover-source-topic",
        "failover-source-partition",
        "failover-source-offset",
    } <= headers


def test_asyncapi_kafka_bindings_are_what_the_worker_creates() -> None:
    """Partitions and topic settings in the AsyncAPI document are streams/topics.py's, for
    the default settings; inputs are read by the engine's group; a secured server says how."""
    from streams.config import Settings
    from streams.topics import topic_specs

    settings = Settings()
    doc = asyncapi()
    by_address = {ch["address"]: ch for ch in doc["channels"].values()}
    for spec in topic_specs(settings):
        internal = (settings.topic_changes, settings.topic_repartition,
                    settings.topic_service_repartition)  # fmt: skip
        if spec.name in internal:
            assert spec.name not in by_address
            continue
        binding = by_address[spec.name]["bindings"]["kafka"]
        assert binding["partitions"] == spec.partitions, spec.name
        config = binding["topicConfiguration"]
        want = dict(spec.config)
        assert config.pop("cleanup.policy") == [want.pop("cleanup.policy", "delete")], spec.name
        assert {k: str(v) for k, v in config.items()} == want, spec.name
    for op in doc["operations"].values():
        if op["action"] == "receive":
            group = op["bindings"]["kafka"]["groupId"]
            assert group["enum"] == [settings.app_id]
    secure = doc["servers"]["kafkaSecure"]
    assert secure["protocol"] == "kafka-secure"
    schemes = {_deref(s)["type"] for s in secure["security"]}
    assert schemes == {"scramSha512", "scramSha256", "X509"}
    assert "read_committed" in doc["info"]["description"]
