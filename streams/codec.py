"""Bytes on the wire: the internal changes topic, outputs, dead letters, ticks, and
binary-mode CloudEvents turned into structured ones.

User input is never validated here: :func:`workflows.inputs.decode` does that, on the bytes
of a structured-mode event. A binary-mode input (the CloudEvents Kafka protocol binding:
attributes in ``ce_*`` headers, ``content-type`` for ``datacontenttype``, the data as the
record's value) is turned into those bytes first (:func:`structured_from_binary`), so both
modes pass the same schemas, bounds and reason codes; the record's own value and headers are
what its dead letter keeps. What is decoded here is the engine's own internal topic, which
only the engine writes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final, NamedTuple, Protocol

import orjson

from workflows.clock import sign_tick
from workflows.links import HealthChange
from workflows.records import Emitted
from workflows.timeutil import format_time

__all__ = [
    "CONTENT_TYPE",
    "ConsumerRecord",
    "Headers",
    "Origin",
    "Watermark",
    "binary_mode",
    "deadletter_headers",
    "decode_change",
    "emitted_headers",
    "encode_health",
    "encode_watermark",
    "structured_from_binary",
    "tick_event",
]

#: Structured-mode CloudEvents (the Kafka protocol binding's ``content-type``).
CONTENT_TYPE: Final = b"application/cloudevents+json; charset=UTF-8"

Headers = list[tuple[str, bytes]]


class ConsumerRecord(Protocol):
    """What the engine reads of a consumed record (aiokafka's ``ConsumerRecord``): the one
    description the worker, its batches and the tracing of them share."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


#: The header prefix of a binary-mode CloudEvent's attributes (the Kafka protocol binding).
CE_PREFIX: Final = "ce_"
#: A CloudEvents attribute name: lower-case ASCII letters and digits (the spec, 1.0.2).
_ATTRIBUTE: Final = re.compile(r"[a-z0-9]+")
#: Attributes a binary-mode record may not carry as ``ce_`` headers: the data is the value,
#: and ``datacontenttype`` is the ``content-type`` header.
_NOT_HEADERS: Final = {
    "data": "the data of a binary-mode event is the record's value",
    "datacontenttype": "the content type of a binary-mode event is the content-type header",
}


def binary_mode(headers: Sequence[tuple[str, bytes]]) -> bool:
    """Whether a record with these headers is a binary-mode CloudEvent: it has a ``ce_``
    header (in any case) and no ``content-type`` of structured mode
    (``application/cloudevents...``), which wins as the binding says. Call it only for a
    record that has headers: a record without is structured mode."""
    binary = False
    for name, value in headers:
        lower = name.lower()
        if lower.startswith(CE_PREFIX):
            binary = True
        elif lower == "content-type" and value[:23].lower() == b"application/cloudevents":
            return False
    return binary


def structured_from_binary(
    headers: Sequence[tuple[str, bytes]], value: bytes | None, max_bytes: int
) -> bytes | str:
    """The structured-mode event (JSON bytes) a binary-mode record stands for, or why there
    is none (a dead letter's reason): ``too-large`` when its value and all its headers
    (names and values) together are larger than ``max_bytes``; ``bad-header`` for a ``ce_``
    header that is not an attribute name, names ``data`` or ``datacontenttype``, occurs
    twice, or whose value (or ``content-type``'s) is not UTF-8; ``not-json`` for a value
    that is not JSON (the engine's data is JSON: ``content-type`` says so, or is absent).

    Every attribute is a string in binary mode, as every envelope attribute of the engine's
    schemas is: the event is then judged by the schemas as a structured one would be."""
    size = len(value or b"") + sum(len(name) + len(text) for name, text in headers)
    if size > max_bytes:
        return (
            f"too-large: {size} bytes (the value and the headers of a binary-mode event), "
            f"the limit is {max_bytes}"
        )
    event: dict[str, Any] = {}
    for name, raw in headers:
        lower = name.lower()
        if lower.startswith(CE_PREFIX):
            attribute = name[len(CE_PREFIX) :]
            if name[: len(CE_PREFIX)] != CE_PREFIX or not _ATTRIBUTE.fullmatch(attribute):
                return (
                    f"bad-header: {name[:80]!r} is not a CloudEvents attribute header "
                    "(ce_ and lower-case letters and digits)"
                )
            if attribute in _NOT_HEADERS:
                return f"bad-header: {name!r}: {_NOT_HEADERS[attribute]}"
        elif lower == "content-type":
            attribute = "datacontenttype"
        else:
            continue  # not an attribute (traceparent, the producer's own headers)
        if attribute in event:
            return f"bad-header: {name[:80]!r} occurs twice"
        try:
            event[attribute] = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"bad-header: the value of {name[:80]!r} is not UTF-8 (byte {exc.start})"
    if value:
        try:
            event["data"] = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return f"not-json: the value (the data of a binary-mode event): {exc}"
    return orjson.dumps(event)


class Origin(NamedTuple):
    """Where an input was read: kept with queued inputs so they can be dead-lettered later."""

    topic: str
    partition: int
    offset: int


class Watermark(NamedTuple):
    """Stage 1 partition ``source`` has applied every tick up to ``tick`` (event time):
    ``ticks``, in order, each ``(tick, id)``, the last of them ``(tick, id)``."""

    tick: int
    id: str
    source: str
    ticks: tuple[tuple[int, str], ...] = ()


def encode_health(change: HealthChange) -> bytes:
    """A link health change for the internal topic (keyed by the service it is sent to)."""
    return orjson.dumps(
        {
            "kind": "health",
            "time": change.time,
            "rank": change.rank,
            "id": change.id,
            "link": change.link,
            "health": change.health,
            "cause": change.cause,
            "reason": change.reason,
        }
    )


def encode_watermark(ticks: Sequence[tuple[int, str]], source: str) -> bytes:
    """Stage 1 partition ``source`` has applied ``ticks`` (``(tick, id)``, in order) since
    its last watermark: one record for all the ticks of a batch, not one per tick. ``tick``
    and ``id`` are the last one's (all a reader of the first form needs)."""
    tick, tick_id = ticks[-1]
    return orjson.dumps(
        {"kind": "watermark", "tick": tick, "id": tick_id, "source": source, "ticks": ticks}
    )


def decode_change(raw: bytes | None) -> HealthChange | Watermark | str:
    """A message of the internal topic, or why it cannot be one (a reason for dead letters)."""
    try:
        value: Any = orjson.loads(raw or b"")
        kind = value["kind"]
        if kind == "health":
            return HealthChange(
                int(value["time"]),
                int(value["rank"]),
                str(value["id"]),
                str(value["link"]),
                int(value["health"]),
                str(value["cause"]),
                str(value["reason"]),
            )
        if kind == "watermark":
            tick, tick_id = int(value["tick"]), str(value["id"])
            ticks = tuple((int(t), str(i)) for t, i in value.get("ticks") or [(tick, tick_id)])
            return Watermark(tick, tick_id, str(value["source"]), ticks)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return f"internal: not a message of the changes topic: {exc!r}"
    return f"internal: unknown kind {kind!r}"


def emitted_headers(record: Emitted) -> Headers:
    """Headers of an output CloudEvent: the content type, and the type for cheap filtering
    (``ce_type`` would declare binary mode, so it is not used)."""
    return [
        ("content-type", CONTENT_TYPE),
        ("failover-type", str(record.event.get("type", "")).encode()),
    ]


def deadletter_headers(reason: str, origin: Origin | None) -> Headers:
    """Why and where from: the value of a dead letter is the input's original bytes."""
    headers: Headers = [("failover-reason", reason.encode("utf-8", "replace"))]
    if origin is not None:
        headers += [
            ("failover-source-topic", origin.topic.encode()),
            ("failover-source-partition", str(origin.partition).encode()),
            ("failover-source-offset", str(origin.offset).encode()),
        ]
    return headers


def tick_event(time: int, key: bytes | None = None) -> tuple[str, bytes]:
    """A ``clock.tick.v1`` at ``time`` (µs since the epoch): its id and its bytes, tagged
    under ``key`` when one is given (the worker's tick key: :mod:`workflows.clock`)."""
    stamp = format_time(time)
    ident = f"tick/{stamp}"
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": ident,
        "source": "/failover/ticker",
        "type": "clock.tick.v1",
        "time": stamp,
        "data": {},
    }
    return ident, orjson.dumps(sign_tick(key, event) if key is not None else event)
