"""A fuzzer over ``Engine.feed``: arbitrary bytes, and mutations of valid events of every
input type, never make the engine raise; each input is taken (counted by its type) or
dead-lettered with a known reason code, and none reaches ``internal-error`` (a crash of the
core that isolation caught: a bug to fix, which this test then names).

A few seconds by default; ``FAILOVER_FUZZ_EXAMPLES=20000`` (say) searches longer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workflows.engine import Engine
from workflows.inputs import decode
from workflows.links import HealthChange
from workflows.records import DeadLetter
from workflows.replay import encode, read_lines
from workflows.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = Topology.load(ROOT / "streams" / "demo" / "ambon.yaml")
LINES = [raw for _, raw in read_lines(ROOT / "streams" / "demo" / "ambon-events.jsonl")]

#: Every reason code a dead letter of the engine may carry, but ``internal-error``.
KNOWN = {
    "too-large", "not-json", "unknown-type", "schema", "bad-time", "key-mismatch",
    "unknown-link", "unknown-service", "too-old", "not-applicable", "unknown-records",
    "future-time", "dedup-overflow", "unauthenticated", "forbidden", "stale-signature",
    "replayed",
}  # fmt: skip
EXAMPLES = int(os.environ.get("FAILOVER_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _valid(raw: bytes) -> dict[str, Any] | None:
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


#: One valid event of each input type, several of the rarer ones.
TEMPLATES: list[bytes] = []
for _type in ("link.status.v1", "operator.override.v1", "manual.record.v1",
              "reconcile.completed.v1", "clock.tick.v1"):  # fmt: skip
    TEMPLATES += [r for r in LINES if (_valid(r) or {}).get("type") == _type][:3]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=3),
    max_leaves=6,
)  # fmt: skip
# Times at the very ends of the range the schema admits (year 9999, year 1, the largest
# offsets) are in: the core refuses what it cannot compute with (`bad-time`) instead of raising.
times = st.sampled_from([
    "2019-02-05T00:00:00+14:00", "1970-01-01T00:00:00Z",
    "2019-02-05T00:00:00.123456789Z", "2019-02-05T24:00:00Z", "2019-13-01T00:00:00Z", "",
    "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59",
    "8999-12-31T23:59:59Z",
])  # fmt: skip


@st.composite
def structured(draw: st.DrawFn) -> bytes:
    """A valid event with one field (top level or in ``data``) replaced or removed."""
    event = orjson.loads(draw(st.sampled_from(TEMPLATES)))
    target = event
    if isinstance(event.get("data"), dict) and event["data"] and draw(st.booleans()):
        target = event["data"]
    key = draw(st.sampled_from(sorted(target)))
    action = draw(st.sampled_from(["replace", "time", "remove", "subject"]))
    if action == "remove":
        del target[key]
    elif action == "time":
        event["time"] = draw(times)
    elif action == "subject":
        event["subject"] = draw(st.sampled_from(sorted(TOPOLOGY.services) + sorted(TOPOLOGY.links)))
    else:
        target[key] = draw(json_values)
    # The standard library's encoder: it writes integers past 64 bits, and NaN and Infinity
    # (not JSON), which orjson refuses to write; the engine must take those bytes too.
    return json.dumps(event).encode()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid event's bytes with a few bytes flipped, inserted or deleted."""
    raw = bytearray(draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip":
            raw[at] = draw(st.integers(0, 255))
        elif op == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif len(raw) > 1:
            del raw[at]
    return bytes(raw)


inputs = st.one_of(st.binary(max_size=200), mutated(), structured(), st.sampled_from(TEMPLATES))


def _check(batch: list[bytes]) -> None:
    engine = Engine(TOPOLOGY)
    for raw in LINES[:300]:  # some state first: links seen, a tick applied
        engine.feed(raw)
    engine.drain()
    for raw in batch:
        before = sum(engine.counts.values())
        engine.feed(raw, None, "fuzz")
        assert sum(engine.counts.values()) > before, raw  # taken, or dead-lettered
    for raw in LINES[300:400]:  # ticks after: queued inputs are applied
        engine.feed(raw)
    engine.finish()
    for record in engine.drain():
        if isinstance(record, DeadLetter):
            code = record.reason.split(":", 1)[0]
            assert code in KNOWN, (record.reason, record.raw)


@FUZZ
@given(st.lists(inputs, min_size=1, max_size=6))
def test_fed_anything_the_engine_never_raises(batch: list[bytes]) -> None:
    _check(batch)


@FUZZ
@given(st.binary(max_size=2000))
def test_raw_bytes_never_raise(raw: bytes) -> None:
    _check([raw])


@FUZZ
@given(st.lists(inputs, min_size=1, max_size=6))
def test_fed_its_decoded_answer_the_engine_does_the_same(batch: list[bytes]) -> None:
    """Traced replay decodes each line once and hands the engine the answer
    (``Engine.feed(..., decoded)``): the outputs, the counts and the link health changes are
    those of feeding the bytes, whichever path (the readings fast path or decode) would
    have read them."""
    changes: tuple[list[HealthChange], list[HealthChange]] = ([], [])
    plain = Engine(TOPOLOGY, on_health=changes[0].append)
    given_answer = Engine(TOPOLOGY, on_health=changes[1].append)
    lines = [*LINES[:300], *batch, *LINES[300:400]]
    for number, raw in enumerate(lines):
        plain.feed(raw, None, number)
        given_answer.feed(raw, None, number, decode(raw, None, given_answer.max_event_bytes))
    plain.finish()
    given_answer.finish()
    assert [encode(r) for r in given_answer.drain()] == [encode(r) for r in plain.drain()]
    assert given_answer.counts == plain.counts
    assert changes[1] == changes[0]
    assert changes[0]  # the demo's first lines do change links' health
