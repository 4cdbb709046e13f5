"""The examples' events are what the engine takes: a manual record and a reconcile report
built by examples/manual_record.py and examples/reconcile.py walk a service through an
incident in the core; the dead-letter reader shows a dead letter inert. The Kafka test
(tests/kafka/test_examples.py) runs every example as a program against a worker."""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import orjson

from tests.helpers import EPOCH, make_topology, override, path, run, service, tick
from workflows.records import DeadLetter, Emitted

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOPOLOGY = make_topology({"letters": service(["a"])})


def test_a_manual_record_and_its_reconciliation_close_an_incident() -> None:
    manual_record = example("manual_record").manual_record
    reconciled = example("reconcile").reconciled
    events = [
        tick(0),
        override("letters", 5, "force_manual"),
        tick(10),
        manual_record("letters", "REC-1", "legalisation", "on paper", EPOCH + timedelta(0, 15)),
        tick(20),
        override("letters", 25, "release"),
        tick(30),
        reconciled("letters", ["REC-1", "REC-1"], None, EPOCH + timedelta(0, 35)),
        tick(40),
    ]
    out = run(TOPOLOGY, events)
    assert not [r for r in out if isinstance(r, DeadLetter)]
    assert path(out, "letters") == ["online", "manual", "restored", "online"]
    (command,) = [
        r.event for r in out if isinstance(r, Emitted) and r.event["type"].endswith("reconcile.v1")
    ]
    assert command["data"]["record_ids"] == ["REC-1"]


def test_a_manual_record_has_only_the_fields_given() -> None:
    event = orjson.loads(example("manual_record").manual_record("s", "R1"))
    assert event["data"] == {"record_id": "R1"}
    assert event["subject"] == "s"
    assert event["time"].endswith("Z")


def test_the_dead_letter_reader_shows_a_dead_letter_inert() -> None:
    describe = example("deadletters").describe
    line = describe(
        b"ektp",
        b'{"x": "\x1b[2Jgone"}',
        [
            ("failover-reason", b"schema: $.data: bad"),
            ("failover-source-topic", b"link-status"),
            ("failover-source-partition", b"2"),
            ("failover-source-offset", b"41"),
        ],
    )
    assert line.startswith("schema: $.data: bad | link-status[2]@41 | key ektp | ")
    assert "\x1b" not in line
    assert "\\x1b[2Jgone" in line
    timers = describe(None, b"", [("failover-reason", b"internal-error: x")])
    assert "(no input record) | key -" in timers
