"""Planned maintenance windows: an outage the operators know of before it comes.

A window (``operator.maintenance.v1``) is a planned outage of some links, of every link of a
provider, or of a whole site, from ``start`` to ``end``, with the operator's reason and a
public notice in Indonesian and English. It is signed and granted like an override
(:mod:`workflows.operators`: the same keys, the same checks, a grant naming the action
``maintenance``), and every accepted or refused window action gets one audit record.

What a window does to each service it affects (:func:`affected`: a service that its links
being down would take down; every service of a site):

- ``announce_before`` (policy, default ``1d``) before ``start``, or at once when it is
  announced later than that, the public and the staff are told it is coming. What a window
  says is stamped with when it was due (the announcement) or with the action's own time
  (an extension, a cancellation), not with the tick that applied it: on Kafka each
  partition's copy may follow a different tick, and every partition must say the same;
- at ``start`` the service goes to manual (an online-only service holds its queue), with
  notices that say the outage is planned; no automatic restoration while it lasts;
- during the window nobody is escalated to and no on-call page goes out for it: a service's
  escalations count from the window's end (its *quiet-until*), unless a link the window does
  not plan for fails too: an unplanned failure acts as it would without the window;
- at ``end`` the window is over, and the service restores as usual once it is healthy.

A window is cancelled or extended by the same type with ``action: cancel`` or ``extend``,
signed by an operator whose grants cover the window.

Routing. A window covers services that Kafka spreads over every partition, so a window action
is published to every partition of the overrides topic (as ticks are), keyed by the window id.
Each services partition judges its copy exactly as replay judges the one line (the same
:class:`Windows` registry, kept in the partition's state), and applies an accepted action to
its own services; only the partition that owns the window id (murmur2 of the key) writes the
audit record and the dead letter, so each is written once.

Everything here is pure: the same input, topology and clock give the same verdict and the
same outputs, byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, NamedTuple

from workflows.grants import Operator
from workflows.health import DOWN, service_health
from workflows.operators import (
    KEY_ATTRIBUTE,
    MAINTENANCE,
    audit,
    authenticate,
    stale_reason,
)
from workflows.records import Emitted
from workflows.timeutil import format_duration, format_time, parse_event_time
from workflows.topology import MAX_DURATION, Topology

__all__ = [
    "MAINTENANCE_TYPE",
    "MAX_ACTIONS",
    "MAX_WINDOWS",
    "SOURCE",
    "Accepted",
    "PlannedWindow",
    "Windows",
    "affected",
    "may_plan",
]

#: The CloudEvents type of a window action.
MAINTENANCE_TYPE: Final = "operator.maintenance.v1"
#: The most windows the engine keeps at once (planned, running, or ended or cancelled within
#: ``dedup_horizon``): past it, a new one is refused (``not-applicable``).
MAX_WINDOWS: Final = 1000
#: The most window action ids remembered within ``dedup_horizon`` (to refuse a replayed
#: one): past it, a new action is refused (``not-applicable``), so the registry stays bounded.
MAX_ACTIONS: Final = 10 * MAX_WINDOWS
#: The ``site`` part of an audit record's source for a window: ``/failover/maintenance``.
SOURCE: Final = "maintenance"

# Phases of a window at one service.
PENDING, ANNOUNCED, STARTED = 0, 1, 2


class PlannedWindow(NamedTuple):
    """One window as a service keeps it (immutable: a change replaces it)."""

    id: str
    announce_at: int
    start: int
    end: int
    phase: int
    #: The links of the service the window takes down; ``None``: all of them (a site's window).
    links: tuple[str, ...] | None
    notice_id: str
    notice_en: str
    actor: str
    role: str
    reason: str

    def to_json(self) -> list[Any]:
        return [*self[:5], list(self.links) if self.links is not None else None, *self[6:]]

    @classmethod
    def from_json(cls, value: list[Any]) -> PlannedWindow:
        wid, announce_at, start, end, phase, links, notice_id, notice_en, actor, role, why = value
        planned = tuple(links) if links is not None else None
        return cls(wid, announce_at, start, end, phase, planned, notice_id, notice_en, actor,
                   role, why)  # fmt: skip


class Accepted(NamedTuple):
    """An accepted window action: the audit record, and what each affected service gets,
    ``(service, fields)`` (the fields of the service stage's ``maintenance`` input: action,
    window id, start, end, planned links, notice in Indonesian and English, actor, role,
    reason, and the action's own time)."""

    audit: Emitted
    services: list[tuple[str, tuple[Any, ...]]]


def _scope(data: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    for kind in ("links", "site", "provider"):
        if kind in data:
            value = data[kind]
            return kind, tuple(value) if isinstance(value, list) else (value,)
    raise ValueError("a window names links, a site or a provider")  # the schema says so


def _unknown(topology: Topology, kind: str, targets: tuple[str, ...]) -> str | None:
    if kind == "links":
        for link in targets:
            if link not in topology.links:
                return f"not-applicable: no link {link[:128]!r} in the topology"
    elif kind == "site":
        if targets[0] not in topology.sites:
            return f"not-applicable: no site {targets[0][:128]!r} in the topology"
    elif targets[0] not in topology.links_by_provider:
        return f"not-applicable: no link of provider {targets[0][:128]!r} in the topology"
    return None


def _links_of(topology: Topology, kind: str, targets: tuple[str, ...]) -> tuple[str, ...]:
    if kind == "links":
        return targets
    if kind == "provider":
        return topology.links_by_provider.get(targets[0], ())
    return ()


def affected(
    topology: Topology, kind: str, targets: tuple[str, ...]
) -> list[tuple[str, tuple[str, ...] | None]]:
    """The services a window takes down, in id order, each with the links of it the window
    plans for (``None``: all, a site's window). A service with a redundant path the window
    leaves up is not affected: its health would stay as it is."""
    if kind == "site":
        return [(sid, None) for sid in sorted(topology.services)
                if topology.services[sid].site == targets[0]]  # fmt: skip
    links = _links_of(topology, kind, targets)
    down = dict.fromkeys(links, DOWN)
    found: set[str] = set()
    for link in links:
        found.update(topology.services_by_link.get(link, ()))
    out: list[tuple[str, tuple[str, ...] | None]] = []
    for sid in sorted(found):
        svc = topology.services[sid]
        if service_health(svc.requires, down) == DOWN:
            out.append((sid, tuple(link for link in svc.links if link in down)))
    return out


def may_plan(
    operator: Operator,
    topology: Topology,
    kind: str,
    targets: tuple[str, ...],
    services: Iterable[str],
) -> bool:
    """Whether ``operator`` may plan (extend, cancel) a window of ``kind`` on ``targets``
    that affects ``services``. Deny by default: a grant naming the action ``maintenance``
    must name what the window is of (the site; the provider; each link, or its provider),
    or else every service it affects (by its site or itself), and it must affect one."""
    grants = [grant for grant in operator.grants if MAINTENANCE in grant.actions]
    if not grants:
        return False
    if kind == "site":
        if any(targets[0] in grant.sites for grant in grants):
            return True
    elif kind == "provider":
        if any(targets[0] in grant.providers for grant in grants):
            return True
    elif all(
        any(link in g.links or topology.links[link].provider in g.providers for g in grants)
        for link in targets
    ):
        return True
    listed = list(services)
    return bool(listed) and all(
        any(sid in g.services or topology.services[sid].site in g.sites for g in grants)
        for sid in listed
    )


class _Window(NamedTuple):
    """A window as the registry keeps it."""

    kind: str
    targets: tuple[str, ...]
    start: int
    end: int
    #: When it was cancelled, or ``None``.
    cancelled: int | None


class Windows:
    """Every window the engine knows of, and the ids of the window actions it took: one per
    engine in replay, one per services partition on Kafka (each sees every action, so each
    holds the same). Bounded: a window is forgotten ``dedup_horizon`` after it ended, an
    action id ``dedup_horizon`` after its time, and at most :data:`MAX_WINDOWS` windows and
    :data:`MAX_ACTIONS` action ids are kept (past either, a new one is refused)."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.windows: dict[str, _Window] = {}
        self.seen: dict[str, int] = {}

    def to_json(self) -> dict[str, Any] | None:
        if not self.windows and not self.seen:
            return None
        return {
            "windows": {wid: [w.kind, list(w.targets), *w[2:]]
                        for wid, w in sorted(self.windows.items())},
            "seen": dict(sorted(self.seen.items())),
        }  # fmt: skip

    def load(self, value: Mapping[str, Any] | None) -> None:
        self.windows, self.seen = {}, {}
        if value:
            for wid, (kind, targets, start, end, cancelled) in value["windows"].items():
                self.windows[wid] = _Window(kind, tuple(targets), start, end, cancelled)
            self.seen = dict(value["seen"])

    def _forget(self, now: int) -> None:
        horizon = now - self.topology.policy.dedup_horizon
        self.seen = {aid: t for aid, t in self.seen.items() if t >= horizon}
        self.windows = {
            wid: w
            for wid, w in self.windows.items()
            if (w.cancelled if w.cancelled is not None else w.end) >= horizon
        }

    def judge(
        self, event: Mapping[str, Any], time: int, watermark: int | None
    ) -> tuple[str, Emitted | None] | Accepted:
        """The verdict on one window action (a schema-valid ``operator.maintenance.v1``),
        taken in log order: ``(reason, audit record)`` for a refusal (no audit record for a
        ``replayed`` copy: its action's verdict is audited once), else :class:`Accepted`,
        with the registry updated."""
        topology = self.topology
        data = event["data"]
        action, wid, ident = data["action"], event["subject"], event["id"]
        key_id = event.get(KEY_ATTRIBUTE)
        key_id = key_id if isinstance(key_id, str) else None

        def refused(reason: str) -> tuple[str, Emitted | None]:
            return reason, self._audit(event, time, key_id, reason)

        operator = authenticate(event, topology.operators, topology.unsigned_overrides)
        if isinstance(operator, str):
            return refused(operator)
        stale = stale_reason(event, time, watermark, topology.policy.signature_max_age)
        if stale is not None:
            return refused(stale)
        if ident in self.seen:
            return (f"replayed: maintenance action {ident[:128]!r} was taken already "
                    "(within dedup_horizon)", None)  # fmt: skip
        horizon = topology.policy.dedup_horizon
        if watermark is not None and time < watermark - horizon:
            return refused(f"too-old: older than dedup_horizon ({format_duration(horizon)}) "
                           "behind the clock")  # fmt: skip
        self._forget(max(time, watermark or time))
        window = self.windows.get(wid)
        if action == "announce":
            kind, targets = _scope(data)
            unknown = _unknown(topology, kind, targets)
            if unknown is not None:
                return refused(unknown)
            start, end = parse_event_time(data["start"]), parse_event_time(data["end"])
        else:
            if window is None:
                return refused(f"not-applicable: no window {wid!r} (announce it first)")
            kind, targets, start, end = window.kind, window.targets, window.start, window.end
        services = affected(topology, kind, targets)
        if operator is not None and not may_plan(
            operator, topology, kind, targets, (sid for sid, _ in services)
        ):
            return refused(
                f"forbidden: operator {operator.id!r} has no maintenance grant for a window "
                f"of {kind} {', '.join(targets)[:300]!r}"
            )
        problem = self._inapplicable(action, wid, window, time, start, end, data)
        if problem is not None:
            return refused(problem)
        if action == "announce":
            self.windows[wid] = _Window(kind, targets, start, end, None)
        elif action == "extend":
            assert window is not None
            end = parse_event_time(data["end"])
            self.windows[wid] = window._replace(end=end)
        else:
            assert window is not None
            self.windows[wid] = window._replace(cancelled=time)
        self.seen[ident] = time
        notice = data.get("notice") or {}
        fields = [
            (sid, (action, wid, start, end, links, notice.get("id", ""), notice.get("en", ""),
                   data["actor"], data["role"], data["reason"], time))
            for sid, links in services
        ]  # fmt: skip
        return Accepted(self._audit(event, time, key_id, None), fields)

    def _inapplicable(
        self,
        action: str,
        wid: str,
        window: _Window | None,
        time: int,
        start: int,
        end: int,
        data: Mapping[str, Any],
    ) -> str | None:
        if len(self.seen) >= MAX_ACTIONS:
            return f"not-applicable: {MAX_ACTIONS} window actions are remembered already"
        if action == "announce":
            if window is not None:
                return f"not-applicable: window {wid!r} exists already"
            if end <= start:
                return f"not-applicable: the window ends ({format_time(end)}) before it starts"
            if end <= time:
                return f"not-applicable: the window is over ({format_time(end)}) when announced"
            if end - start > MAX_DURATION:
                return "not-applicable: a window is at most 366d long"
            if len(self.windows) >= MAX_WINDOWS:
                return f"not-applicable: {MAX_WINDOWS} windows are kept already"
            return None
        assert window is not None
        if window.cancelled is not None:
            return f"not-applicable: window {wid!r} was cancelled"
        if window.end <= time:
            return f"not-applicable: window {wid!r} is over ({format_time(window.end)})"
        if action == "extend":
            new_end = parse_event_time(data["end"])
            if new_end <= window.end:
                return (f"not-applicable: extend to {format_time(new_end)}, not after the "
                        f"window's end {format_time(window.end)}")  # fmt: skip
            if new_end - window.start > MAX_DURATION:
                return "not-applicable: a window is at most 366d long"
        return None

    def _audit(
        self, event: Mapping[str, Any], time: int, key_id: str | None, reason: str | None
    ) -> Emitted:
        data = event["data"]
        return audit(event["id"], event["subject"], SOURCE, time, data, key_id, reason, None,
                     {"window": event["subject"]})  # fmt: skip
