"""The whole core in one process: the entry point, stage 1, fan-out, stage 2.

:class:`Engine` is what ``failover replay`` runs, and the oracle the Kafka path is checked
against. Every input enters through :meth:`workflows.inputs.Inputs.route` (decode, judge,
route); the Kafka workers run the same entry point and the same
:class:`~workflows.links.LinkStage` and :class:`~workflows.service.ServiceStage`, split by
partition (``streams/partitions.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from workflows.inputs import (
    INPUT_TYPES,
    MAX_EVENT_BYTES,
    TICK_KEY,
    Decoded,
    Inputs,
    Refused,
    ServiceInput,
    Tick,
    Window,
    admit,
    window_inputs,
)
from workflows.isolation import fatal, internal_error, restore, slot_getter
from workflows.links import HealthChange, LinkStage, LinkState
from workflows.maintenance import Accepted, Windows
from workflows.operators import override_judge
from workflows.records import DeadLetter, Emitted
from workflows.service import Input, ServiceStage
from workflows.topology import Topology

__all__ = ["INPUT_TYPES", "MAX_EVENT_BYTES", "TICK_KEY", "Engine"]


def _reason_code(reason: str) -> str:
    return reason.split(":", 1)[0]


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
        #: The core's one entry point (workflows/inputs.py), bound once: called per input.
        self._route = Inputs(topology, self.services.states).route
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

        ``decoded``: :func:`~workflows.inputs.decode`'s answer for ``raw`` and ``key`` with
        this engine's ``max_event_bytes``, if the caller already has it (traced replay, which
        reads the event for its span), so that the message is parsed once.

        Never raises for what the message holds: an input the core refuses, or whose
        handling raises, is dead-lettered (``internal-error``, with the state it touched put
        back as before it: :mod:`workflows.isolation`), and the next input is taken.
        """
        try:
            answer = self._route(raw, key, self.max_event_bytes, None, None, decoded)
            if isinstance(answer, tuple):  # a reading of a link of the topology
                self._probes += 1
                link = answer[0]
                state = self._link_states.get(link)
                saved = self._link_snapshot(state) if state is not None else None
                try:
                    change = self._on_status(*answer)
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
            elif isinstance(answer, Tick):
                self._inputs[answer.type] += 1
                self.tick(answer.time, answer.id)
                self._failed(raw, origin)
            elif isinstance(answer, Refused):
                if answer.type == "link.status.v1":
                    self._probes += 1
                elif answer.type is not None:
                    self._inputs[answer.type] += 1
                self._dead(answer.subject if answer.subject is not None else key,
                           answer.reason, raw, origin)  # fmt: skip
            elif isinstance(answer, ServiceInput):
                self._inputs[answer.type] += 1
                self._service(answer, raw, origin)
            else:
                self._inputs[answer.type] += 1
                self._window(answer, raw, origin)
        except Exception as exc:
            if fatal(exc):
                raise
            self._dead(key, internal_error(exc), raw, origin)

    def _service(self, given: ServiceInput, raw: bytes, origin: Any) -> None:
        """An input of one service: an override judged first (its rate budget kept in the
        service's state), then queued at its service."""
        watermark = self.services.watermark
        refused = admit(self.services, self._judge, given, watermark, raw, origin)
        if refused is not None:  # audited, dead-lettered, nothing else done
            if refused[1] is not None:
                self.out.append(refused[1])
            self._dead(given.service, refused[0], raw, origin)

    def _window(self, window: Window, raw: bytes, origin: Any) -> None:
        """A maintenance window's action: judged once, audited once, then given to every
        service it affects (workflows/maintenance.py)."""
        event, time = window.event, window.time
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
