"""``failover replay``: the core over a JSONL file of input events, in file order.

This is the embedded default, the demo, the what-if tool and the oracle for the Kafka path:
same topology and events in, same bytes out.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import orjson

from workflows.engine import Engine
from workflows.records import DEADLETTER, DeadLetter, Emitted
from workflows.topology import Topology

__all__ = ["Origin", "encode", "read_lines", "replay"]


class Origin(NamedTuple):
    """Where a replayed input came from: the file's name and the line, from 1."""

    file: str
    line: int


def read_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of a JSONL file with their numbers, as bytes, without newline."""
    with Path(path).open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            stripped = line.rstrip(b"\r\n")
            if stripped.strip():
                yield number, stripped


def replay(
    topology: Topology, lines: Iterable[tuple[int, bytes]], file: str, *, state: bool = False
) -> Iterator[Emitted | DeadLetter]:
    """Run the engine over numbered lines; yield every output in the order it was made.
    ``state``: the read model's records too (topic ``service-state``), as the worker writes
    them."""
    engine = Engine(topology, state_records=state)
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
