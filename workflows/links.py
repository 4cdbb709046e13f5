"""Stage 1, keyed by link: fold probe readings into link health, emit only changes.

This is where the volume is (every probe reading), so the common case, a reading that
confirms what is known, costs a few dict and attribute operations and allocates nothing but
one tuple. Staleness and flap damping are timers in one heap, woken only by ticks.

A link remembers the ids of the readings at its newest instant, to drop duplicates: at most
:data:`MAX_IDS_PER_INSTANT` of them. A reading at that instant with an id it does not
remember, once it remembers that many, is refused with the reason ``dedup-overflow`` (the
caller dead-letters it: whether it is a duplicate can no longer be told, so it is neither
applied nor dropped), and a flood at one instant cannot grow a link's state.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any, Final, NamedTuple

from workflows.health import DOWN, HEALTH, HEALTHY, IMPAIRED, TICK, order_key
from workflows.isolation import fatal, internal_error, restore, slot_getter
from workflows.timeutil import format_time
from workflows.topology import LinkPolicy, Topology

__all__ = ["MAX_IDS_PER_INSTANT", "HealthChange", "LinkStage", "LinkState"]

#: Readings of one link at one instant whose ids a link remembers; a further one is refused.
#: Ids are at most 256 characters, so a link's state stays well under 300 KB.
MAX_IDS_PER_INSTANT: Final = 1000

_STATUS = {"up": HEALTHY, "degraded": IMPAIRED, "down": DOWN}


class HealthChange(NamedTuple):
    """A link's effective health changed. Ordered by ``(time, rank, id)`` at stage 2."""

    time: int
    rank: int
    id: str
    link: str
    health: int
    cause: str
    reason: str  # "probe", "stale", "flapping" or "quiet"


class LinkState:
    """What is known of one link. Serialisable with :meth:`to_json` for changelog tables."""

    __slots__ = ("changes", "damped", "effective", "ids", "last_seen", "newest", "raw", "stale",
                 "timer")  # fmt: skip

    def __init__(self) -> None:
        self.raw = HEALTHY
        self.effective = HEALTHY
        self.newest = -1  # event time of the newest reading applied
        # Ids of the readings at ``newest``, to drop duplicates: a tuple of one (nearly
        # always), a dict used as an ordered set from the second reading at that instant on.
        self.ids: tuple[str, ...] | dict[str, None] = ()
        self.last_seen = -1
        self.stale = False
        self.changes: tuple[int, ...] = ()  # times of recent raw changes, for flap damping
        self.damped = False
        self.timer: int | None = None  # the deadline this link has in the timer heap

    def to_json(self) -> list[Any]:
        return [self.raw, self.effective, self.newest, list(self.ids), self.last_seen,
                self.stale, list(self.changes), self.damped, self.timer]  # fmt: skip

    @classmethod
    def from_json(cls, value: list[Any]) -> LinkState:
        state = cls()
        (state.raw, state.effective, state.newest, ids, state.last_seen, state.stale, changes,
         state.damped, state.timer) = value  # fmt: skip
        state.ids = tuple(ids) if len(ids) < 2 else dict.fromkeys(ids)
        state.changes = tuple(changes)
        return state


#: Every slot of a link's state: all immutable values, so no copy is needed.
_snapshot = slot_getter(LinkState)


class LinkStage:
    """Link health for a set of links. One instance per stage-1 partition on Kafka, one for
    all links in replay. Time advances only through :meth:`on_tick`."""

    def __init__(
        self,
        topology: Topology,
        links: set[str] | None = None,
        *,
        max_ids_per_instant: int = MAX_IDS_PER_INSTANT,
    ) -> None:
        self._max_ids = max_ids_per_instant
        self._policy: dict[str, LinkPolicy] = {
            link_id: link.policy
            for link_id, link in topology.links.items()
            if links is None or link_id in links
        }
        self.states: dict[str, LinkState] = {}
        self._timers: list[tuple[int, str]] = []
        self.watermark: int | None = None
        #: ``(link, reason)`` for each link whose timers raised at a tick (it was left as it
        #: was before the tick: :mod:`workflows.isolation`), until the caller empties it.
        self.failures: list[tuple[str, str]] = []

    def restore(self, link: str, state: LinkState) -> None:
        """Adopt a state recovered from a changelog, and re-arm its timer."""
        self.states[link] = state
        if state.timer is not None:
            heapq.heappush(self._timers, (state.timer, link))

    def _arm(self, link: str, state: LinkState, deadline: int) -> None:
        if state.timer is None or deadline < state.timer:
            state.timer = deadline
            heapq.heappush(self._timers, (deadline, link))

    def on_status(
        self,
        link: str,
        event_id: str,
        time: int,
        status: str,
        latency_ms: float | None,
        loss_pct: float | None,
    ) -> HealthChange | str | None:
        """Apply one probe reading; return the change of effective health, if any.

        A reading older than the newest one applied never moves health backwards; one with
        the same time and id as an applied reading is a duplicate. Both change nothing.

        Returns:
            The change, ``None`` if there is none, or the reason the reading is refused
            (``dedup-overflow: ...``, past ``max_ids_per_instant``, by default
            :data:`MAX_IDS_PER_INSTANT`): the caller dead-letters it.
        """
        try:
            state = self.states[link]
        except KeyError:  # a link's first reading before the first tick
            state = self.states[link] = LinkState()
        if time > state.newest:  # nearly every reading: probes report forward in time
            state.newest = state.last_seen = time
            state.ids = (event_id,)
        elif time < state.newest or event_id in state.ids:
            return None
        else:
            ids = state.ids
            if len(ids) >= self._max_ids:
                return (
                    f"dedup-overflow: link {link!r} has {len(ids)} readings at "
                    f"{format_time(time)} already, the most whose ids are remembered; "
                    "whether this one is a duplicate cannot be told"
                )
            if isinstance(ids, tuple):
                ids = state.ids = dict.fromkeys(ids)
            ids[event_id] = None
            state.last_seen = time
        policy = self._policy[link]
        raw = _STATUS[status]
        if raw != DOWN and (
            (latency_ms is not None and latency_ms >= policy.latency_degraded_ms)
            or (loss_pct is not None and loss_pct >= policy.loss_degraded_pct)
        ):
            raw = IMPAIRED
        if state.timer is None:
            self._arm(link, state, time + policy.stale_after)
        if raw == state.raw and not state.stale:
            return None
        state.stale = False
        return self._raw_change(link, state, policy, raw, time, event_id, "probe")

    def _raw_change(
        self,
        link: str,
        state: LinkState,
        policy: LinkPolicy,
        raw: int,
        time: int,
        cause: str,
        reason: str,
    ) -> HealthChange | None:
        if raw != state.raw:
            state.raw = raw
            horizon = time - policy.flap_window
            changes = [t for t in state.changes if t > horizon]
            changes.append(time)
            state.changes = tuple(changes[-policy.flap_threshold :])
            if len(state.changes) >= policy.flap_threshold and not state.damped:
                state.damped = True
                reason = "flapping"
            if state.damped:
                self._arm(link, state, time + policy.flap_quiet)
        effective = max(raw, IMPAIRED) if state.damped else raw
        if effective == state.effective:
            return None
        state.effective = effective
        return self._change(link, state, time, cause, reason)

    def _change(
        self, link: str, state: LinkState, time: int, cause: str, reason: str
    ) -> HealthChange:
        at, rank = order_key(time, HEALTH, self.watermark)
        return HealthChange(at, rank, f"{link}|{cause}", link, state.effective, cause, reason)

    def on_tick(self, time: int, tick_id: str, *, known: bool = True) -> list[HealthChange]:
        """Advance the watermark to ``time``: links silent for ``stale_after`` go down, damped
        links quiet for ``flap_quiet`` are trusted again. Returns the changes, in order.

        With ``known`` (the default), links of the stage that have never reported start
        their staleness clock at the first tick, so a probe that never spoke is noticed too.
        """
        if self.watermark is not None and time <= self.watermark:
            return []
        if self.watermark is None and known:
            self._start_clocks(self._policy, time)
        changes: list[HealthChange] = []
        timers = self._timers
        while timers and timers[0][0] <= time:
            deadline, link = heapq.heappop(timers)
            woken = self.states.get(link)
            if woken is None or woken.timer != deadline:
                continue  # superseded by an earlier deadline, or its reading was undone
            self._wake_one(link, woken, time, tick_id, changes)
        # Only now: what the timers found happened at this tick, not after it.
        self.watermark = time
        return changes

    def tracked(self) -> int:
        """How many links the stage holds (:meth:`release` takes them out)."""
        return len(self._policy)

    def release(self, link: str) -> LinkState | None:
        """Take ``link`` out of the stage: its state (``None``: it has none yet), which
        another stage may :meth:`restore`. Its timers here are forgotten."""
        self._policy.pop(link, None)
        return self.states.pop(link, None)

    def catch_up(self, link: str, ticks: list[tuple[int, str]]) -> list[HealthChange]:
        """Apply ``ticks`` (``(time, id)``, in order, each after the stage's watermark) to
        ``link`` alone, as :meth:`on_tick` would have, and leave the stage's watermark as it
        was: for a link about to move to a stage that has applied them already. Returns the
        link's changes, in order.

        The same steps as :meth:`on_tick`, for one link: its clock starts at the first tick,
        and it wakes when its own timer is due (its entry stays in the heap, stale).

        Raises:
            KeyError: ``link`` is not one of the stage's.
        """
        if link not in self._policy:
            raise KeyError(link)
        changes: list[HealthChange] = []
        before = self.watermark
        try:
            for time, tick_id in ticks:
                if self.watermark is not None and time <= self.watermark:
                    continue
                if self.watermark is None:
                    self._start_clocks((link,), time)
                state = self.states.get(link)
                if state is not None and state.timer is not None and state.timer <= time:
                    self._wake_one(link, state, time, tick_id, changes)
                self.watermark = time
        finally:
            self.watermark = before
        return changes

    def _start_clocks(self, links: Iterable[str], time: int) -> None:
        """The first tick, at ``time``: those of ``links`` that have never reported start
        their staleness clock."""
        for link in links:
            if link not in self.states:
                state = self.states[link] = LinkState()
                state.last_seen = time
                self._arm(link, state, time + self._policy[link].stale_after)

    def _wake_one(
        self, link: str, state: LinkState, time: int, tick_id: str, changes: list[HealthChange]
    ) -> None:
        """Wake ``link``, whose timer is due at ``time``; its change, if any, to ``changes``.
        If waking it raises, it is left as it was, unarmed (it waits for a reading), and
        listed in :attr:`failures`: one link's fault stops neither the tick nor the others."""
        state.timer = None
        saved = _snapshot(state)
        try:
            change = self._wake(link, state, time, tick_id)
        except Exception as exc:
            if fatal(exc):
                raise
            restore(state, saved)
            self.failures.append((link, internal_error(exc)))
            return
        if change is not None:
            changes.append(change)

    def _wake(self, link: str, state: LinkState, time: int, tick_id: str) -> HealthChange | None:
        policy = self._policy[link]
        change = None
        if state.damped and state.changes[-1] + policy.flap_quiet <= time:
            state.damped = False
            state.changes = ()
            if state.raw != state.effective:
                state.effective = state.raw
                change = self._change(link, state, time, tick_id, "quiet")
        if not state.stale and state.last_seen + policy.stale_after <= time:
            state.stale = True
            stale = self._raw_change(link, state, policy, DOWN, time, tick_id, "stale")
            change = stale or change
        if not state.stale:
            self._arm(link, state, state.last_seen + policy.stale_after)
        if state.damped:
            self._arm(link, state, state.changes[-1] + policy.flap_quiet)
        return change


assert TICK > HEALTH  # a link's change at T is applied before the tick at T evaluates it
