"""The readings fast path (``workflows/readings.py``) against ``decode``, the judge.

The fast path may refuse anything (``decode`` then decides), but what it accepts must be what
``decode`` accepts, read to the same values of the same types: otherwise a reading's fate
would depend on which path took it.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from workflows.engine import Engine
from workflows.inputs import MAX_EVENT_BYTES, decode
from workflows.readings import read_status

from .helpers import EPOCH, make_topology, probe, raw, service, tick


def micros(seconds: int) -> int:
    return int(EPOCH.timestamp() + seconds) * 1_000_000


def judged(
    data: bytes,
    key: str | None = None,
    max_bytes: int = MAX_EVENT_BYTES,
    not_after: int | None = None,
) -> Any:
    """What ``decode`` makes of a reading, in the fast path's shape, or its reason."""
    decoded = decode(data, key, max_bytes, not_after)
    if isinstance(decoded, str):
        return decoded
    event, time = decoded
    if event["type"] != "link.status.v1":
        return f"not a reading: {event['type']}"
    d = event["data"]
    return (event["subject"], event["id"], time, d["status"], d.get("latency_ms"),
            d.get("loss_pct"))  # fmt: skip


def typed(value: Any) -> Any:
    return value if not isinstance(value, tuple) else [(type(v), v) for v in value]


def agrees(
    data: bytes,
    key: str | None = None,
    max_bytes: int = MAX_EVENT_BYTES,
    not_after: int | None = None,
) -> Any:
    """Check the fast path against ``decode`` on one message (under the Kafka path's bound
    ``not_after``, if given); return the fast answer."""
    fast = read_status(data, key, max_bytes, not_after)
    if fast is not None:
        assert typed(fast) == typed(judged(data, key, max_bytes, not_after)), data
    return fast


VALID = raw(probe("site-a.fiber", 10, "degraded", 12.5, 0.0))

# Values on both sides of every constraint in the schema, and of the JSON types.
ODD_TEXT = st.sampled_from(["", "a" * 128, "a" * 129, "a" * 256, "a" * 257, "a" * 512,
                            "a" * 513, "é" * 128, "é" * 129, "\n", "\u0000"])  # fmt: skip
TEXT = st.text(min_size=1, max_size=8) | ODD_TEXT
ODD_TIMES = st.sampled_from(
    [
        "2019-02-05T10:00:01Z\n",  # Python's $ would match before the newline
        "2019-02-30T10:00:01Z",  # matches the pattern, is no date
        "2019-02-05T10:00:01",  # no zone
        "2019-02-05 10:00:01Z",  # datetime.fromisoformat takes these three; RFC 3339 does not
        "2019-02-05T10:00:01+0900",
        "20190205T100001Z",
        "2019-02-05T24:00:00Z",
        "2019-02-05T10:00:01.1234567890Z",
        "2019-02-05t10:00:01z",
        "",
        # The schema admits them; the engine's range does not (1970 to before 9000).
        "9999-12-31T23:59:59-23:59",
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00+23:59",
        "1969-12-31T23:59:59.999999Z",
        "9000-01-01T00:00:00Z",
        # The ends of the range, accepted.
        "1970-01-01T00:00:00Z",
        "8999-12-31T23:59:59.999999Z",
    ]
)
TIMES = st.sampled_from(["2019-02-05T10:00:01Z", "2019-02-05T10:00:01.123456789+09:00"])
NUMBERS = st.one_of(
    st.none(),
    st.integers(min_value=-3, max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -0.0, -1e-9, 100, 100.0, 100.5, 101, 2**63, 2**64, True, "1", [1]]),
)
ODD = st.one_of(ODD_TEXT, NUMBERS, st.booleans(), st.builds(dict), st.just(None))


@st.composite
def readings(draw: st.DrawFn) -> dict[str, Any]:
    """A valid reading with at most two things changed: a field made odd or invalid, a field
    dropped, an unknown field or an extension attribute added."""
    data = {
        "status": draw(st.sampled_from(["up", "degraded", "down"])),
        "latency_ms": draw(st.none() | st.integers(0, 10**6) | st.floats(0, 1e6)),
        "loss_pct": draw(st.none() | st.integers(0, 100) | st.floats(0, 100)),
    }
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": draw(st.text(min_size=1, max_size=8)),
        "source": draw(st.text(min_size=1, max_size=8)),
        "type": "link.status.v1",
        "time": draw(TIMES),
        "subject": draw(st.sampled_from(["site-a.fiber", "site-a.4g"])),
        "data": data,
    }
    odd = {
        "specversion": st.sampled_from(["1.1", 1.0, None]),
        "id": TEXT,
        "source": TEXT,
        "type": st.sampled_from(["clock.tick.v1", "x", None]),
        "time": ODD_TIMES,
        "subject": TEXT,
        "data": ODD,
        "data.status": st.sampled_from(["UP", "", None, 1]),
        "data.latency_ms": NUMBERS,
        "data.loss_pct": NUMBERS,
    }
    for _ in range(draw(st.integers(0, 2))):
        change = draw(st.sampled_from(["odd", "drop", "unknown", "extension"]))
        name = draw(st.sampled_from(sorted(odd)))
        where, field = (data, name[5:]) if name.startswith("data.") else (event, name)
        if change == "odd":
            where[field] = draw(odd[name])
        elif change == "drop":
            where.pop(field, None)
        elif change == "unknown":
            where[draw(st.sampled_from(["extra", "Status", "zz"]))] = draw(ODD)
        else:
            attribute = draw(st.sampled_from(["traceparent", "datacontenttype", "dataschema"]))
            event[attribute] = draw(
                st.sampled_from(
                    ["00-" + "a" * 32 + "-" + "b" * 16 + "-01", "application/json", "x", "", 1]
                )
            )
    return event


#: ``not_after`` bounds around the valid readings' times (2019-02-05T10:00:01Z, and the same
#: instant .123456789 at +09:00): none, on either side of each, and far away.
BOUNDS = st.sampled_from([None, 0, micros(36001) - 1, micros(36001), micros(36001) + 1,
                          micros(36001 - 9 * 3600) + 123456, micros(36001) * 2])  # fmt: skip


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=readings(), keyed=st.sampled_from([None, "subject", "site-a.4g"]), not_after=BOUNDS)
def test_what_the_fast_path_accepts_decode_accepts_alike(
    event: dict[str, Any], keyed: str | None, not_after: int | None
) -> None:
    # json.dumps, not orjson: it writes integers past 64 bits, which orjson reads as floats.
    data = json.dumps(event, ensure_ascii=False).encode()
    key = event.get("subject") if keyed == "subject" else keyed
    agrees(data, key if isinstance(key, str) or key is None else None, not_after=not_after)


@given(data=st.binary(max_size=40))
@example(data=VALID[:-1])
@example(data=VALID + b"x")
def test_bytes_that_are_no_reading_are_left_to_decode(data: bytes) -> None:
    assert agrees(data) is None or data == VALID


def test_a_plain_reading_takes_the_fast_path() -> None:
    """The property tests above would pass if the fast path refused everything."""
    assert agrees(VALID) == ("site-a.fiber", "probe/site-a.fiber/10", micros(10), "degraded",
                             12.5, 0.0)  # fmt: skip
    assert agrees(VALID, "site-a.fiber") is not None
    assert agrees(raw(probe("l", 1))) == ("l", "probe/l/1", micros(1), "up", None, None)
    as_int = VALID.replace(b'"latency_ms":12.5', b'"latency_ms":12')
    assert agrees(as_int) is not None
    assert type(agrees(as_int)[4]) is int  # type: ignore[index]  # as orjson reads it


def test_the_fast_path_leaves_these_to_decode() -> None:
    cases = {
        "key-mismatch": (VALID, "site-b.fiber", MAX_EVENT_BYTES),
        "too-large": (VALID, None, len(VALID) - 1),
        "extension attribute": (
            VALID.replace(
                b'"data"', b'"traceparent":"00-' + b"a" * 32 + b"-" + b"b" * 16 + b'-01","data"'
            ),
            None,
            MAX_EVENT_BYTES,
        ),
        "trailing newline in time": (VALID.replace(b'Z"', b'Z\\n"'), None, MAX_EVENT_BYTES),
        "no such day": (VALID.replace(b"-02-05T", b"-02-30T"), None, MAX_EVENT_BYTES),
        "year 10000 in UTC": (
            VALID.replace(b'"2019-02-05T00:00:10Z"', b'"9999-12-31T23:59:59-23:59"'),
            None,
            MAX_EVENT_BYTES,
        ),
        "a tick": (raw(tick(10)), None, MAX_EVENT_BYTES),
    }
    for name, (data, key, max_bytes) in cases.items():
        assert read_status(data, key, max_bytes) is None, name
    # decode's verdicts, for the record: the valid ones among them take decode's path.
    assert isinstance(judged(*cases["extension attribute"]), tuple)
    for name in ("key-mismatch", "too-large", "trailing newline in time", "no such day"):
        assert isinstance(judged(*cases[name]), str), name
    assert str(judged(*cases["year 10000 in UTC"])).startswith("bad-time: ")


def test_a_reading_after_the_bound_is_left_to_decode_which_refuses_it() -> None:
    assert agrees(VALID, None, MAX_EVENT_BYTES, micros(10)) is not None
    assert read_status(VALID, None, MAX_EVENT_BYTES, micros(10) - 1) is None
    assert str(judged(VALID, None, MAX_EVENT_BYTES, micros(10) - 1)).startswith("future-time: ")


def test_duplicate_fields_read_as_decode_reads_them() -> None:
    doubled = VALID.replace(b'"status":"degraded"', b'"status":"degraded","status":"down"')
    assert agrees(doubled) is not None
    assert agrees(doubled)[3] == "down"  # type: ignore[index]


def test_the_engine_gives_the_same_outputs_by_either_path() -> None:
    """The same readings with and without an extension attribute (which sends them down
    ``decode``'s path) give the same outputs."""
    topology = make_topology({"svc": service(["l"])}, ["l"])
    fast, slow = Engine(topology), Engine(topology)
    events = [probe("l", t, "down" if t >= 30 else "up") for t in range(0, 300, 10)]
    events += [tick(t) for t in range(0, 300, 60)]
    events.sort(key=lambda e: e["time"])
    for event in events:
        fast.feed(raw(event))
        slow.feed(raw({**event, "datacontenttype": "application/json"}))
    out = fast.drain()
    assert out, "the scenario emits something"
    assert out == slow.drain()
    assert fast.counts == slow.counts
