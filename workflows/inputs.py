"""Every input's one way into the core: decode it, judge it, route it.

:meth:`Inputs.route` takes the bytes of one input message and answers what the core makes of
it, as one of five small types: a :data:`~workflows.readings.Reading` for stage 1 (a plain
tuple: there are millions), a :class:`Tick`, a :class:`Window` action for every service it
affects, a :class:`ServiceInput` for one service, or :class:`Refused` with the dead-letter
reason. :meth:`workflows.engine.Engine.feed` (replay) and both Kafka stages
(``streams/partitions.py``) call it and act on the answer, so an input is judged and routed
the same way on every path: what the Kafka path adds (the topic and partition a record was
read from, forwarding, watermarks) it decides from the answer, never from the event again.

The judging, in order: the readings fast path (:mod:`workflows.readings`); a copy of a flood
of overrides (:func:`flood_reason`, where the caller keeps service states); then
:func:`decode` (size, JSON, type, schema, time, and on Kafka the clock's guards and the key);
then the topology (``unknown-link``, ``unknown-service``).

Adding an input type: its schema in ``schemas/``, its row in :data:`INPUT_STREAMS` and its case
here (:meth:`Inputs.route` and, for a service, :func:`service_input`), and its test in
``tests/test_inputs.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import jsonschema_rs
import orjson

from schemas import load_schema
from workflows.clock import future_reason, tick_reason
from workflows.health import FEEDBACK, OVERRIDE, order_key
from workflows.maintenance import MAINTENANCE_TYPE, Accepted
from workflows.operators import KEY_ATTRIBUTE, Judge, flooded
from workflows.readings import Reading, read_status
from workflows.records import Emitted, Truncated
from workflows.service import Input, ServiceStage, ServiceState
from workflows.timeutil import parse_event_time
from workflows.topology import Topology

__all__ = [
    "INPUT_STREAMS",
    "INPUT_TYPES",
    "MAX_EVENT_BYTES",
    "TICK_KEY",
    "Decoded",
    "Inputs",
    "Reading",
    "Refused",
    "Routed",
    "ServiceInput",
    "Tick",
    "Window",
    "admit",
    "decode",
    "flood_reason",
    "read_input",
    "reading_of",
    "service_input",
    "window_inputs",
]

#: Every input type the engine reads (the order its ``unknown-type`` reason lists them in),
#: and the input stream that carries it: ``links`` (read by stage 1, one link's readings in
#: order), ``overrides`` or ``feedback`` (read by stage 2, one service's inputs in order). A
#: tick (``None``) is carried by every stream. On Kafka each stream is a topic
#: (``streams.config.INPUT_TOPIC_FIELDS``); replay reads them all from one file.
INPUT_STREAMS: Final[Mapping[str, str | None]] = {
    "link.status.v1": "links",
    "operator.override.v1": "overrides",
    "operator.maintenance.v1": "overrides",
    "manual.record.v1": "feedback",
    "reconcile.completed.v1": "feedback",
    "clock.tick.v1": None,
}
INPUT_TYPES: Final = tuple(INPUT_STREAMS)

#: Larger inputs are dead-lettered unread: no probe reading or operator word needs more.
MAX_EVENT_BYTES: Final = 64 * 1024
#: The Kafka key the engine's ticker uses for ``clock.tick.v1``.
TICK_KEY: Final = "__tick__"

# Compiled once, at import (about 10 ms for all five): the hot path then finds an input's
# validator, and learns that its type is known, in a single dict lookup.
_VALIDATORS: Final[dict[str, Any]] = {
    type_: jsonschema_rs.validator_for(load_schema(type_)) for type_ in INPUT_TYPES
}


def _schema_reason(validator: Any, event: Any) -> str:
    for error in validator.iter_errors(event):
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.instance_path)
        return f"schema: ${path}: {error.message}"
    return "schema: invalid"  # pragma: no cover - is_valid and iter_errors agree


def decode(
    raw: bytes,
    key: str | None = None,
    max_bytes: int = MAX_EVENT_BYTES,
    not_after: int | None = None,
    tick_key: bytes | None = None,
) -> tuple[dict[str, Any], int] | str:
    """Parse and validate one input message.

    ``not_after`` and ``tick_key`` are the Kafka path's guards of the clock
    (:mod:`workflows.clock`); replay, which trusts its file, gives neither. ``not_after``: the
    latest event time accepted, in microseconds (the worker's wall clock plus ``max_future``).
    ``tick_key``: the ticks' HMAC key; a ``clock.tick.v1`` must carry a valid tag.

    Returns:
        ``(event, time)`` with the event time in microseconds, or the reason it is refused:
        ``too-large``, ``not-json``, ``unknown-type``, ``schema``, ``bad-time``,
        ``unauthenticated-tick``, ``future-time`` or ``key-mismatch``, each followed by ``: ``
        and the detail.
    """
    if len(raw) > max_bytes:
        return f"too-large: {len(raw)} bytes, the limit is {max_bytes}"
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return f"not-json: {exc}"
    try:
        # Not a JSON object (TypeError), no "type" or an unknown one (KeyError), or a type
        # that is not even hashable (TypeError): all refused below, off the hot path.
        validator = _VALIDATORS[event["type"]]
    except (KeyError, TypeError):
        return _unknown_type(event)
    if not validator.is_valid(event):
        return _schema_reason(validator, event)
    try:
        time = parse_event_time(event["time"])
    except ValueError as exc:
        return f"bad-time: {exc}"
    if tick_key is not None and event["type"] == "clock.tick.v1":
        refused = tick_reason(event, tick_key)
        if refused is not None:
            return refused
    if not_after is not None and time > not_after:
        return future_reason(time, not_after)
    if key is not None and key != event.get("subject", TICK_KEY):
        return f"key-mismatch: key {key[:128]!r} is not the subject {event.get('subject')!r}"
    return event, time


#: What :func:`decode` gives for a valid input: the event and its time in microseconds.
Decoded = tuple[dict[str, Any], int]


def read_input(
    raw: bytes,
    key: str | None,
    max_bytes: int,
    not_after: int | None = None,
    tick_key: bytes | None = None,
) -> tuple[Reading | None, Decoded | str]:
    """:func:`decode` with the readings fast path in front: ``(reading, answer)`` for a valid
    ``link.status.v1``, whichever path read it (``answer`` is ``""`` when the fast path did,
    decode's answer otherwise); ``(None, decode's answer)`` for anything else. ``not_after``
    and ``tick_key`` as for :func:`decode`."""
    reading = read_status(raw, key, max_bytes, not_after)
    if reading is not None:
        return reading, ""
    decoded = decode(raw, key, max_bytes, not_after, tick_key)
    return reading_of(decoded), decoded


def reading_of(decoded: Decoded | str) -> Reading | None:
    """The reading a valid ``link.status.v1`` carries (:func:`decode`'s answer for it); None
    for any other answer."""
    if isinstance(decoded, str) or decoded[0]["type"] != "link.status.v1":
        return None
    event, time = decoded
    data = event["data"]
    return (event["subject"], event["id"], time, data["status"], data.get("latency_ms"),
            data.get("loss_pct"))  # fmt: skip


_OVERRIDE_TYPE: Final = b'"operator.override.v1"'


def flood_reason(
    raw: bytes,
    key: str | None,
    max_bytes: int,
    states: Mapping[str, ServiceState],
    topology: Topology,
    not_after: int | None = None,
) -> tuple[str, str] | None:
    """``(service, reason)`` if ``raw`` is a copy of a flood of overrides: signed with a key
    that has used up its ``max_overrides_per_minute`` for the service, and whose refusal was
    audited already (:func:`workflows.operators.flooded`); else ``None``, and the input goes
    the usual way, where the same count refuses it just as well. This only spares such a copy
    the full decode and the schema (a few microseconds instead of tens): its bytes are
    dead-lettered all the same. An override written with its type escaped is not seen here;
    the usual way counts it. A flood's copy is judged by the minute of its ``time`` alone."""
    if _OVERRIDE_TYPE not in raw or len(raw) > max_bytes:
        return None
    try:
        event = orjson.loads(raw)
    except (orjson.JSONDecodeError, RecursionError):
        return None
    if not isinstance(event, dict) or event.get("type") != "operator.override.v1":
        return None
    service, key_id, stamp = event.get("subject"), event.get(KEY_ATTRIBUTE), event.get("time")
    if not isinstance(service, str) or not isinstance(key_id, str) or not isinstance(stamp, str):
        return None
    if key is not None and key != service:
        return None
    state = states.get(service)
    if state is None or not state.budget:
        return None
    try:
        if not_after is None and stamp[-1:] == "Z" and stamp[16:17] == ":":
            # Only its minute counts: one parse per minute of a flood (cached), not per copy.
            time = parse_event_time(stamp[:16] + ":00Z")
        else:
            time = parse_event_time(stamp)
    except ValueError:
        return None
    if not_after is not None and time > not_after:
        return None
    limit = topology.services[service].policy.max_overrides_per_minute
    reason = flooded(state.budget, key_id, time, limit)
    return None if reason is None else (service, reason)


def _unknown_type(event: Any) -> str:
    type_ = event.get("type") if isinstance(event, dict) else None
    shown = type_ if isinstance(type_, str) else type(type_).__name__
    return f"unknown-type: {shown[:80]!r} is not one of {', '.join(INPUT_TYPES)}"


def service_input(
    event: Mapping[str, Any], time: int, watermark: int | None, raw: bytes, origin: Any
) -> Input:
    """A decoded input for a service (an override, a manual record, a reconciliation) as the
    service stage queues it, ordered among the inputs of its instant; the one place that
    says what each type carries, for replay and both stages on Kafka."""
    type_ = event["type"]
    data = event["data"]
    fields: tuple[Any, ...]
    if type_ == "operator.override.v1":
        kind, rank = "override", OVERRIDE
        fields = (data["action"], data["actor"], data["role"], data["reason"],
                  event.get(KEY_ATTRIBUTE), data.get("until"))  # fmt: skip
    elif type_ == "manual.record.v1":
        kind, rank, fields = "record", FEEDBACK, (data["record_id"],)
    else:
        kind, rank = "reconcile", FEEDBACK
        fields = (tuple(data["record_ids"]), data.get("incident"))
    at, rank = order_key(time, rank, watermark)
    return Input(at, rank, event["id"], kind, fields, raw, origin)


def admit(
    stage: ServiceStage,
    judge: Judge,
    given: ServiceInput,
    watermark: int | None,
    raw: bytes,
    origin: Any,
) -> tuple[str, Emitted | None] | None:
    """Give a service input to its service in ``stage``, as replay and the Kafka stage both
    do: an override judged first (``judge``: its signature, grant and time; the rate budget
    kept in the service's state), then the input queued at ``watermark``. The refusal of a
    judged-out override (its dead-letter reason, and its audit record if it gets one), with
    nothing queued; else ``None``."""
    service, event, time = given.service, given.event, given.time
    if given.type == "operator.override.v1":
        state = stage.state_of(service)
        budget = state.budget if state.budget is not None else {}
        refused = judge(event, time, watermark, budget)
        if budget:
            state.budget = budget
        if refused is not None:
            return refused
    stage.offer(service, service_input(event, time, watermark, raw, origin), time, watermark)
    return None


def window_inputs(
    event: Mapping[str, Any],
    accepted: Accepted,
    time: int,
    watermark: int | None,
    raw: bytes,
    origin: Any,
    services: Any = None,
) -> list[tuple[str, Input]]:
    """The ``maintenance`` input each affected service (of ``services``, a collection; all
    by default) gets for an accepted window action, ordered as an override is."""
    at, rank = order_key(time, OVERRIDE, watermark)
    return [
        (service, Input(at, rank, event["id"], "maintenance", fields, raw, origin))
        for service, fields in accepted.services
        if services is None or service in services
    ]


@dataclass(slots=True)
class Tick:
    """A ``clock.tick.v1``: event time reaches ``time`` for every link and service."""

    time: int
    id: str
    type: ClassVar[str] = "clock.tick.v1"


@dataclass(slots=True)
class Window:
    """An ``operator.maintenance.v1``: a maintenance window's action, for every service it
    affects, judged by the stage's registry of windows (:class:`workflows.maintenance.Windows`).
    The window id is ``event["subject"]``."""

    event: dict[str, Any]
    time: int
    type: ClassVar[str] = MAINTENANCE_TYPE


@dataclass(slots=True)
class ServiceInput:
    """An override, a manual record or a reconciliation (``type``) of ``service``, a service
    of the topology: :func:`service_input` makes what its stage queues."""

    service: str
    type: str
    event: dict[str, Any]
    time: int


@dataclass(slots=True)
class Refused:
    """An input the core refuses: ``reason`` is the dead letter's (a code, a colon, the
    detail). ``subject``: the link, service or window it names, if it was read that far (the
    dead letter's key in replay; ``None``: the message's own key). ``type``: its input type,
    if it was one (counted as an input of that type), else ``None``."""

    reason: str
    subject: str | None = None
    type: str | None = None


#: What :meth:`Inputs.route` answers: a reading is a plain tuple, the others are not tuples.
Routed = Reading | Tick | Window | ServiceInput | Refused

_STATUS_TYPE: Final = "link.status.v1"


class Inputs:
    """The entry point of one stage's inputs over ``topology``. ``states``: the service
    states the caller keeps (the engine's, a Kafka partition's), for the cheap refusal of a
    flood's copies (:func:`flood_reason`); ``None`` (stage 1 on Kafka, which has no overrides)
    skips it."""

    def __init__(
        self, topology: Topology, states: Mapping[str, ServiceState] | None = None
    ) -> None:
        self.topology = topology
        self.states = states
        self._links = topology.services_by_link
        self._services = topology.services

    def route(
        self,
        raw: bytes,
        key: str | None,
        max_bytes: int = MAX_EVENT_BYTES,
        not_after: int | None = None,
        tick_key: bytes | None = None,
        decoded: Decoded | str | None = None,
    ) -> Routed:
        """What the core makes of one input message (``key``: its Kafka key, if it came with
        one). ``not_after`` and ``tick_key`` as for :func:`decode` (Kafka's clock guards;
        replay gives neither). ``decoded``: :func:`decode`'s answer for ``raw`` and ``key``
        with ``max_bytes``, if the caller has it already (traced replay), so that ``raw`` is
        parsed once. A :class:`~workflows.records.Truncated` line (replay) that does not read
        is refused ``too-large``, with its whole length."""
        reading = read_status(raw, key, max_bytes, not_after) if decoded is None else \
            reading_of(decoded)  # fmt: skip
        if reading is None:
            states = self.states
            if states is not None and not isinstance(raw, Truncated):
                flood = flood_reason(raw, key, max_bytes, states, self.topology, not_after)
                if flood is not None:  # a flood's copy: refused, nothing else read
                    return Refused(flood[1], flood[0], "operator.override.v1")
            if decoded is None:
                decoded = decode(raw, key, max_bytes, not_after, tick_key)
            if isinstance(decoded, str):
                if isinstance(raw, Truncated):  # a replay line too long to read whole
                    return Refused(raw.reason(max_bytes))
                return Refused(decoded)
            event, time = decoded
            type_ = event["type"]
            if type_ == "clock.tick.v1":
                return Tick(time, event["id"])
            if type_ == MAINTENANCE_TYPE:
                return Window(event, time)
            if type_ != _STATUS_TYPE:
                service = event["subject"]
                if service not in self._services:
                    reason = f"unknown-service: {service!r} is not in the topology"
                    return Refused(reason, service, type_)
                return ServiceInput(service, type_, event, time)
            reading = reading_of(decoded)
            assert reading is not None  # a valid link.status.v1
        link = reading[0]
        if link not in self._links:
            return Refused(f"unknown-link: {link!r} is not in the topology", link, _STATUS_TYPE)
        return reading
