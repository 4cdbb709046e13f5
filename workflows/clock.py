"""Who may move the engine's clock, and how far.

The engine's clock is event time, so whoever can stamp an input can move it. Three guards:

- Ticks on Kafka are authenticated: the worker's ticker adds a tag, an HMAC-SHA256 over the
  tick's canonical form (:func:`tick_canonical`) with a secret the workers share, as the
  CloudEvents extension attribute :data:`TICK_AUTH`. :func:`workflows.engine.decode`, given the
  key, refuses a tick without a valid tag (``unauthenticated-tick``). A replayed file is
  trusted: its ticks need no tag, and a tag in it is not checked.
- Inputs on Kafka are bounded ahead of the worker's wall clock: the streams layer reads the
  clock and gives :func:`~workflows.engine.decode` the latest time it accepts (``not_after``);
  a later input is refused (``future-time``, :func:`future_reason`). The core never reads a
  clock itself.
- In replay, an input far ahead of the latest time before it is reported with its line
  (:func:`clock_jumps`): the file is trusted, so nothing is refused and no output changes.

The canonical form and the tag are deterministic: the same tick and key give the same tag.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, NamedTuple, TypeVar

import msgspec
import orjson

from workflows.timeutil import SECOND, format_time, parse_event_time

__all__ = [
    "INPUT_TYPES",
    "TICK_AUTH",
    "ClockJump",
    "clock_jumps",
    "describe_gap",
    "describe_jump",
    "future_reason",
    "sign_tick",
    "tick_canonical",
    "tick_reason",
    "tick_tag",
]

#: The ``type`` of every input the engine reads.
INPUT_TYPES: Final = (
    "link.status.v1",
    "operator.override.v1",
    "manual.record.v1",
    "reconcile.completed.v1",
    "clock.tick.v1",
)
#: The CloudEvents extension attribute that carries a tick's tag (lower-case letters, as
#: CloudEvents requires of attribute names).
TICK_AUTH: Final = "failoverauth"
#: The tag's form: this prefix, then the HMAC-SHA256 in lower-case hex.
_SCHEME: Final = "hmac-sha256="


def tick_canonical(event: Mapping[str, Any]) -> bytes:
    """What a tick's tag covers: its type, id, source, time and subject (``null`` if none),
    as a JSON array: unambiguous whatever the strings hold."""
    return orjson.dumps(
        [event["type"], event["id"], event["source"], event["time"], event.get("subject")]
    )


def tick_tag(key: bytes, event: Mapping[str, Any]) -> str:
    """The tag of a tick under ``key``: ``hmac-sha256=`` and 64 hex digits."""
    return _SCHEME + hmac.new(key, tick_canonical(event), hashlib.sha256).hexdigest()


def sign_tick(key: bytes, event: Mapping[str, Any]) -> dict[str, Any]:
    """The tick with its tag added (any tag it had replaced)."""
    unsigned = {name: value for name, value in event.items() if name != TICK_AUTH}
    return {**unsigned, TICK_AUTH: tick_tag(key, unsigned)}


def tick_reason(event: Mapping[str, Any], key: bytes) -> str | None:
    """Why a valid ``clock.tick.v1`` is not the engine's own under ``key``, or ``None``.

    The comparison takes the same time whatever the tag holds (:func:`hmac.compare_digest`).
    """
    tag = event.get(TICK_AUTH)
    if tag is None:
        return (
            f"unauthenticated-tick: no {TICK_AUTH} attribute; on Kafka only the engine's "
            "ticker may send ticks"
        )
    if not isinstance(tag, str):
        return f"unauthenticated-tick: {TICK_AUTH} is not a string"
    expected = tick_tag(key, event).encode()
    if not hmac.compare_digest(tag.encode("utf-8", "surrogatepass"), expected):
        return (
            f"unauthenticated-tick: {TICK_AUTH} does not match the tick under the engine's "
            "tick secret"
        )
    return None


def future_reason(time: int, not_after: int) -> str:
    """The dead letter's reason for an input stamped after ``not_after``."""
    return (
        f"future-time: {format_time(time)} is after {format_time(not_after)}, the worker's "
        "clock plus max_future"
    )


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
_TYPES: Final = frozenset(INPUT_TYPES)

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
