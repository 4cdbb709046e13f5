"""Bytes on the wire: the internal changes topic, outputs, dead letters, ticks.

User input is never decoded here: :func:`workflows.engine.decode` does that, on raw bytes.
What is decoded here is the engine's own internal topic, which only the engine writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import orjson

from workflows.clock import sign_tick
from workflows.links import HealthChange
from workflows.records import Emitted
from workflows.timeutil import format_time

__all__ = [
    "CONTENT_TYPE",
    "Headers",
    "Origin",
    "Watermark",
    "deadletter_headers",
    "decode_change",
    "emitted_headers",
    "encode_health",
    "encode_watermark",
    "tick_event",
]

#: Structured-mode CloudEvents (the Kafka protocol binding's ``content-type``).
CONTENT_TYPE: Final = b"application/cloudevents+json; charset=UTF-8"

Headers = list[tuple[str, bytes]]


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
