"""``failover replay``: the core over a JSONL file of input events, in file order.

This is the embedded default, the demo, the what-if tool and the oracle for the Kafka path:
same topology and events in, same bytes out.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Final, NamedTuple

import orjson

from workflows.engine import MAX_EVENT_BYTES, Engine
from workflows.links import HealthChange
from workflows.records import DEADLETTER, DeadLetter, Emitted, Truncated
from workflows.topology import Topology

__all__ = ["Origin", "Truncated", "encode", "read_lines", "replay"]


class Origin(NamedTuple):
    """Where a replayed input came from: the file's name and the line, from 1."""

    file: str
    line: int


#: Bytes read at a time from a line longer than the limit, to find its end.
_CHUNK: Final = 1 << 20


def read_lines(path: str | Path, max_bytes: int = MAX_EVENT_BYTES) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of a JSONL file with their numbers, as bytes, without newline.

    A line longer than ``max_bytes`` is never read whole: its first ``max_bytes + 1`` bytes
    come as :class:`Truncated`, with its length; the rest is read in chunks and dropped. So
    memory is bounded by the limit, however long the line.
    """
    keep = max_bytes + 1
    with Path(path).open("rb") as handle:
        number = 0
        while line := handle.readline(keep + 2):  # room for the longest line kept, and CRLF
            number += 1
            if len(line) < keep + 2 or line.endswith(b"\n"):
                stripped = line.rstrip(b"\r\n")
                if stripped.strip():
                    yield number, stripped
                continue
            prefix, length, blank = line[:keep], len(line), not line.strip()
            while not line.endswith(b"\n"):
                line = handle.readline(_CHUNK)
                if not line:
                    break
                length += len(line)
                blank = blank and not line.strip()
            length -= len(line) - len(line.rstrip(b"\r\n"))
            if not blank:
                yield number, Truncated(prefix, length)


def replay(
    topology: Topology,
    lines: Iterable[tuple[int, bytes]],
    file: str,
    *,
    state: bool = False,
    on_health: Callable[[HealthChange], None] | None = None,
) -> Iterator[Emitted | DeadLetter]:
    """Run the engine over numbered lines; yield every output in the order it was made.
    ``state``: the read model's records too (topic ``service-state``), as the worker writes
    them. ``on_health``: told each change of a link's health, with its reason (the
    timeline's "stale" and "flapping"); it changes no output."""
    engine = Engine(topology, state_records=state, on_health=on_health)
    for number, raw in lines:
        engine.feed(raw, None, Origin(file, number))
        if engine.out:
            yield from engine.drain()
    engine.finish()
    yield from engine.drain()


def encode(record: Emitted | DeadLetter) -> bytes:
    """One JSONL line (without the newline) for an output record.

    A dead letter keeps the input's original bytes exactly: as ``value`` (text) when they
    are UTF-8, otherwise as ``value_base64`` (standard base64 with padding), never as text
    with replacement characters. Exactly one of the two is present.
    """
    if isinstance(record, Emitted):
        return orjson.dumps({"topic": record.topic, "key": record.key, "value": record.event})
    origin = record.origin
    source = (
        {"file": origin.file, "line": origin.line}
        if isinstance(origin, Origin)
        else {"file": str(origin), "line": 1}
    )
    line: dict[str, object] = {
        "topic": DEADLETTER,
        "key": record.key,
        "reason": record.reason,
        "source": source,
    }
    try:
        line["value"] = record.raw.decode("utf-8")
    except UnicodeDecodeError:
        line["value_base64"] = base64.b64encode(record.raw).decode("ascii")
    return orjson.dumps(line)
