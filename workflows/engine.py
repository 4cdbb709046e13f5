"""The whole core in one process: decode, validate, stage 1, fan-out, stage 2.

:class:`Engine` is what ``failover replay`` runs, and the oracle the Kafka path is checked
against. The Kafka workers run the same :class:`~workflows.links.LinkStage` and
:class:`~workflows.service.ServiceStage`, split by partition, with :func:`decode` in front.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Final

import jsonschema_rs
import orjson

from schemas import load_schema
from workflows.clock import INPUT_TYPES, future_reason, tick_reason
from workflows.health import FEEDBACK, OVERRIDE, order_key
from workflows.isolation import fatal, internal_error, restore, slot_getter
from workflows.links import HealthChange, LinkStage, LinkState
from workflows.maintenance import MAINTENANCE_TYPE, Accepted, Windows
from workflows.operators import KEY_ATTRIBUTE, flooded, override_judge
from workflows.readings import Reading, read_status
from workflows.records import DeadLetter, Emitted, Truncated
from workflows.service import Input, ServiceStage, ServiceState
from workflows.timeutil import parse_event_time
from workflows.topology import Topology

__all__ = [
    "INPUT_TYPES",
    "MAX_EVENT_BYTES",
    "TICK_KEY",
    "Decoded",
    "Engine",
    "decode",
    "read_input",
    "reading_of",
    "service_input",
    "window_inputs",
]

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


def _reason_code(reason: str) -> str:
    return reason.split(":", 1)[0]


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


class Engine:
    """Both stages over one topology, fed one message at a time, in order.

    Outputs accumulate in :attr:`out`; the caller drains it. :attr:`counts` counts inputs by
    type and dead letters by reason code. ``state_records``: also write the read model
    (:class:`~workflows.service.ServiceStage`). ``on_health``: called with each link health
    change of stage 1 before stage 2 takes it (what the Kafka path writes to its changes
    topic): for an observer such as traced replay, which must not touch the engine.
    """

    def __init__(
        self,
        topology: Topology,
        *,
        max_event_bytes: int = MAX_EVENT_BYTES,
        state_records: bool = False,
        on_health: Callable[[HealthChange], object] | None = None,
    ) -> None:
        """``on_health``: called with each change of a link's effective health (its reason:
        a probe's reading, staleness, flapping, quiet again), before the services take it."""
        self.topology = topology
        #: Told each link health change of stage 1 (see above); may be set between inputs.
        self.on_health = on_health
        self.links = LinkStage(topology)
        self.services = ServiceStage(topology, state_records=state_records)
        self.out = self.services.out
        self.max_event_bytes = max_event_bytes
        # Counted apart from the other inputs, in a plain int: there are millions of them, and
        # ``self._probes += 1`` costs a fraction of ``counter[type_] += 1`` on a Counter.
        self._probes = 0
        self._inputs: Counter[str] = Counter()  # every other input by type; and dead letters
        self._services_by_link = topology.services_by_link
        self._on_status = self.links.on_status  # bound once: it is called for every probe
        self._link_states = self.links.states
        self._link_snapshot = slot_getter(LinkState)
        self._judge = override_judge(topology)
        self.windows = Windows(topology)

    @property
    def counts(self) -> Counter[str]:
        """Inputs by type, and dead letters as ``deadletter:`` and the reason code."""
        counts = Counter({"link.status.v1": self._probes} if self._probes else {})
        counts.update(self._inputs)
        return counts

    def feed(
        self,
        raw: bytes,
        key: str | None = None,
        origin: Any = None,
        decoded: Decoded | str | None = None,
    ) -> None:
        """Take one input message (``key`` is its Kafka key, if it came with one).

        ``decoded``: :func:`decode`'s answer for ``raw`` and ``key`` with this engine's
        ``max_event_bytes``, if the caller already has it (traced replay, which reads the
        event for its span), so that the message is parsed once.

        Never raises for what the message holds: an input the core refuses, or whose
        handling raises, is dead-lettered (``internal-error``, with the state it touched put
        back as before it: :mod:`workflows.isolation`), and the next input is taken.
        """
        try:
            reading = read_status(raw, key, self.max_event_bytes) if decoded is None else \
                reading_of(decoded)  # fmt: skip
            if reading is None and not isinstance(raw, Truncated):
                states = self.services.states
                flood = flood_reason(raw, key, self.max_event_bytes, states, self.topology)
                if flood is not None:  # a flood's copy: dead-lettered, nothing else done
                    self._inputs["operator.override.v1"] += 1
                    self._dead(flood[0], flood[1], raw, origin)
                    return
            if reading is None and decoded is None:  # not a reading the fast path takes
                decoded = decode(raw, key, self.max_event_bytes)
                reading = reading_of(decoded)
            if reading is None:
                assert decoded is not None  # given, or read just above
                if isinstance(decoded, str):
                    if isinstance(raw, Truncated):  # a replay line too long to read whole
                        decoded = raw.reason(self.max_event_bytes)
                    self._dead(key, decoded, raw, origin)
                    return
                event, time = decoded
                type_ = event["type"]
            if reading is not None:
                self._probes += 1
                link = reading[0]
                if link not in self._services_by_link:
                    self._dead(link, f"unknown-link: {link!r} is not in the topology", raw,
                               origin)  # fmt: skip
                    return
                state = self._link_states.get(link)
                saved = self._link_snapshot(state) if state is not None else None
                try:
                    change = self._on_status(*reading)
                except Exception:
                    if saved is None:
                        self._link_states.pop(link, None)
                    else:
                        restore(state, saved)
                    raise
                if change is not None:
                    if isinstance(change, str):  # refused: see LinkStage.on_status
                        self._dead(link, change, raw, origin)
                    else:
                        self._fan_out(change)
                        self._failed(raw, origin)
            elif type_ == "clock.tick.v1":
                self._inputs[type_] += 1
                self.tick(time, event["id"])
                self._failed(raw, origin)
            elif type_ == MAINTENANCE_TYPE:
                self._inputs[type_] += 1
                self._window(event, time, raw, origin)
            else:
                self._inputs[type_] += 1
                service = event["subject"]
                if service not in self.topology.services:
                    self._dead(service, f"unknown-service: {service!r} is not in the topology",
                               raw, origin)  # fmt: skip
                    return
                watermark = self.services.watermark
                if type_ == "operator.override.v1":
                    kept = self.services.state_of(service)
                    budget = kept.budget if kept.budget is not None else {}
                    refused = self._judge(event, time, watermark, budget)
                    if budget:
                        kept.budget = budget
                    if refused is not None:  # audited, dead-lettered, nothing else done
                        if refused[1] is not None:
                            self.out.append(refused[1])
                        self._dead(service, refused[0], raw, origin)
                        return
                item = service_input(event, time, watermark, raw, origin)
                self.services.offer(service, item, time, watermark)
        except Exception as exc:
            if fatal(exc):
                raise
            self._dead(key, internal_error(exc), raw, origin)

    def _window(self, event: dict[str, Any], time: int, raw: bytes, origin: Any) -> None:
        """A maintenance window's action: judged once, audited once, then given to every
        service it affects (workflows/maintenance.py)."""
        watermark = self.services.watermark
        verdict = self.windows.judge(event, time, watermark)
        if not isinstance(verdict, Accepted):
            reason, record = verdict
            if record is not None:
                self.out.append(record)
            self._dead(event["subject"], reason, raw, origin)
            return
        self.out.append(verdict.audit)
        for service, item in window_inputs(event, verdict, time, watermark, raw, origin):
            self.services.offer(service, item, time, watermark)

    def tick(self, time: int, tick_id: str) -> None:
        """Advance event time for every link and service."""
        for change in self.links.on_tick(time, tick_id):
            self._fan_out(change)
        self.services.advance(time, tick_id)

    def finish(self) -> None:
        """End of input: apply what is still queued (see :meth:`ServiceStage.flush`)."""
        self.services.flush()

    def _fan_out(self, change: HealthChange) -> None:
        if self.on_health is not None:
            self.on_health(change)
        item = Input(change.time, change.rank, change.id, "health",
                     (change.link, change.health, change.cause))  # fmt: skip
        offer = self.services.offer
        for service in self._services_by_link[change.link]:
            try:
                offer(service, item)
            except Exception as exc:  # that service misses the change; the others take it
                if fatal(exc):
                    raise
                self.services.failures.append((service, internal_error(exc)))

    def _failed(self, raw: bytes, origin: Any) -> None:
        """Dead-letter ``raw`` once for each link or service that could not take it."""
        for stage in (self.links, self.services):
            if stage.failures:
                for key, reason in stage.failures:
                    self._dead(key, reason, raw, origin)
                stage.failures.clear()

    def _dead(
        self, key: str | None, reason: str, raw: bytes, origin: Any, subject: str | None = None
    ) -> None:
        self._inputs[f"deadletter:{_reason_code(reason)}"] += 1
        self.out.append(DeadLetter(key if key is not None else subject, reason, raw, origin))

    def drain(self) -> list[Emitted | DeadLetter]:
        """Take the outputs produced so far."""
        out = self.out[:]
        self.out.clear()
        return out
