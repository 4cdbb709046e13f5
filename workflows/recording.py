"""The clock of a recording: a replay file is its own watermark.

A file with ticks is replayed by its ticks (:func:`has_ticks`); a file with none (a recording
of probes alone) by the event times of its inputs, each one advancing the clock as an implicit
tick before it (:func:`implicit_ticks`), so that the file gives what the same file with that
tick written before each new time gives, byte for byte. An input far ahead of the latest time
before it is reported with its line (:func:`clock_jumps`), one stamped before it as late
(:class:`ClockBack`): the file is trusted, so nothing is refused and no output changes.

Which lines count: an input type of the entry point (:data:`workflows.inputs.INPUT_TYPES`)
with a time the engine parses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeVar

import msgspec
import orjson

from workflows.inputs import INPUT_TYPES
from workflows.timeutil import SECOND, format_time, parse_event_time

__all__ = [
    "IMPLICIT_SOURCE",
    "ClockBack",
    "ClockJump",
    "clock_jumps",
    "describe_back",
    "describe_gap",
    "describe_jump",
    "has_ticks",
    "implicit_tick",
    "implicit_ticks",
]

_TYPES: Final = frozenset(INPUT_TYPES)


class ClockJump(NamedTuple):
    """An input of a replayed file far ahead of the latest time before it."""

    line: int
    time: int
    before: int


def describe_gap(micros: int) -> str:
    """A gap for people: ``3 days 4 h``, ``5 h 5 min``, ``1 min 30 s``, ``59 s``."""
    days, rest = divmod(micros // SECOND, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} day{'s' if days != 1 else ''} {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def describe_jump(jump: ClockJump, file: str) -> str:
    """One line for people: where the jump is, how far and from when to when."""
    return (
        f"{file}:{jump.line}: the clock jumps {describe_gap(jump.time - jump.before)} ahead, "
        f"to {format_time(jump.time)} from {format_time(jump.before)} (more than "
        "max_clock_jump): a probe's clock may be wrong"
    )


class _Stamp(msgspec.Struct):
    """The two fields of an input that :func:`clock_jumps` reads; msgspec skips the rest."""

    type: Any = None
    time: Any = None


_STAMP: Final = msgspec.json.Decoder(_Stamp)

Line = TypeVar("Line", bound=tuple[Any, ...])


def clock_jumps(
    lines: Iterable[Line], max_jump: int, found: Callable[[ClockJump], None]
) -> Iterator[Line]:
    """The numbered lines of a replay file (``(number, raw, ...)``), passed through unchanged;
    ``found`` is called for each input stamped more than ``max_jump`` ahead of the latest time
    of the inputs before it. The first input sets the clock; a line that is no input, or
    whose time the engine would refuse, is not counted (the engine dead-letters it).

    msgspec reads the ``type`` and ``time`` fields only, and a time equal to the last one
    counted (most readings share their second) is not parsed again: ``bench/clock.py``
    measures what this adds to a replay.
    """
    latest: int | None = None
    last: object = None  # the text of the last time counted
    decode = _STAMP.decode
    types = _TYPES
    for line in lines:
        try:
            stamp = decode(line[1])
        except (msgspec.DecodeError, RecursionError):  # deep nesting: msgspec's own limit
            yield line
            continue
        text, type_ = stamp.time, stamp.type
        if text != last and text.__class__ is str and type_.__class__ is str and type_ in types:
            try:
                time = parse_event_time(text)
            except ValueError:
                yield line
                continue
            last = text
            if latest is None:
                latest = time
            elif time > latest:
                if time - latest > max_jump:
                    found(ClockJump(line[0], time, latest))
                latest = time
        yield line


# ------------------------------------------------------------------ a recording's clock

#: The ``source`` of the ticks :func:`implicit_ticks` adds; their id is ``implicit-tick/TIME``.
IMPLICIT_SOURCE: Final = "/failover/replay/implicit-tick"
_TICK: Final = b"clock.tick.v1"
_SCAN_CHUNK: Final = 1 << 22


class _Type(msgspec.Struct):
    type: Any = None


_TYPE: Final = msgspec.json.Decoder(_Type)


def _is_tick(line: bytes) -> bool:
    try:
        return bool(_TYPE.decode(line).type == "clock.tick.v1")
    except (msgspec.DecodeError, RecursionError):
        return False


def has_ticks(path: str | Path, max_bytes: int) -> bool:
    """Whether a replay file holds a line whose ``type`` is ``clock.tick.v1``.

    A first pass that stops at the first tick, so a file with ticks (a dump of the topics,
    the demo) costs almost nothing, and a file without costs one read: chunks of 4 MiB are
    searched for the bytes ``clock.tick.v1`` and only a line that holds them is decoded (by
    msgspec, the ``type`` field alone), so the text in an operator's reason does not count.
    A line longer than ``max_bytes`` is no input the engine reads, and is skipped. A type
    written with JSON escapes (``clock\\u002etick.v1``) is not found: ``--clock ticks`` says
    it outright.
    """
    with Path(path).open("rb") as handle:
        carry = b""
        skipping = False  # inside a line too long to be an input: drop to its end
        while True:
            chunk = handle.read(_SCAN_CHUNK)
            if skipping:
                newline = chunk.find(b"\n")
                if newline == -1 and chunk:
                    continue
                skipping = False
                chunk = chunk[newline + 1 :] if newline != -1 else b""
            data = carry + chunk
            start = 0
            while (found := data.find(_TICK, start)) != -1:
                end = data.find(b"\n", found)
                if end == -1 and chunk:
                    break  # the line goes on in the next chunk
                begin = data.rfind(b"\n", 0, found) + 1
                line = data[begin : len(data) if end == -1 else end].rstrip(b"\r")
                if len(line) <= max_bytes and _is_tick(line):
                    return True
                start = len(data) if end == -1 else end + 1
            if not chunk:
                return False
            carry = data[max(start, data.rfind(b"\n") + 1) :]
            if len(carry) > max_bytes + 2:  # room for CRLF
                carry, skipping = b"", True


class ClockBack(NamedTuple):
    """An input of a file replayed by event time that is stamped before an input above it."""

    line: int
    time: int
    before: int


def describe_back(back: ClockBack, file: str, more: int = 0) -> str:
    """One line for people: the first input that goes back in time, and how many more."""
    rest = f" ({more} more input{'s' if more != 1 else ''} go back)" if more else ""
    return (
        f"{file}:{back.line}: not in time order: {format_time(back.time)} is "
        f"{describe_gap(back.before - back.time)} before {format_time(back.before)}, the latest "
        f"time above it; replayed by event time, an input that goes back is late (applied as "
        f"at the clock){rest}"
    )


def implicit_tick(time: int) -> bytes:
    """The tick :func:`implicit_ticks` adds at ``time``: the same bytes for the same time."""
    text = format_time(time)
    return orjson.dumps(
        {"specversion": "1.0", "id": f"implicit-tick/{text}", "source": IMPLICIT_SOURCE,
         "type": "clock.tick.v1", "time": text}
    )  # fmt: skip


def implicit_ticks(
    lines: Iterable[Line], went_back: Callable[[ClockBack], None]
) -> Iterator[Line | tuple[int, bytes]]:
    """The numbered lines of a file replayed by event time, with a tick before each input
    stamped later than every input above it: ``(number, tick)``, numbered as the input it
    precedes, from :func:`implicit_tick`. So each input's event time advances the clock, in
    file order, as a tick would; and the file gives what the same file with that tick
    written before each new time gives, byte for byte.

    Which lines count is what :func:`clock_jumps` counts (an input type, a time the engine
    parses), a tick in the file included: it moves the clock itself. ``went_back`` is called
    for each input stamped before the latest time above it (it is late: applied as at the
    clock, see docs/clock.md).
    """
    latest: int | None = None
    last: object = None  # the text of the last time parsed, and its value
    last_time = 0
    decode = _STAMP.decode
    types = _TYPES
    for line in lines:
        try:
            stamp = decode(line[1])
        except (msgspec.DecodeError, RecursionError):
            yield line
            continue
        text, type_ = stamp.time, stamp.type
        if text.__class__ is str and type_.__class__ is str and type_ in types:
            if text != last:
                try:
                    last_time = parse_event_time(text)
                except ValueError:
                    yield line
                    continue
                last = text
            time = last_time
            if latest is None or time > latest:
                latest = time
                if type_ != "clock.tick.v1":
                    yield line[0], implicit_tick(time)
            elif time < latest:
                went_back(ClockBack(line[0], time, latest))
        yield line
