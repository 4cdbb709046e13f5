"""Stage 2, keyed by service: one failover state machine per service.

The machine is declared as data (:data:`STATES`, :data:`TRANSITIONS`) and driven by
``transitions``; one :class:`~transitions.Machine` serves every service of a stage, loaded
with one service's state at a time. Guards are evaluated first, in plain Python, and a
trigger fires only when a transition will really happen: a trigger costs tens of
microseconds, a guard a few hundred nanoseconds.

Every condition is *sustained on event time*: a deadline computed from when the condition
began. :func:`conditions` lists them for a service, in priority order; the same list answers
"is anything due now?" and "when should this service next be woken?".

What one service keeps is bounded, except its ledger of paper records (which must hold every
record of an incident):

- Input ids are remembered for ``dedup_horizon`` to drop duplicates, at most ``dedup_max_ids``
  of them. Past that, the oldest is forgotten and its time becomes the service's *floor*: an
  input stamped at or before the floor is dead-lettered ``dedup-overflow`` (it may be a copy
  of a forgotten one), so nothing is dropped unseen and nothing is applied twice.
- A record for an online-only service is refused whatever the state, so it is not remembered:
  a copy of it is refused again (it waits for the next tick like any input, since every
  input's instant is one at which the service's conditions are evaluated).
- A reconcile command names at most :data:`RECONCILE_PAGE_IDS` records; a larger set is sent
  in pages, each with its own deterministic id and ``page``/``pages`` fields.
"""

from __future__ import annotations

import base64
import heapq
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Final, NamedTuple

from transitions import Machine

from workflows.health import (
    DOWN,
    FEEDBACK,
    HEALTH,
    HEALTH_NAMES,
    HEALTHY,
    OVERRIDE,
    TICK,
    service_health,
)
from workflows.isolation import fatal, internal_error, restore, snapshot
from workflows.maintenance import ANNOUNCED, PENDING, STARTED, PlannedWindow
from workflows.notices import render
from workflows.operators import audit
from workflows.records import (
    COMMANDS,
    STATE,
    STATE_SCHEMA_VERSION,
    STATE_TYPE,
    DeadLetter,
    Emitted,
    cloudevent,
    output_id,
)
from workflows.records import TRANSITIONS as TRANSITIONS_TOPIC
from workflows.timeutil import (
    format_compact,
    format_duration,
    format_offset,
    format_time,
    parse_event_time,
)
from workflows.topology import Policy, Service, Topology

__all__ = [
    "NO_INCIDENT",
    "RECONCILE_PAGE_IDS",
    "STATES",
    "TRANSITIONS",
    "Input",
    "ServiceStage",
    "ServiceState",
    "conditions",
    "mermaid",
    "reconcile_pages",
]

STATES: Final = ("online", "degraded", "manual", "restored")

#: The machine's edges (docs/state-machine.md): ``transitions`` refuses any trigger not listed.
TRANSITIONS: Final = (
    {"trigger": "degrade", "source": "online", "dest": "degraded"},
    {"trigger": "suspend", "source": ["online", "degraded"], "dest": "manual"},
    {"trigger": "recover", "source": "degraded", "dest": "online"},
    {"trigger": "restore", "source": "manual", "dest": "restored"},
    {"trigger": "close", "source": "restored", "dest": "online"},
    {"trigger": "relapse", "source": "restored", "dest": "manual"},
)

#: The ``incident`` of a command sent while no incident is open (an operator's pin).
NO_INCIDENT: Final = "none"

#: The most record ids one ``failover.reconcile.v1`` carries; record ids are at most 128
#: characters, so a page is at most about 131 KB, far below a broker's 1 MB default.
RECONCILE_PAGE_IDS: Final = 1000

# Record states in the manual ledger.
_RECORDED, _SENT, _RECONCILED = 0, 1, 2


class Input(NamedTuple):
    """One stage-2 input, ordered by ``(time, rank, id)``.

    ``kind`` is ``"health"`` (data: link, health, cause), ``"override"`` (action, actor, role,
    reason), ``"record"`` (record_id,), ``"reconcile"`` (record_ids, incident or None) or
    ``"maintenance"`` (a window action: :meth:`workflows.maintenance.Windows.judge`).
    ``raw`` and ``origin`` are kept to dead-letter the input if it cannot be applied.
    """

    time: int
    rank: int
    id: str
    kind: str
    data: tuple[Any, ...]
    raw: bytes = b""
    origin: Any = None


class ServiceState:
    """Everything stage 2 knows of one service. Small: most fields are ``None`` while the
    service is online and healthy, which is nearly always."""

    __slots__ = (
        "bad_since",
        "baseline",
        "budget",
        "down_since",
        "entered",
        "escalated",
        "floor",
        "forced_until",
        "health",
        "healthy_since",
        "inbox",
        "incident",
        "ledger",
        "link_health",
        "manual_since",
        "operator",
        "pin",
        "pin_until",
        "previous",
        "queued",
        "quiet_until",
        "release",
        "seen",
        "state",
        "step",
        "unreconciled",
        "windows",
    )  # fmt: skip

    def __init__(self) -> None:
        self.state = "online"
        self.health = HEALTHY
        self.link_health: dict[str, int] | None = None  # only links that are not healthy
        self.healthy_since: int | None = 0
        self.bad_since: int | None = None
        self.down_since: int | None = None
        self.baseline = 0  # conditions in manual/restored count from their entry
        self.manual_since: int | None = None
        self.incident: str | None = None
        self.previous: str | None = None  # the last closed incident: ids must not repeat
        self.step = 0  # transitions so far in the incident: part of output ids
        self.pin: tuple[str, str, str] | None = None
        self.ledger: dict[str, int] | None = None
        self.unreconciled = 0  # ledger records not yet reconciled (derived, not saved)
        self.escalated: tuple[str, ...] = ()
        # For the read model (records.STATE): the last transition, as (time, reason code,
        # detail), and the last operator action accepted, as (action, actor, role, reason,
        # time). Both outlive incidents: "why is it online" has an answer too.
        self.entered: tuple[int, str, str] | None = None
        self.operator: tuple[str, str, str, str, int] | None = None
        # Input id -> time applied, within dedup_horizon, oldest first (inputs are applied in
        # time order), at most dedup_max_ids; ``floor``: the time of the newest id forgotten
        # to keep to that bound (an input at or before it is refused).
        self.seen: OrderedDict[str, int] | None = None
        self.floor: int | None = None
        self.inbox: list[Input] | None = None
        self.queued: set[str] | None = None  # the ids in ``inbox`` (derived, not saved)
        # Maintenance windows that affect this service and are not over, by start; and the
        # end of the last one that started: escalations count from it (workflows/maintenance).
        self.windows: tuple[PlannedWindow, ...] | None = None
        self.quiet_until: int | None = None
        # Overrides with ``until``: a force_manual holds the service in manual (no automatic
        # restore) until this time, a pin holds until this time (then it is lifted).
        self.forced_until: int | None = None
        self.pin_until: int | None = None
        # A release that waits for a second operator's approval (the two-person rule):
        # (override id, actor, role, reason, time, key id).
        self.release: tuple[str, str, str, str, int, str | None] | None = None
        # Overrides verified per signing key in the current minute (operators.rate_limited).
        self.budget: dict[str, tuple[int, int, int]] | None = None

    def to_json(self) -> list[Any]:
        """A JSON-able snapshot (for changelog tables); :meth:`from_json` reverses it.

        An input waiting in the inbox keeps its bytes exactly: as text when they are UTF-8,
        else as ``{"base64": ...}``."""
        return [
            self.state, self.health, self.link_health, self.healthy_since, self.bad_since,
            self.down_since, self.baseline, self.manual_since, self.incident, self.previous,
            self.step, list(self.pin) if self.pin else None, self.ledger, list(self.escalated),
            dict(self.seen) if self.seen else None,
            [[*item[:4], list(item.data), _raw_json(item.raw), item.origin]
             for item in self.inbox] if self.inbox else None,
            self.floor,
            list(self.entered) if self.entered else None,
            list(self.operator) if self.operator else None,
            [w.to_json() for w in self.windows] if self.windows else None,
            self.quiet_until,
            list(self.release) if self.release else None,
            self.forced_until,
            self.pin_until,
            {key: list(entry) for key, entry in self.budget.items()} if self.budget else None,
        ]  # fmt: skip

    @classmethod
    def from_json(cls, value: list[Any]) -> ServiceState:
        """Reverses :meth:`to_json`; also reads the snapshots of earlier versions (without a
        floor, inbox bytes as text; without the read model's last transition and operator
        action, which are then unknown until the next one; without maintenance windows; without
        a waiting release or an override's ``until``: none)."""
        state = cls()
        (state.state, state.health, state.link_health, state.healthy_since, state.bad_since,
         state.down_since, state.baseline, state.manual_since, state.incident, state.previous,
         state.step, pin, state.ledger, escalated, seen, inbox) = value[:16]  # fmt: skip
        state.floor = value[16] if len(value) > 16 else None
        if len(value) > 17 and value[17]:
            time, code, detail = value[17]
            state.entered = (time, code, detail)
        if len(value) > 18 and value[18]:
            action, actor, role, reason, at = value[18]
            state.operator = (action, actor, role, reason, at)
        if len(value) > 19 and value[19]:
            state.windows = tuple(PlannedWindow.from_json(w) for w in value[19])
        state.quiet_until = value[20] if len(value) > 20 else None
        if len(value) > 21 and value[21]:
            ident, actor, role, reason, at, key_id = value[21]
            state.release = (ident, actor, role, reason, at, key_id)
        state.forced_until = value[22] if len(value) > 22 else None
        state.pin_until = value[23] if len(value) > 23 else None
        if len(value) > 24 and value[24]:
            state.budget = {key: (e[0], e[1], e[2]) for key, e in value[24].items()}
        state.pin = (pin[0], pin[1], pin[2]) if pin else None
        state.escalated = tuple(escalated)
        if seen:
            state.seen = OrderedDict(seen)
        if state.ledger:
            state.unreconciled = sum(st != _RECONCILED for st in state.ledger.values())
        if inbox:
            state.inbox = [
                Input(t, r, i, k, tuple(d), _raw_bytes(raw), o) for t, r, i, k, d, raw, o in inbox
            ]
            heapq.heapify(state.inbox)
            state.queued = {item.id for item in state.inbox}
        return state

    def set_health(self, health: int, time: int) -> None:
        if health == self.health:
            return
        self.health = health
        if health == HEALTHY:
            self.healthy_since, self.bad_since, self.down_since = time, None, None
            return
        self.healthy_since = None
        if self.bad_since is None:
            self.bad_since = time
        if health == DOWN:
            if self.down_since is None:
                self.down_since = time
        else:
            self.down_since = None

    def all_reconciled(self) -> bool:
        return self.unreconciled == 0


def _raw_json(raw: bytes) -> str | dict[str, str]:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode("ascii")}


def _raw_bytes(value: str | dict[str, str]) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    return base64.b64decode(value["base64"], validate=True)


def reconcile_pages(record_ids: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The reconcile commands for ``record_ids`` (sorted): ``(qualifier, fields)`` for each
    page of at most :data:`RECONCILE_PAGE_IDS` ids, in order. One page is sent as it always
    was (qualifier ``reconcile``, no page fields); more carry ``page`` (from 1) and ``pages``,
    and the qualifier ``reconcile/page/N`` that makes each page's id."""
    pages = -(-len(record_ids) // RECONCILE_PAGE_IDS)
    if pages <= 1:
        yield "reconcile", {"record_ids": record_ids}
        return
    for page in range(pages):
        chunk = record_ids[page * RECONCILE_PAGE_IDS : (page + 1) * RECONCILE_PAGE_IDS]
        yield f"reconcile/page/{page + 1}", {"record_ids": chunk, "page": page + 1,
                                              "pages": pages}  # fmt: skip


#: The longest list of links a notice or an escalation's reason names in full (the schemas
#: allow 1000 characters for a reason): a service may require many links.
_LISTED_MAX: Final = 800


def _listed(items: list[str], limit: int = _LISTED_MAX) -> str:
    """``items`` joined by ``, ``, those that do not fit in ``limit`` characters counted."""
    text = ", ".join(items)
    if len(text) <= limit:
        return text
    shown: list[str] = []
    size = 0
    for item in items:
        if size + len(item) + 2 > limit:
            break
        shown.append(item)
        size += len(item) + 2
    return f"{', '.join(shown)} and {len(items) - len(shown)} more"


class Condition(NamedTuple):
    deadline: int
    trigger: str
    reason: str
    detail: str


def conditions(s: ServiceState, p: Policy) -> Iterator[Condition]:
    """The automatic transitions that could fire for ``s``, each with the event time at which
    its condition will have been sustained long enough, in priority order."""
    if s.pin is not None:
        return
    state = s.state
    if state in ("online", "degraded"):
        if s.down_since is not None:
            since = max(s.down_since, s.baseline)
            yield Condition(since + p.manual_after, "suspend", "down-sustained",
                            f"down for {format_duration(p.manual_after)} since "
                            f"{format_time(since)}")  # fmt: skip
        if s.bad_since is not None:
            since = max(s.bad_since, s.baseline)
            yield Condition(since + p.degraded_max, "suspend", "impaired-sustained",
                            f"impaired for {format_duration(p.degraded_max)} since "
                            f"{format_time(since)}: not forcing it")  # fmt: skip
            if state == "online":
                yield Condition(since + p.degrade_after, "degrade", "impaired",
                                f"impaired or down for {format_duration(p.degrade_after)}"
                                f" since {format_time(since)}")  # fmt: skip
        if state == "degraded" and s.healthy_since is not None:
            since = max(s.healthy_since, s.baseline)
            yield Condition(since + p.recover_after, "recover", "recovered",
                            f"healthy for {format_duration(p.recover_after)} since "
                            f"{format_time(since)}")  # fmt: skip
    elif state == "manual":
        if s.healthy_since is not None and not _running(s):
            since = max(s.healthy_since, s.baseline)
            detail = f"healthy for {format_duration(p.restore_after)} since {format_time(since)}"
            deadline = since + p.restore_after
            forced = s.forced_until
            if forced is not None and forced > deadline:
                deadline = forced
                detail = f"{detail}, and the operator's force_manual held until " \
                         f"{format_time(forced)}"  # fmt: skip
            yield Condition(deadline, "restore", "stable", detail)
    elif state == "restored":
        if s.all_reconciled():
            yield Condition(s.baseline, "close", "reconciled",
                            "every manual record of the incident is reconciled")  # fmt: skip
        if s.bad_since is not None:
            since = max(s.bad_since, s.baseline)
            yield Condition(since + p.relapse_after, "relapse", "relapse",
                            f"impaired or down for {format_duration(p.relapse_after)} since "
                            f"{format_time(since)} after restoration")  # fmt: skip


def _running(s: ServiceState) -> bool:
    """Whether a maintenance window that started is not over for the service."""
    return s.windows is not None and any(w.phase == STARTED for w in s.windows)


def _unplanned(s: ServiceState) -> bool:
    """Whether a link of the service fails that no running maintenance window plans for."""
    if not s.link_health or s.windows is None:
        return False
    planned: set[str] = set()
    for window in s.windows:
        if window.phase == STARTED:
            if window.links is None:
                return False  # a site's window: every link of it is planned
            planned.update(window.links)
    return bool(planned) and any(link not in planned for link in s.link_health)


def _escalations(s: ServiceState, p: Policy) -> Iterator[tuple[int, str]]:
    if s.state != "manual" or s.manual_since is None:
        return
    since = s.manual_since
    if s.quiet_until is not None and not _unplanned(s):
        since = max(since, s.quiet_until)  # nobody is called out for a planned outage
    if "office-head" not in s.escalated:
        yield since + p.escalate_after, "office-head"
    if "provider" not in s.escalated and s.link_health:
        # Only while a link is failing: a provider is told about a fault that exists.
        yield since + 2 * p.escalate_after, "provider"


def _window_deadline(w: PlannedWindow) -> int:
    """When a window next needs its service: its announcement, its start, its end."""
    if w.phase == PENDING:
        return w.announce_at
    return w.start if w.phase == ANNOUNCED else w.end


def next_deadline(s: ServiceState, p: Policy) -> int | None:
    """When the service must next be evaluated if nothing else happens to it."""
    deadlines = [c.deadline for c in conditions(s, p)]
    deadlines.extend(d for d, _ in _escalations(s, p))
    if s.windows:
        deadlines.extend(_window_deadline(w) for w in s.windows)
    if s.pin_until is not None:
        deadlines.append(s.pin_until)
    expires = release_expires(s, p)
    if expires is not None:
        deadlines.append(expires)
    return min(deadlines) if deadlines else None


def release_expires(s: ServiceState, p: Policy) -> int | None:
    """When a release waiting for a second operator's approval lapses; None if none waits."""
    return None if s.release is None else s.release[4] + p.release_approval_window


def mermaid() -> str:
    """The machine as a Mermaid state diagram, generated from :data:`TRANSITIONS`."""
    lines = ["stateDiagram-v2", "    [*] --> online"]
    for edge in TRANSITIONS:
        sources = edge["source"] if isinstance(edge["source"], list) else [edge["source"]]
        lines.extend(f"    {src} --> {edge['dest']}: {edge['trigger']}" for src in sources)
    return "\n".join(lines) + "\n"


def _next_incident(base: str, previous: str | None) -> str:
    """``base``, unless the last incident opened in the same second: then ``base.2``, ..."""
    if previous == base:
        return f"{base}.2"
    if previous is not None and previous.startswith(f"{base}."):
        return f"{base}.{int(previous.rsplit('.', 1)[1]) + 1}"
    return base


class _Cursor:
    """The model object of the shared machine: only the state of the service being fired."""

    state: str = "online"


class _Firing:
    """What a trigger needs beyond the state: set by the stage before each trigger.
    ``window``: the maintenance window whose start fires it (its notices name the window)."""

    __slots__ = ("cause", "detail", "operator", "reason", "service", "state", "time", "window")

    def __init__(self, service: Service, state: ServiceState, time: int, cause: str,
                 reason: str, detail: str, operator: dict[str, str] | None,
                 window: PlannedWindow | None = None) -> None:  # fmt: skip
        self.service = service
        self.state = state
        self.time = time
        self.cause = cause
        self.reason = reason
        self.detail = detail
        self.operator = operator
        self.window = window


class ServiceStage:
    """Stage 2 for a set of services: orders their inputs, runs their machines, emits.

    Feed inputs with :meth:`offer`; advance time with :meth:`advance`; drain :attr:`out`.

    With ``state_records``, the stage also writes the public read model: each time it has
    handled a service (at a tick, or at the end of input), one ``failover.service.state.v1``
    record (topic :data:`~workflows.records.STATE`) for the service if anything the record
    shows changed meanwhile, after the service's transitions and commands.
    """

    def __init__(
        self, topology: Topology, services: set[str] | None = None, *, state_records: bool = False
    ) -> None:
        self.topology = topology
        self._services = {
            sid: svc for sid, svc in topology.services.items()
            if services is None or sid in services
        }  # fmt: skip
        self.states: dict[str, ServiceState] = {}
        self.out: list[Emitted | DeadLetter] = []
        self.watermark: int | None = None
        self._pending: set[str] = set()
        self._timers: list[tuple[int, str]] = []
        self._scheduled: dict[str, int] = {}
        self._firing: _Firing | None = None
        #: With state records: service -> (time, cause) of the last change of its read model
        #: since it was last handled; None without them (nothing is tracked).
        self._changed: dict[str, tuple[int, str]] | None = {} if state_records else None
        #: The queued input being applied (:meth:`_step` blames it if its application raises).
        self._applying: Input | None = None
        #: ``(service, reason)`` for each service whose timers raised since the caller last
        #: emptied this list: the service was left as it was before the tick.
        self.failures: list[tuple[str, str]] = []
        # The model that `transitions` drives, loaded with one service's state per trigger;
        # the callbacks are this stage's methods.
        self._cursor = _Cursor()
        enter = {
            "online": self._enter_online,
            "degraded": self._enter_degraded,
            "manual": self._enter_manual,
            "restored": self._enter_restored,
        }
        self._machine = Machine(
            model=self._cursor,
            states=[{"name": name, "on_enter": [enter[name]]} for name in STATES],
            transitions=[dict(edge) for edge in TRANSITIONS],
            initial="online",
            auto_transitions=False,
            send_event=True,
            before_state_change=[self._on_transition],
        )

    # -- state access ------------------------------------------------------------------

    def state_of(self, service: str) -> ServiceState:
        state = self.states.get(service)
        if state is None:
            state = self.states[service] = ServiceState()
        return state

    def restore(self, service: str, state: ServiceState) -> None:
        """Adopt a state recovered from a changelog, and re-arm its timers."""
        self.states[service] = state
        if state.inbox:
            self._pending.add(service)
        self._arm(service, state)

    def _arm(self, service: str, state: ServiceState) -> None:
        # One live heap entry per service: a later deadline waits for the earlier one to
        # wake the service (which finds nothing due and re-arms), so the heap never holds
        # more than a few entries per service however busy it is.
        deadline = next_deadline(state, self._services[service].policy)
        if deadline is None:
            return
        scheduled = self._scheduled.get(service)
        if scheduled is None or deadline < scheduled:
            self._scheduled[service] = deadline
            heapq.heappush(self._timers, (deadline, service))

    # -- input ---------------------------------------------------------------------------

    def offer(
        self,
        service: str,
        item: Input,
        event_time: int | None = None,
        watermark: int | None = None,
    ) -> None:
        """Queue an input for ``service``; it is applied, in order, when time passes it.

        Inputs are deduplicated by id against what the service saw within
        ``dedup_horizon``. An input whose ``event_time`` is older than that behind the
        ``watermark`` where it entered the engine is dead-lettered instead, since whether it
        is a duplicate can no longer be told; so is one stamped at or before the service's
        floor (see the module's docstring).
        """
        state = self.state_of(service)
        if item.kind != "health":
            svc = self._services[service]
            horizon = svc.policy.dedup_horizon
            if (
                event_time is not None
                and watermark is not None
                and event_time < watermark - horizon
            ):
                self.out.append(DeadLetter(service, "too-old: older than dedup_horizon "
                                           f"({format_duration(horizon)}) behind the clock",
                                           item.raw, item.origin))  # fmt: skip
                return
            floor = state.floor
            if floor is not None and (item.time if event_time is None else event_time) <= floor:
                self._reject(service, item, "dedup-overflow: stamped at or before "
                             f"{format_time(floor)}, when this service's oldest remembered "
                             f"input id was forgotten to keep to dedup_max_ids "
                             f"({svc.policy.dedup_max_ids}); whether it is a duplicate "
                             "cannot be told")  # fmt: skip
                return
            seen = state.seen
            if seen is not None and item.id in seen:
                self._copy(service, item)
                return
        queued = state.queued
        if queued is None:
            state.inbox, state.queued = [item], {item.id}
        elif item.id in queued:
            self._copy(service, item)
            return
        else:
            assert state.inbox is not None
            heapq.heappush(state.inbox, item)
            queued.add(item.id)
        self._pending.add(service)

    def _copy(self, service: str, item: Input) -> None:
        """An input whose id was taken already: dropped, but an override's copy is refused
        (a signed order is used once). Dead-lettered, not audited: the audit trail has the
        override's verdict once; every copy of it is on the dead-letter topic."""
        if item.kind == "override":  # (a window's copy is refused where it is judged)
            self.out.append(DeadLetter(service, f"replayed: override {item.id!r} was taken "
                                       "already (within dedup_horizon)", item.raw,
                                       item.origin))  # fmt: skip

    def advance(self, time: int, tick_id: str) -> list[str]:
        """The watermark reached ``time`` (a tick): apply every queued input ordered below
        ``(time, TICK)``, then evaluate every service whose conditions fall due by ``time``.
        Services are handled in id order, so the output order is deterministic too.

        Returns:
            The services handled, in that order: no other service's state changed.
        """
        if self.watermark is not None and time <= self.watermark:
            return []
        self.watermark = time
        due: set[str] = set()
        timers = self._timers
        while timers and timers[0][0] <= time:
            deadline, service = heapq.heappop(timers)
            if self._scheduled.get(service) == deadline:
                del self._scheduled[service]
                due.add(service)
        # A service whose queued inputs all lie beyond ``time`` has nothing to do now (its
        # timers are in ``due``): on Kafka, stage 1 runs ahead of stage 2 and queues inputs
        # for many ticks to come, and waking them all at every tick cost 10 times the rest.
        limit = (time, TICK)
        states = self.states
        pending = {
            sid
            for sid in self._pending
            if (inbox := states[sid].inbox) and (inbox[0].time, inbox[0].rank) < limit
        }
        handled = sorted(due | pending)
        for service in handled:
            self._step(service, limit, time, tick_id)
        return handled

    def flush(self) -> None:
        """End of input (replay): apply everything still queued, in order."""
        for service in sorted(self._pending):
            self._step(service, None, None, "")

    def _step(
        self, service: str, limit: tuple[int, int] | None, time: int | None, tick_id: str
    ) -> None:
        """:meth:`_due`, then the service's state record if its read model changed."""
        self._due(service, limit, time, tick_id)
        changed = self._changed
        if changed and service in changed:
            self._state_record(service, self.states[service], *changed.pop(service))

    def _due(
        self, service: str, limit: tuple[int, int] | None, time: int | None, tick_id: str
    ) -> None:
        """What is due for one service at ``time`` (``None``: the end of input), isolated as
        :mod:`workflows.isolation` says: a queued input that raises is dead-lettered and the
        service's inputs are applied again from its snapshot without it; a raise of its own
        timers leaves the service as it was after its inputs, unarmed until its next input,
        and is reported in :attr:`failures`."""
        state = self.states[service]
        saved, mark, queued = snapshot(state), len(self.out), len(state.inbox or ())
        changed = self._changed
        # A rollback forgets the change marks of what it undoes, as it forgets the outputs.
        was = changed.get(service) if changed is not None else None
        while True:
            try:
                self._drain(service, state, limit)
                break
            except Exception as exc:
                if fatal(exc):
                    raise
                bad, reason = self._applying, internal_error(exc)
                self._rollback(state, saved, mark)
                self._remark(service, was)
                if bad is None:  # pragma: no cover - nothing outside an input raises here
                    self.failures.append((service, reason))
                    return
                inbox = state.inbox
                assert inbox is not None
                inbox.remove(bad)
                heapq.heapify(inbox)
                if not inbox:
                    state.inbox = None
                if bad.kind == "health":  # made by stage 1: no bytes of its own; say whence
                    link, _, cause = bad.data
                    reason = f"{reason} (the health of link {link!r} after input {cause!r})"
                self.out.append(DeadLetter(service, reason, bad.raw, bad.origin))
                saved, mark, queued = snapshot(state), len(self.out), len(state.inbox or ())
                was = changed.get(service) if changed is not None else None
        if time is not None:
            if len(state.inbox or ()) != queued:  # inputs were applied: a new snapshot
                saved, mark = snapshot(state), len(self.out)
                was = changed.get(service) if changed is not None else None
            try:
                self._evaluate(service, state, time, tick_id)
                self._forget(state, time, self._services[service].policy)
            except Exception as exc:
                if fatal(exc):
                    raise
                self._rollback(state, saved, mark)
                self._remark(service, was)
                self.failures.append((service, internal_error(exc)))
                return
        self._arm(service, state)

    def _remark(self, service: str, was: tuple[int, str] | None) -> None:
        """Put back ``service``'s change mark as it was at the snapshot."""
        changed = self._changed
        if changed is None:
            return
        if was is None:
            changed.pop(service, None)
        else:
            changed[service] = was

    def _rollback(self, state: ServiceState, saved: tuple[Any, ...], mark: int) -> None:
        restore(state, saved)
        del self.out[mark:]
        self._firing = None
        self._applying = None

    def _drain(self, service: str, state: ServiceState, limit: tuple[int, int] | None) -> None:
        inbox = state.inbox
        queued = state.queued
        while inbox and (limit is None or (inbox[0].time, inbox[0].rank) < limit):
            item = heapq.heappop(inbox)
            if queued is not None:
                queued.discard(item.id)
            self._applying = item
            # What held until this instant was sustained until it: a spell that ends between
            # two ticks still counts, at the time of the input that ends it.
            cause = item.data[2] if item.kind == "health" else item.id
            self._evaluate(service, state, item.time, cause)
            self._apply(service, state, item)
        self._applying = None
        if not inbox:
            state.inbox = state.queued = None
            self._pending.discard(service)

    def _forget(self, state: ServiceState, time: int, policy: Policy) -> None:
        horizon = time - policy.dedup_horizon
        seen = state.seen
        if seen:
            # Oldest first: stop at the first id still within the horizon.
            while seen and next(iter(seen.values())) < horizon:
                seen.popitem(last=False)
            if not seen:
                state.seen = None
        if state.floor is not None and state.floor < horizon:
            state.floor = None  # what it guarded against is refused as too-old now

    # -- applying inputs -------------------------------------------------------------------

    def _apply(self, service: str, s: ServiceState, item: Input) -> None:
        svc = self._services[service]
        if item.kind != "health" and (svc.offline or item.kind != "record"):
            # (A record for an online-only service is refused whatever the state: a copy of
            # it will be too, so it need not be remembered.)
            seen = s.seen
            if seen is None:
                seen = s.seen = OrderedDict()
            seen[item.id] = item.time
            if len(seen) > svc.policy.dedup_max_ids:
                _, forgotten = seen.popitem(last=False)
                if s.floor is None or forgotten > s.floor:
                    s.floor = forgotten
        if item.kind == "health":
            link, health, cause = item.data
            if s.link_health is None:
                s.link_health = {}
            if self._changed is not None and s.link_health.get(link, HEALTHY) != health:
                self._changed[service] = (item.time, item.id)
            if health == HEALTHY:
                s.link_health.pop(link, None)
            else:
                s.link_health[link] = health
            if not s.link_health:
                s.link_health = None
            s.set_health(service_health(svc.requires, s.link_health), item.time)
            self._evaluate(service, s, item.time, cause)
        elif item.kind == "override":
            self._override(svc, s, item)
        elif item.kind == "record":
            self._record(svc, s, item)
        elif item.kind == "maintenance":
            self._maintenance(svc, s, item)
        else:
            self._reconciled(svc, s, item)

    def _maintenance(self, svc: Service, s: ServiceState, item: Input) -> None:
        """A window action, judged already for every service it affects
        (:meth:`workflows.maintenance.Windows.judge`): planned, extended or cancelled here."""
        action, wid, start, end, links, notice_id, notice_en, actor, role, reason, at = item.data
        windows = list(s.windows or ())
        index = next((i for i, w in enumerate(windows) if w.id == wid), None)
        if action == "announce":
            if index is None:
                announce_at = max(start - svc.policy.announce_before, at)
                planned = tuple(links) if links is not None else None
                new = PlannedWindow(wid, announce_at, start, end, PENDING, planned, notice_id,
                                    notice_en, actor, role, reason)  # fmt: skip
                windows.append(new)
                windows.sort(key=lambda w: (w.start, w.id))
        elif index is not None and action == "extend":
            w = windows[index] = windows[index]._replace(end=end)
            if w.phase == STARTED:
                s.quiet_until = end if s.quiet_until is None else max(s.quiet_until, end)
            if w.phase != PENDING:
                self._window_notices(svc, s, w, at, "extend", item.id)
        elif index is not None:
            w = windows.pop(index)
            if w.phase == ANNOUNCED:
                self._window_notices(svc, s, w, at, "cancel", item.id)
            elif w.phase == STARTED and s.quiet_until is not None and s.quiet_until > item.time:
                ends = [x.end for x in windows if x.phase == STARTED]
                s.quiet_until = max([item.time, *ends])
        s.windows = tuple(windows) or None
        self._evaluate(svc.id, s, item.time, item.id)

    def _reject(self, service: str, item: Input, reason: str) -> None:
        if item.kind == "override":
            self._audit(self._services[service], item, reason)
        self.out.append(DeadLetter(service, reason, item.raw, item.origin))

    def _audit(
        self,
        svc: Service,
        item: Input,
        reason: str | None,
        verdict: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """The audit record of an operator's override: applied, or refused and why (or
        pending: a release waiting for a second operator)."""
        action, actor, role, words, *signed = item.data
        data = {"action": action, "actor": actor, "role": role, "reason": words}
        key_id = signed[0] if signed else None
        until = signed[1] if len(signed) > 1 else None
        if until is not None:
            extra = {"until": until, **(extra or {})}
        self.out.append(
            audit(item.id, svc.id, svc.site, item.time, data, key_id, reason, verdict, extra)
        )

    def _override(self, svc: Service, s: ServiceState, item: Input) -> None:
        """Apply an operator's override (verified when it entered: workflows/operators.py);
        audited either way."""
        extra = self._act(svc, s, item)
        if extra is not None:
            self._audit(svc, item, None, None, extra)

    def _until(self, svc: Service, item: Input) -> tuple[bool, int | None]:
        """An override's ``until`` as an instant: ``(True, until or None)``, or ``(False,
        None)`` when it was rejected (dead-lettered and audited: an ``until`` on an action
        that does not last, one the engine cannot keep, or one not after the override)."""
        action = item.data[0]
        text = item.data[5] if len(item.data) > 5 else None
        if text is None:
            return True, None
        if action not in ("force_manual", "pin"):
            self._reject(svc.id, item, f"not-applicable: until has no meaning for {action}, "
                         "which does not last (only force_manual and pin expire)")  # fmt: skip
            return False, None
        try:
            until = parse_event_time(text)
        except ValueError as exc:
            self._reject(svc.id, item, f"bad-time: until: {exc}")
            return False, None
        if until <= item.time:
            self._reject(svc.id, item, f"not-applicable: until {text[:64]} is not after the "
                         f"override's time, {format_time(item.time)}")  # fmt: skip
            return False, None
        return True, until

    def _act(self, svc: Service, s: ServiceState, item: Input) -> dict[str, Any] | None:
        """The audit record's extra fields if the override applied; ``None`` if it was
        rejected (dead-lettered, audited) or waits for a second operator (audited)."""
        action, actor, role, reason = item.data[:4]
        operator = {"action": action, "actor": actor, "role": role, "reason": reason}
        accepted = (action, actor, role, reason, item.time)
        extra: dict[str, Any] = {}
        ok, until = self._until(svc, item)
        if not ok:
            return None
        if action == "force_manual":
            if s.state not in ("online", "degraded"):
                self._reject(svc.id, item, f"not-applicable: force_manual while {s.state}")
                return None
            self._operated(svc, s, accepted, item)
            s.forced_until = until
            held = f" until {format_time(until)}" if until is not None else ""
            self._fire(svc, s, "suspend", item.time, item.id, "operator-force-manual",
                       f"forced to manual{held} by {actor} ({role}): {reason}",
                       operator)  # fmt: skip
        elif action == "release":
            if s.state != "manual":
                self._reject(svc.id, item, f"not-applicable: release while {s.state}")
                return None
            detail = f"released by {actor} ({role}): {reason}"
            if not svc.offline and s.health != HEALTHY:
                first = s.release
                if first is None:
                    self._wait_for_approval(svc, s, item)
                    return None
                if first[1] == actor:
                    self._reject(svc.id, item, f"same-operator: the release {first[0]!r} by "
                                 f"{actor} waits for a second, different operator's approval; "
                                 "the same operator's cannot give it")  # fmt: skip
                    return None
                # The second operator's release: both are applied, the first named first.
                s.release = None
                ident, by, by_role, words, _, key_id = first
                data = {"action": "release", "actor": by, "role": by_role, "reason": words}
                self.out.append(audit(ident, svc.id, svc.site, item.time, data, key_id, None,
                                      None, {"approved_by": item.id}))  # fmt: skip
                extra["approves"] = ident
                operator = data
                detail = f"released by {by} ({by_role}) while {HEALTH_NAMES[s.health]}, " \
                         f"approved by {actor} ({role}): {words}"  # fmt: skip
            self._operated(svc, s, accepted, item)
            self._fire(svc, s, "restore", item.time, item.id, "operator-release", detail,
                       operator)  # fmt: skip
        elif action == "pin":
            s.pin = (actor, role, reason)
            s.pin_until = until
            self._operated(svc, s, accepted, item)
            self._notice(svc, s, item.time, "oncall", "pinned-oncall", f"pin/{item.id}",
                         actor=actor, role=role, reason=reason)  # fmt: skip
            return extra
        else:
            if s.pin is None:
                self._reject(svc.id, item, "not-applicable: unpin while not pinned")
                return None
            s.pin = None
            s.pin_until = None
            self._operated(svc, s, accepted, item)
            self._notice(svc, s, item.time, "oncall", "unpinned-oncall", f"unpin/{item.id}",
                         actor=actor, role=role, reason=reason)  # fmt: skip
        self._evaluate(svc.id, s, item.time, item.id)
        return extra

    def _wait_for_approval(self, svc: Service, s: ServiceState, item: Input) -> None:
        """A release of an online-only service whose links are not healthy: it waits for a
        second, different operator's release within ``release_approval_window``."""
        _, actor, role, reason, *signed = item.data
        key_id = signed[0] if signed else None
        s.release = (item.id, actor, role, reason, item.time, key_id)
        if self._changed is not None:
            self._changed[svc.id] = (item.time, item.id)
        window = svc.policy.release_approval_window
        expires = item.time + window
        why = (
            f"two-person: releasing online-only service {svc.id!r} while it is "
            f"{HEALTH_NAMES[s.health]} needs a second, different operator's release within "
            f"{format_duration(window)} (release_approval_window), by {format_time(expires)}"
        )
        self._audit(svc, item, why, "pending", {"expires": format_time(expires)})
        self._notice(svc, s, item.time, "staff", "release-pending-staff",
                     f"release-pending/{item.id}", actor=actor, role=role, reason=reason,
                     until=expires)  # fmt: skip

    def _lapse(self, svc: Service, s: ServiceState, time: int, why: str) -> None:
        """The waiting release is no more: audited ``lapsed``, and the staff told when it
        lapsed for want of an approval (``why`` starts ``lapsed``)."""
        pending = s.release
        expires = release_expires(s, svc.policy)
        assert pending is not None
        assert expires is not None
        s.release = None
        ident, actor, role, reason, _, key_id = pending
        if self._changed is not None:
            self._changed[svc.id] = (time, ident)
        data = {"action": "release", "actor": actor, "role": role, "reason": reason}
        self.out.append(audit(ident, svc.id, svc.site, time, data, key_id, why, "lapsed",
                              {"expires": format_time(expires)}))  # fmt: skip
        if why.startswith("lapsed"):
            self._notice(svc, s, time, "staff", "release-lapsed-staff",
                         f"release-lapsed/{ident}", actor=actor, role=role)  # fmt: skip

    def _record(self, svc: Service, s: ServiceState, item: Input) -> None:
        (record_id,) = item.data
        if not svc.offline:
            self._reject(svc.id, item, "not-applicable: online-only service keeps no ledger")
            return
        if s.state not in ("manual", "restored") or s.incident is None:
            self._reject(svc.id, item, f"not-applicable: manual record while {s.state}")
            return
        if s.ledger is None:
            s.ledger = {}
        if record_id in s.ledger:
            return
        s.unreconciled += 1
        if self._changed is not None:
            self._changed[svc.id] = (item.time, item.id)
        if s.state == "manual":
            s.ledger[record_id] = _RECORDED
            return
        # Written on paper before restoration, logged after it: reconcile it on its own.
        s.ledger[record_id] = _SENT
        self._command(svc, s, item.time, "failover.reconcile.v1", f"record/{record_id}",
                      {"record_ids": [record_id]})  # fmt: skip

    def _reconciled(self, svc: Service, s: ServiceState, item: Input) -> None:
        record_ids, incident = item.data
        if s.incident is None or (incident is not None and incident != s.incident):
            self._reject(svc.id, item, f"not-applicable: incident {incident or '(open)'} is "
                         "not open for this service")  # fmt: skip
            return
        ledger = s.ledger or {}
        known = [rid for rid in record_ids if rid in ledger]
        if not known:
            self._reject(svc.id, item, "unknown-records: none of record_ids is in the ledger")
            return
        for rid in known:
            if ledger[rid] != _RECONCILED:
                ledger[rid] = _RECONCILED
                s.unreconciled -= 1
                if self._changed is not None:
                    self._changed[svc.id] = (item.time, item.id)
        self._evaluate(svc.id, s, item.time, item.id)

    # -- evaluation ------------------------------------------------------------------------

    def _evaluate(self, service: str, s: ServiceState, time: int, cause: str) -> None:
        svc = self._services[service]
        policy = svc.policy
        if s.windows:
            self._windows_due(svc, s, time, cause)
        if s.pin_until is not None and s.pin_until <= time:
            self._pin_expired(svc, s, time, cause)
        expires = release_expires(s, policy)
        if expires is not None and expires <= time:
            window = format_duration(policy.release_approval_window)
            self._lapse(svc, s, time, f"lapsed: no second, different operator released within "
                        f"{window} (release_approval_window)")  # fmt: skip
        for _ in range(len(TRANSITIONS) + 1):  # each pass fires one edge; no cycle is longer
            for condition in conditions(s, policy):
                if condition.deadline <= time:
                    self._fire(svc, s, condition.trigger, time, cause, condition.reason,
                               condition.detail, None)  # fmt: skip
                    break
            else:
                break
        for deadline, role in list(_escalations(s, policy)):
            if deadline <= time:
                self._escalate(svc, s, time, role)

    def _windows_due(self, svc: Service, s: ServiceState, time: int, cause: str) -> None:
        """What the service's maintenance windows hold for ``time``, in order of their start:
        the announcement, the start (to manual, planned), the end (no longer in the way of
        restoration)."""
        kept: list[PlannedWindow] = []
        for window in s.windows or ():
            w = window
            if w.phase == PENDING and w.announce_at <= time:
                w = w._replace(phase=ANNOUNCED)
                # Stamped when it was due: the same on every path (workflows/maintenance.py).
                self._window_notices(svc, s, w, w.announce_at, "announce", f"{w.id}/announce")
            if w.phase == ANNOUNCED and w.start <= time:
                if w.end <= time:
                    continue  # over before the service could take it
                w = w._replace(phase=STARTED)
                s.quiet_until = w.end if s.quiet_until is None else max(s.quiet_until, w.end)
                trigger = {"online": "suspend", "degraded": "suspend", "restored": "relapse"}
                if s.pin is None and s.state in trigger:
                    operator = {"action": "maintenance", "actor": w.actor, "role": w.role,
                                "reason": w.reason}  # fmt: skip
                    detail = (
                        f"planned maintenance {w.id} from {format_time(w.start)} until "
                        f"{format_time(w.end)}, by {w.actor} ({w.role}): {w.reason}"
                    )
                    self._fire(svc, s, trigger[s.state], time, cause, "maintenance", detail,
                               operator, w)  # fmt: skip
            if w.phase == STARTED and w.end <= time:
                continue  # over: the service restores as usual once healthy
            kept.append(w)
        s.windows = tuple(kept) or None

    def _window_notices(
        self, svc: Service, s: ServiceState, w: PlannedWindow, time: int, what: str, qualifier: str
    ) -> None:
        """The public and staff notices of a window's announcement, extension or
        cancellation (``what``)."""
        fields: dict[str, object] = {
            "window": w.id, "start": w.start, "end": w.end, "notice_id": w.notice_id,
            "notice_en": w.notice_en,
        }  # fmt: skip
        kind = "manual" if svc.offline else "hold"
        public = f"maintenance-{what}-{kind}-public" if what == "announce" else \
            f"maintenance-{what}-public"  # fmt: skip
        self._notice(svc, s, time, "public", public, f"maintenance/{qualifier}", **fields)
        self._notice(svc, s, time, "staff", f"maintenance-{what}-staff",
                     f"maintenance/{qualifier}", **fields)  # fmt: skip

    def _pin_expired(self, svc: Service, s: ServiceState, time: int, cause: str) -> None:
        """A pin with ``until`` ends at that time: the service returns as usual."""
        assert s.pin is not None
        actor, role, _ = s.pin
        until = s.pin_until
        assert until is not None
        s.pin = s.pin_until = None
        if self._changed is not None:
            self._changed[svc.id] = (time, cause)
        self._notice(svc, s, time, "oncall", "pin-expired-oncall",
                     f"pin-expired/{format_time(until)}", actor=actor, role=role)  # fmt: skip

    def _fire(self, svc: Service, s: ServiceState, trigger: str, time: int, cause: str,
              reason: str, detail: str, operator: dict[str, str] | None,
              window: PlannedWindow | None = None) -> None:  # fmt: skip
        self._firing = _Firing(svc, s, time, cause, reason, detail, operator, window)
        cursor = self._cursor
        cursor.state = s.state
        try:
            self._machine.events[trigger].trigger(cursor)
        finally:
            s.state = cursor.state
            self._firing = None

    # Callbacks that `transitions` calls with the EventData.

    def _on_transition(self, event: Any) -> None:
        f = self._firing
        assert f is not None
        s, svc, source, dest = f.state, f.service, event.transition.source, event.transition.dest
        if source == "online":
            base = f"{svc.id}@{format_compact(f.time)}"
            s.incident = _next_incident(base, s.previous)
            s.step = 0
        s.step += 1
        if dest in ("manual", "restored") or source == "restored":
            s.baseline = f.time
        if source == "manual":
            s.forced_until = None
            if s.release is not None:  # left manual another way: the waiting release is moot
                self._lapse(svc, s, f.time, f"superseded: the service left manual "
                            f"({f.reason}) before a second operator released it")  # fmt: skip
        s.entered = (f.time, f.reason, f.detail)
        if self._changed is not None:
            self._changed[svc.id] = (f.time, f.cause)
        data: dict[str, Any] = {
            "service": svc.id,
            "site": svc.site,
            "incident": s.incident,
            "from": source,
            "to": dest,
            "reason": f.reason,
            "detail": f.detail,
            "cause": f.cause,
            "health": HEALTH_NAMES[s.health],
        }
        if f.operator is not None:
            data["operator"] = f.operator
        assert s.incident is not None
        self.out.append(Emitted(TRANSITIONS_TOPIC, svc.id, cloudevent(
            "failover.transition.v1", output_id(svc.id, s.incident, str(s.step), "transition"),
            svc.site, f.time, svc.id, data)))  # fmt: skip

    def _enter_online(self, event: Any) -> None:
        f = self._firing
        assert f is not None
        s, svc = f.state, f.service
        if event.transition.source == "restored":
            self._notice(svc, s, f.time, "staff", "closed-staff", "closed",
                         records=len(s.ledger or ()))  # fmt: skip
        else:
            self._notice(svc, s, f.time, "staff", "recovered-staff", "recovered")
        s.previous, s.incident = s.incident, None
        s.ledger = None
        s.unreconciled = 0
        s.escalated = ()
        s.manual_since = None
        s.quiet_until = None

    def _enter_degraded(self, event: Any) -> None:
        f = self._firing
        assert f is not None
        s, svc = f.state, f.service
        self._notice(svc, s, f.time, "staff", "degraded-staff", "degraded")
        self._notice(svc, s, f.time, "oncall", "degraded-oncall", "degraded",
                     health=HEALTH_NAMES[s.health], links=self._bad_links(s))  # fmt: skip

    def _enter_manual(self, event: Any) -> None:
        f = self._firing
        assert f is not None
        s, svc = f.state, f.service
        s.manual_since = f.time
        # Paper (offline) or a held queue; a planned window's notices say so and name it.
        kind = "manual" if svc.offline else "hold"
        w = f.window
        fields: dict[str, object] = {}
        if w is not None:
            kind = f"maintenance-{kind}"
            fields = {"window": w.id, "end": w.end, "notice_id": w.notice_id,
                      "notice_en": w.notice_en}  # fmt: skip
        self._notice(svc, s, f.time, "public", f"{kind}-public", "manual", **fields)
        if not svc.offline:
            self._command(svc, s, f.time, "failover.queue.hold.v1", "hold",
                          {"queue": svc.queue})  # fmt: skip
        self._notice(svc, s, f.time, "staff", f"{kind}-staff", "manual", incident=s.incident,
                     **fields)  # fmt: skip

    def _enter_restored(self, event: Any) -> None:
        f = self._firing
        assert f is not None
        s, svc = f.state, f.service
        if not svc.offline:
            self._command(svc, s, f.time, "failover.queue.release.v1", "release",
                          {"queue": svc.queue})  # fmt: skip
        self._notice(svc, s, f.time, "public", "resumed-public", "restored")
        if s.ledger:
            # Only what was never sent: a relapse and a second restoration reconcile the
            # records written since, not the same records again.
            fresh = sorted(rid for rid, st in s.ledger.items() if st == _RECORDED)
            if fresh:
                for rid in fresh:
                    s.ledger[rid] = _SENT
                for qualifier, fields in reconcile_pages(fresh):
                    self._command(svc, s, f.time, "failover.reconcile.v1", qualifier, fields)

    # -- emitting --------------------------------------------------------------------------

    def _operated(
        self, svc: Service, s: ServiceState, accepted: tuple[str, str, str, str, int], item: Input
    ) -> None:
        """An operator action was accepted: it is the read model's last one."""
        s.operator = accepted
        if self._changed is not None:
            self._changed[svc.id] = (item.time, item.id)

    def _state_record(self, service: str, s: ServiceState, time: int, cause: str) -> None:
        """The read model of ``service`` now, made by the input ``cause`` at ``time``."""
        site = self._services[service].site
        ident = output_id(service, "state", str(time), cause)
        data = self.read_model(service, s)
        self.out.append(
            Emitted(STATE, service, cloudevent(STATE_TYPE, ident, site, time, service, data))
        )

    def read_model(self, service: str, s: ServiceState | None = None) -> dict[str, Any]:
        """The ``data`` of ``service``'s ``failover.service.state.v1`` record now (its state
        ``s``, the stage's own by default)."""
        svc = self._services[service]
        if s is None:
            s = self.state_of(service)
        zone = self.topology.sites[svc.site].timezone
        bad = s.link_health or {}
        ledger = len(s.ledger) if s.ledger else 0
        entered, operator, pin = s.entered, s.operator, s.pin
        return {
            "schema_version": STATE_SCHEMA_VERSION,
            "service": service,
            "site": svc.site,
            "offline": svc.offline,
            "state": s.state,
            "since": format_offset(entered[0], zone) if entered else None,
            "incident": s.incident,
            "health": HEALTH_NAMES[s.health],
            "links": [
                {"link": link, "health": HEALTH_NAMES[bad.get(link, HEALTHY)]}
                for link in svc.links
            ],
            "queue": {"held": not svc.offline and s.state == "manual", "name": svc.queue},
            "manual": {"open": s.unreconciled, "reconciled": ledger - s.unreconciled},
            "pin": None if pin is None else {
                "state": s.state, "actor": pin[0], "role": pin[1], "reason": pin[2],
                **({} if s.pin_until is None else
                   {"until": format_offset(s.pin_until, zone)}),
            },
            "last_operator": None if operator is None else {
                "action": operator[0], "actor": operator[1], "role": operator[2],
                "reason": operator[3], "time": format_offset(operator[4], zone),
            },
            "last_reason": entered[2] if entered else None,
            "last_reason_code": entered[1] if entered else None,
            # Only when there is one, so records without them read as before.
            **({} if s.release is None else {"pending_release": {
                "override": s.release[0], "actor": s.release[1], "role": s.release[2],
                "reason": s.release[3], "time": format_offset(s.release[4], zone),
                "expires": format_offset(
                    s.release[4] + svc.policy.release_approval_window, zone),
            }}),
            **({} if s.forced_until is None or s.state != "manual" else
               {"forced_until": format_offset(s.forced_until, zone)}),
        }  # fmt: skip

    def _bad_links(self, s: ServiceState) -> str:
        bad = s.link_health or {}
        return _listed([f"{link}={HEALTH_NAMES[h]}" for link, h in sorted(bad.items())]) or "-"

    def _escalate(self, svc: Service, s: ServiceState, time: int, role: str) -> None:
        policy = svc.policy
        s.escalated = (*s.escalated, role)
        since = s.manual_since
        if role == "office-head":
            site = self.topology.sites[svc.site]
            reason = f"manual for more than {format_duration(policy.escalate_after)}; " \
                     f"{site.head} to coordinate with the provider"  # fmt: skip
            self._command(svc, s, time, "failover.escalate.v1", "office-head",
                          {"to": "office-head", "reason": reason})  # fmt: skip
            self._notice(svc, s, time, "authority", "escalate-authority", "office-head",
                         since=since)  # fmt: skip
            return
        failing: dict[str, list[str]] = {}
        for link, health in sorted((s.link_health or {}).items()):
            if health != HEALTHY:
                failing.setdefault(self.topology.links[link].provider, []).append(link)
        for provider, links in sorted(failing.items()):
            reason = f"links {_listed(links)} failing; service manual since " \
                     f"{format_time(since or time)}"  # fmt: skip
            self._command(
                svc,
                s,
                time,
                "failover.escalate.v1",
                f"provider/{provider}",
                {"to": "provider", "reason": reason, "provider": provider},
            )
            self._notice(svc, s, time, "provider", "escalate-provider", f"provider/{provider}",
                         provider=provider, links=_listed(links), since=since)  # fmt: skip

    def _notice(self, svc: Service, s: ServiceState, time: int, audience: str, template: str,
                qualifier: str, **fields: object) -> None:  # fmt: skip
        site = self.topology.sites[svc.site]
        fields.setdefault("incident", s.incident or NO_INCIDENT)
        self._command(svc, s, time, "failover.notice.v1", f"{audience}/{qualifier}", {
            "audience": audience,
            "template": template,
            "text": render(template, svc, site, time, **fields),
        })  # fmt: skip

    def _command(self, svc: Service, s: ServiceState, time: int, type_: str, qualifier: str,
                 fields: dict[str, Any]) -> None:  # fmt: skip
        incident = s.incident or NO_INCIDENT
        data = {"service": svc.id, "site": svc.site, "incident": incident, **fields}
        ident = output_id(svc.id, incident, str(s.step), type_, qualifier)
        self.out.append(
            Emitted(COMMANDS, svc.id, cloudevent(type_, ident, svc.site, time, svc.id, data))
        )


assert HEALTH < OVERRIDE < FEEDBACK < TICK
