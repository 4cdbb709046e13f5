"""``failover export``'s merge (no broker): partitions' records into one replay file.

The property: route the demo file onto partitions as the engine's topics hold it (ticks on
every partition), shuffle the partitions' interleaving any way, and the merge replays to
exactly what the demo file replays to. The Kafka test (tests/kafka/test_export.py) runs the
whole path against a worker.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from streams.cli import app
from streams.export import KAFKA_ONLY, InputRecord, describe, merge
from streams.topics import partition_for
from tests.kafka.workers import DEMO_EVENTS, DEMO_TOPOLOGY
from workflows.records import Emitted
from workflows.replay import read_lines, replay
from workflows.timeutil import parse_time
from workflows.topology import Topology

TOPICS = ("link-status", "operator-overrides", "service-feedback")
PARTITIONS = 3


def _routed(lines: list[bytes]) -> list[InputRecord]:
    """Each line where the engine's topics hold it, in order per partition."""
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for raw in lines:
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            event = {}
        type_ = event.get("type") if isinstance(event, dict) else None
        if type_ == "clock.tick.v1":
            places = [(t, p) for t in TOPICS for p in range(PARTITIONS)]
        else:
            topic = {
                "operator.override.v1": TOPICS[1],
                "manual.record.v1": TOPICS[2],
                "reconcile.completed.v1": TOPICS[2],
            }.get(str(type_), TOPICS[0])
            key = str(event.get("subject", "garbage")) if isinstance(event, dict) else "garbage"
            places = [(topic, partition_for(key, PARTITIONS))]
        for place in places:
            offset = offsets.get(place, 0)
            offsets[place] = offset + 1
            out.append(InputRecord(place[0], place[1], offset, None, raw))
    return out


def _outputs(lines: list[bytes]) -> tuple[dict[tuple[str, str], list[bytes]], Counter[bytes]]:
    """Per (topic, key) the events in order, and the dead letters' reasons and bytes: what
    the engine's topics hold (order across keys is not defined on Kafka)."""
    per_key: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    dead: Counter[bytes] = Counter()
    for record in replay(Topology.load(DEMO_TOPOLOGY), enumerate(lines, 1), "x"):
        if isinstance(record, Emitted):
            per_key[(record.topic, record.key)].append(orjson.dumps(record.event))
        else:
            dead[record.reason.encode() + b"|" + record.raw] += 1
    return dict(per_key), dead


DEMO = [raw for _, raw in read_lines(DEMO_EVENTS)]
EXPECTED = _outputs(DEMO)


@settings(max_examples=3, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_any_interleaving_of_the_partitions_replays_as_the_file(seed: int) -> None:
    records = _routed(DEMO)
    # The merge takes the partitions in any order: offsets order each.
    random.Random(seed).shuffle(records)
    merged = merge(records)
    assert merged.pending == 0
    assert merged.refused == {}
    assert _outputs(merged.lines) == EXPECTED


def _tick(time: str) -> bytes:
    return orjson.dumps(
        {"specversion": "1.0", "id": f"tick/{time}", "source": "/t", "type": "clock.tick.v1",
         "time": time, "data": {}}
    )  # fmt: skip


def _reading(ident: str, time: str) -> bytes:
    return orjson.dumps(
        {"specversion": "1.0", "id": ident, "source": "/t", "type": "link.status.v1",
         "time": time, "subject": "backup-4g", "data": {"status": "up"}}
    )  # fmt: skip


def test_each_input_follows_the_last_tick_of_its_own_partition() -> None:
    t1, t2 = _tick("2019-02-05T00:01:00Z"), _tick("2019-02-05T00:02:00Z")
    early, a, b = (_reading(i, "2019-02-05T00:00:30Z") for i in ("early", "a", "b"))
    records = [
        InputRecord("x", 0, 0, None, early),
        InputRecord("x", 0, 1, None, t1),
        InputRecord("x", 0, 2, None, t2),
        InputRecord("x", 0, 3, None, a),  # after t2 on its partition: after t2 in the file
        InputRecord("x", 1, 0, None, t1),
        InputRecord("x", 1, 1, None, b),  # after t1 only
        InputRecord("x", 1, 2, None, t2),
        InputRecord("x", 1, 3, None, _tick("2019-02-05T00:03:00Z")),
    ]
    merged = merge(records)
    assert merged.lines == [early, t1, b, t2, a, _tick("2019-02-05T00:03:00Z")]
    assert (merged.ticks, merged.inputs, merged.pending) == (3, 3, 0)


def test_inputs_after_the_last_tick_and_kafka_refusals_are_left_out() -> None:
    t1 = _tick("2019-02-05T00:01:00Z")
    late = _reading("late", "2019-02-05T00:01:30Z")
    forged = _tick("2019-02-09T00:00:00Z")
    records = [
        InputRecord("x", 0, 0, None, t1),
        InputRecord("x", 0, 1, None, forged),
        InputRecord("x", 0, 2, None, late),
    ]
    merged = merge(records, {("x", 0, 1): "unauthenticated-tick"})
    assert merged.lines == [t1]
    assert merged.refused == {"unauthenticated-tick": 1}
    assert merged.pending == 1
    text = "\n".join(describe(merged))
    assert "1 refused by the engine on Kafka only (unauthenticated-tick)" in text
    assert "1 inputs after the last tick kept" in text
    # A refusal replay would give too (a schema error) stays in the file: replay gives it.
    kept = merge(records[:2], {("x", 0, 1): "schema"})
    assert kept.lines == [t1, forged]
    assert "schema" not in KAFKA_ONLY


def _us(time: str) -> int:
    return parse_time(time)


def test_since_and_until_cut_at_ticks() -> None:
    ticks = [_tick(f"2019-02-05T00:0{m}:00Z") for m in range(1, 6)]
    reads = [_reading(f"r{m}", f"2019-02-05T00:0{m}:30Z") for m in range(1, 6)]
    records = [
        InputRecord("x", 0, i, None, raw)
        for i, raw in enumerate(x for pair in zip(ticks, reads, strict=True) for x in pair)
    ]
    merged = merge(
        records,
        since=_us("2019-02-05T00:02:10Z"),
        until=_us("2019-02-05T00:04:59Z"),
    )
    assert merged.lines == [ticks[1], reads[1], ticks[2], reads[2], ticks[3]]
    assert merged.pending == 2  # r4 and r5 wait for ticks the file does not have
    assert merged.outside == 3  # the ticks at 00:01 and 00:05, r1


def test_binary_mode_inputs_are_written_structured() -> None:
    t1 = _tick("2019-02-05T00:01:00Z")
    headers = (
        ("ce_specversion", b"1.0"),
        ("ce_id", b"bin/1"),
        ("ce_source", b"/t"),
        ("ce_type", b"link.status.v1"),
        ("ce_time", b"2019-02-05T00:00:10Z"),
        ("ce_subject", b"backup-4g"),
        ("content-type", b"application/json"),
    )
    bad = (("ce_Type", b"link.status.v1"),)
    records = [
        InputRecord("x", 0, 0, b"backup-4g", b'{"status":"down"}', headers),
        InputRecord("x", 0, 1, b"backup-4g", b"{}", bad),
        InputRecord("x", 0, 2, None, t1),
    ]
    merged = merge(records)
    assert orjson.loads(merged.lines[0])["data"] == {"status": "down"}
    assert orjson.loads(merged.lines[0])["id"] == "bin/1"
    assert merged.lines[1:] == [t1]
    assert merged.unreadable == 1


def test_cli_refuses_a_bad_time_and_an_unreachable_broker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--since", "yesterday"])
    assert result.exit_code == 2
    assert "--since 'yesterday': not an RFC 3339 time" in result.output
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    out = tmp_path / "never.jsonl"
    result = runner.invoke(app, ["export", "--out", str(out), "--timeout", "5"])
    assert result.exit_code == 2
    assert "127.0.0.1:1" in result.output
    assert not out.exists()
