"""The hot path of decoding: a probe's ``link.status.v1`` reading, parsed and checked in one pass.

Nearly every input is a reading. :func:`workflows.inputs.decode` parses it with orjson into
dicts, then jsonschema-rs walks those dicts again to check them: 2.1 us a reading on this
machine (orjson 0.7, the schema 0.8, the rest the calls between). msgspec decodes the bytes
straight into typed structs that carry the schema's constraints: :func:`read_status`, the
time parsed too, 1.2 us (1.4 us a message over bench/core.py's stream, its own row there).

This is a fast path, not a second judge. :func:`read_status` answers only for readings it can
vouch for: an envelope with exactly the schema's required fields and no extension attribute,
the key equal to the subject, a time that parses, within the engine's range and not after the
caller's bound. Anything else, a reading it refuses included, gets ``None``, and the caller
asks :func:`~workflows.inputs.decode`, which gives the verdict and the reason. So the fast
path can only be wrong by accepting what the schema refuses or by reading a value
differently; ``tests/test_readings.py`` checks both against ``decode`` (hypothesis). The
constraints are read from the schema file itself, so the two cannot drift apart by an edit
of one.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec

from schemas import load_schema
from workflows.timeutil import parse_event_time

__all__ = ["Reading", "read_status"]

#: ``(link, event id, time in microseconds, status, latency_ms, loss_pct)``.
Reading = tuple[str, str, int, str, float | int | None, float | int | None]

_SCHEMA: Final = load_schema("link.status.v1")


def _ecma_end(pattern: str) -> str:
    """A JSON Schema pattern for Python's ``re``: ``$`` ends the text, as in ECMA 262 (in
    Python it also matches before a final newline, which the schema refuses)."""
    return pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern


def _string(spec: dict[str, Any]) -> Any:
    assert spec.get("type") == "string", spec
    pattern = spec.get("pattern")
    meta = msgspec.Meta(
        min_length=spec.get("minLength"),
        max_length=spec.get("maxLength"),
        pattern=_ecma_end(pattern) if pattern is not None else None,
    )
    return Annotated[str, meta]


#: msgspec keeps any JSON integer an int, and bounds ints only within int64; orjson reads
#: one past 2**64 - 1 as a float. Larger ones are left to decode (no probe sends them).
_INT_MAX: Final = 2**63 - 1


def _number(spec: dict[str, Any]) -> Any:
    """``"type": ["number", "null"]`` with its bounds. An integer stays an int, as orjson
    reads it, up to :data:`_INT_MAX`: past that the fast path refuses, and decode judges."""
    assert spec.get("type") == ["number", "null"], spec
    low, high = spec.get("minimum"), spec.get("maximum")
    as_int = msgspec.Meta(ge=low, le=_INT_MAX if high is None else high)
    return Annotated[int, as_int] | Annotated[float, msgspec.Meta(ge=low, le=high)] | None


def _field(name: str, spec: dict[str, Any]) -> tuple[str, Any] | tuple[str, Any, Any]:
    if "const" in spec:
        return (name, Literal[spec["const"]])
    if "enum" in spec:
        return (name, Literal[tuple(spec["enum"])])
    if spec.get("type") == "string":
        return (name, _string(spec))
    return (name, _number(spec), None)  # optional: absent reads as null, as data.get does


def _structs() -> Any:
    envelope = _SCHEMA["properties"]
    data = envelope["data"]
    assert data["additionalProperties"] is False, "the data struct forbids unknown fields"
    data_struct = msgspec.defstruct(
        "StatusData",
        [_field(name, spec) for name, spec in data["properties"].items()],
        forbid_unknown_fields=True,
        gc=False,
    )
    # The required envelope fields only: an extension attribute (traceparent, datacontenttype,
    # ...) is an unknown field here, refused, and so left to decode() and the whole schema.
    fields = [
        ("data", data_struct) if name == "data" else _field(name, envelope[name])
        for name in _SCHEMA["required"]
    ]
    return msgspec.defstruct("Status", fields, forbid_unknown_fields=True, gc=False)


_DECODER: Final[Any] = msgspec.json.Decoder(_structs())


def read_status(
    raw: bytes, key: str | None, max_bytes: int, not_after: int | None = None
) -> Reading | None:
    """The reading in ``raw`` if it is a valid ``link.status.v1`` that the fast path vouches
    for (see the module doc); ``None`` means ask :func:`~workflows.inputs.decode`. A reading
    stamped after ``not_after`` (microseconds; decode's bound) is left to decode too."""
    if len(raw) > max_bytes:
        return None
    try:
        event = _DECODER.decode(raw)
        time = parse_event_time(event.time)
    except (msgspec.DecodeError, ValueError, RecursionError):  # decode's path says why
        return None
    if key is not None and key != event.subject:
        return None
    if not_after is not None and time > not_after:
        return None
    data = event.data
    return (event.subject, event.id, time, data.status, data.latency_ms, data.loss_pct)
