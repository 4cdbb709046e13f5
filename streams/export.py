"""``failover export``: a running deployment's inputs as a replay file, ticks included.

The engine reads three input topics (link-status, operator-overrides, service-feedback),
each in several partitions, with ticks written to every partition in the same order as the
other records. A service's inputs are released by ticks (the watermark), and an input is
late against the last tick on its *own* partition. So one file gives the engine's outputs
when it holds, for each tick ``W`` in order of time, the tick once and then every input that
followed ``W`` (and no later tick) on its partition, partition by partition in offset order:
routed back onto the topics, that file is exactly the streams the engine read, and replayed
it gives what the engine committed (:func:`merge`).

What the engine refused for a reason that only Kafka has (a record on the wrong partition or
topic, a tick without the engine's tag, an input stamped ahead of the worker's wall clock, a
bad binary-mode header, a key that is not the subject) is read from the dead-letter topic and
left out: a replay would not refuse it. Inputs after the last tick kept are left out too: the
engine applies them at its next tick, which has not come (replay would apply them at the end
of the file).

:func:`read_inputs` reads the topics to their end as a ``read_committed`` consumer with
manual assignment: no group, nothing committed, so it disturbs no one. Records are held in
memory to be merged: an export is an incident's worth of inputs, not a year's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import orjson

from streams.codec import binary_mode, structured_from_binary
from streams.committed import read_committed
from streams.security import KafkaSecurity
from workflows.engine import MAX_EVENT_BYTES
from workflows.timeutil import format_time, parse_time

__all__ = [
    "KAFKA_ONLY",
    "ExportError",
    "InputRecord",
    "Merged",
    "describe",
    "lines",
    "merge",
    "read_inputs",
]

#: Reason codes of dead letters that only the Kafka path gives: inputs refused so are left
#: out of an export, since a replay of their bytes would not refuse them.
KAFKA_ONLY: Final = frozenset(
    {
        "wrong-partition",
        "wrong-topic",
        "future-time",
        "unauthenticated-tick",
        "bad-header",
        "key-mismatch",
        "internal",
    }
)

TICK_TYPE: Final = "clock.tick.v1"


class ExportError(RuntimeError):
    """The inputs cannot be read: the message says what and where."""


class InputRecord(NamedTuple):
    """One record of an input topic, as read."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class Merged:
    """The lines of an export, and what was left out and why (counts for stderr)."""

    lines: list[bytes] = field(default_factory=list)
    ticks: int = 0
    inputs: int = 0
    #: Inputs the engine refused for a Kafka-only reason, by reason code.
    refused: dict[str, int] = field(default_factory=dict)
    #: Binary-mode records that stand for no structured event (the engine dead-lettered them).
    unreadable: int = 0
    #: Inputs after the last tick kept (the engine applies them at its next tick).
    pending: int = 0
    #: Inputs and ticks before ``since`` or after ``until``.
    outside: int = 0
    first: int | None = None
    last: int | None = None


def _structured(record: InputRecord) -> bytes | None:
    """The structured-mode bytes of a record, or None for a binary-mode record that stands
    for no event (a structured record is kept as it is, whatever it holds)."""
    if record.headers and binary_mode(record.headers):
        event = structured_from_binary(record.headers, record.value, MAX_EVENT_BYTES)
        return event if isinstance(event, bytes) else None
    return record.value if record.value is not None else b"null"


def _tick_time(raw: bytes) -> int | None:
    """The event time of a ``clock.tick.v1``; None for anything else (or a tick whose time
    does not parse: replay dead-letters it as the engine did)."""
    if TICK_TYPE.encode() not in raw:
        return None
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict) or event.get("type") != TICK_TYPE:
        return None
    time = event.get("time")
    if not isinstance(time, str):
        return None
    try:
        return parse_time(time)
    except (ValueError, OverflowError):
        return None


def merge(
    records: Iterable[InputRecord],
    refused: Mapping[tuple[str, int, int], str] | None = None,
    since: int | None = None,
    until: int | None = None,
) -> Merged:
    """The replay file of ``records`` (any order across partitions; offset order within
    one): ticks in order of time, each once, each followed by the inputs that followed it on
    their partitions. ``refused``: (topic, partition, offset) of inputs the engine
    dead-lettered, with the reason code; those of :data:`KAFKA_ONLY` are left out.

    ``until``: the file ends at the last tick at or before it. ``since``: it starts at the
    last tick at or before it (the first tick after it if there is none), so the replay
    starts from a fresh engine there.
    """
    refused = refused or {}
    out = Merged()
    # Per partition, in offset order: the watermark (the latest tick seen on it) of each input.
    by_partition: dict[tuple[str, int], list[InputRecord]] = {}
    for record in records:
        by_partition.setdefault((record.topic, record.partition), []).append(record)
    ticks: dict[int, bytes] = {}  # time -> the first copy's bytes (lowest topic, partition)
    groups: dict[int | None, list[bytes]] = {}
    for where in sorted(by_partition):
        watermark: int | None = None
        for record in sorted(by_partition[where], key=lambda r: r.offset):
            code = refused.get((record.topic, record.partition, record.offset))
            if code is not None and code in KAFKA_ONLY:
                out.refused[code] = out.refused.get(code, 0) + 1
                continue
            raw = _structured(record)
            if raw is None:
                out.unreadable += 1
                continue
            time = _tick_time(raw)
            if time is not None:
                ticks.setdefault(time, raw)
                if watermark is None or time > watermark:
                    watermark = time
                continue
            groups.setdefault(watermark, []).append(raw)
    times = sorted(ticks)
    kept = [t for t in times if until is None or t <= until]
    out.outside += len(times) - len(kept)
    if since is not None and kept:
        start = max((t for t in kept if t <= since), default=kept[0])
        out.outside += sum(1 for t in kept if t < start)
        out.outside += sum(len(g) for t, g in groups.items() if t is None or t < start)
        kept = [t for t in kept if t >= start]
    # Inputs after the last tick kept wait for a tick the file does not have; with no tick
    # at all, the engine has applied nothing.
    last = kept[-1] if kept else None
    for time, group in groups.items():
        if last is None or (time is not None and time >= last):
            out.pending += len(group)
    if last is not None and since is None and groups.get(None):
        out.lines.extend(groups[None])
        out.inputs += len(groups[None])
    for time in kept:
        out.lines.append(ticks[time])
        out.ticks += 1
        group = groups.get(time, []) if time != last else []
        out.lines.extend(group)
        out.inputs += len(group)
    if kept:
        out.first, out.last = kept[0], kept[-1]
    return out


def describe(merged: Merged) -> list[str]:
    """What an export holds and what it left out, one line each (for stderr)."""
    if merged.first is not None and merged.last is not None:
        span = f"from {format_time(merged.first)} to {format_time(merged.last)}"
    else:
        span = "no tick: the engine has applied nothing yet"
    lines = [f"{merged.ticks} ticks and {merged.inputs} inputs, {span}"]
    for code, count in sorted(merged.refused.items()):
        lines.append(f"left out: {count} refused by the engine on Kafka only ({code})")
    if merged.unreadable:
        lines.append(f"left out: {merged.unreadable} binary-mode records that are no event")
    if merged.pending:
        lines.append(
            f"left out: {merged.pending} inputs after the last tick kept (the engine applies"
            " them at its next tick)"
        )
    if merged.outside:
        lines.append(f"left out: {merged.outside} ticks and inputs outside --since/--until")
    return lines


def _reason_code(reason: bytes) -> str:
    return reason.decode("utf-8", "replace").split(":", 1)[0]


def read_inputs(
    bootstrap: Sequence[str],
    inputs: Sequence[str],
    deadletter: str,
    timeout: float,
    security: KafkaSecurity | None = None,
) -> tuple[list[InputRecord], dict[tuple[str, int, int], str]]:
    """Every committed record of the ``inputs`` topics, and the reason code of each input
    the engine dead-lettered (by topic, partition, offset), read to the end as it is now.

    Raises:
        ExportError: no broker, no such topic, or not done within ``timeout`` seconds.
    """
    found = read_committed(
        bootstrap, [*inputs, deadletter], timeout, security, ExportError,
        what="the input topics", option=" (--timeout)",
        missing="the worker creates its topics at start; FAILOVER_TOPIC_* name them",
    )  # fmt: skip
    records: list[InputRecord] = []
    refused: dict[tuple[str, int, int], str] = {}
    for r in found:
        headers = tuple(r.headers or ())
        if r.topic != deadletter:
            records.append(InputRecord(r.topic, r.partition, r.offset, r.key, r.value, headers))
            continue
        named = dict(headers)
        try:
            source = (
                named["failover-source-topic"].decode(),
                int(named["failover-source-partition"]),
                int(named["failover-source-offset"]),
            )
        except (KeyError, ValueError, UnicodeDecodeError):
            continue  # a dead letter of no input record (a service's timers)
        refused[source] = _reason_code(named.get("failover-reason", b""))
    return records, refused


def lines(merged: Merged) -> Iterator[bytes]:
    """The file's lines, each with its newline."""
    for line in merged.lines:
        yield line + b"\n"
