"""Who may move the engine's clock, and how far.

The engine's clock is event time, so whoever can stamp an input can move it. Three guards:

- Ticks on Kafka are authenticated: the worker's ticker adds a tag, an HMAC-SHA256 over the
  tick's canonical form (:func:`tick_canonical`) with a secret the workers share, as the
  CloudEvents extension attribute :data:`TICK_AUTH`. :func:`workflows.inputs.decode`, given the
  key, refuses a tick without a valid tag (``unauthenticated-tick``). A replayed file is
  trusted: its ticks need no tag, and a tag in it is not checked.
- Inputs on Kafka are bounded ahead of the worker's wall clock: the streams layer reads the
  clock and gives :func:`~workflows.inputs.decode` the latest time it accepts (``not_after``);
  a later input is refused (``future-time``, :func:`future_reason`). The core never reads a
  clock itself.
- In replay, an input far ahead of the latest time before it is reported with its line
  (:func:`workflows.recording.clock_jumps`): the file is trusted, so nothing is refused and
  no output changes.

Where a replayed file's clock comes from is :mod:`workflows.recording`.

The canonical form and the tag are deterministic: the same tick and key give the same tag.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, Final

import orjson

from workflows.timeutil import format_time

__all__ = [
    "TICK_AUTH",
    "future_reason",
    "sign_tick",
    "tick_canonical",
    "tick_reason",
    "tick_tag",
]

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
