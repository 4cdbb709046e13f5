"""The human side of ``failover replay``: per service, what happened, when, and why.

Built as the records stream past, in bounded memory whatever the length of the run: per
service the first and the last :data:`KEEP` rows, with a count of those in between; per row
at most :data:`COMMANDS_PER_ROW` commands; the first and last :data:`KEEP` dead letters.

A row's "why" is the transition's detail with its instants in the site's local time, and,
for a transition caused by the service's links, the links that were bad then because they
were ``stale`` (no reading within ``stale_after``) or ``flapping`` (held at impaired): told
by the core as it makes each change of a link's health (:meth:`Timeline.link_changed`).

Everything shown that comes from an input or a file (subjects, reasons, names) goes to rich
as :class:`~rich.text.Text`, never as markup, and through
:func:`~streams.printable.printable`: no ``[tag]`` in it is interpreted and no control
character (escape, carriage return, bidirectional override) reaches the terminal.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Generic, TypeVar
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table
from rich.text import Text

from streams.printable import printable
from workflows.health import HEALTHY
from workflows.links import HealthChange
from workflows.records import STATE, DeadLetter, Emitted
from workflows.replay import Origin
from workflows.timeutil import parse_time
from workflows.topology import Topology

__all__ = ["COMMANDS_PER_ROW", "KEEP", "Timeline"]

#: Rows kept at each end of a service's table (and dead letters at each end of theirs).
KEEP: Final = 25
#: Commands shown in one row; the rest are counted.
COMMANDS_PER_ROW: Final = 12
#: Characters of one "why" or reason cell.
TEXT_LIMIT: Final = 500

#: Changes of a link's health kept per link, to find the one in force at a transition.
_LINK_CHANGES: Final = 8

#: Transitions caused by the health of the service's links.
_HEALTH_REASONS: Final = frozenset({"impaired", "down-sustained", "impaired-sustained", "relapse"})

_STATE_STYLE = {"online": "green", "degraded": "yellow", "manual": "red", "restored": "cyan"}

T = TypeVar("T")


@dataclass
class _Row:
    time: int
    change: Text
    why: str
    commands: list[str] = field(default_factory=list)
    more: int = 0  # commands not kept

    def add(self, command: str) -> None:
        if len(self.commands) < COMMANDS_PER_ROW:
            self.commands.append(command)
        else:
            self.more += 1


class _Ends(Generic[T]):
    """The first and the last ``keep`` items of a sequence, and how many were in between."""

    def __init__(self, keep: int = KEEP) -> None:
        self.head: list[T] = []
        self.tail: deque[T] = deque(maxlen=keep)
        self.keep = keep
        self.skipped = 0

    def append(self, item: T) -> T | None:
        """Keep ``item``; return the one it pushed out of the middle, if any."""
        if len(self.head) < self.keep:
            self.head.append(item)
            return None
        dropped = self.tail[0] if len(self.tail) == self.keep else None
        if dropped is not None:
            self.skipped += 1
        self.tail.append(item)
        return dropped

    def last(self) -> T | None:
        if self.tail:
            return self.tail[-1]
        return self.head[-1] if self.head else None

    def __bool__(self) -> bool:
        return bool(self.head)


def _command(event: dict[str, object]) -> str:
    data = event["data"]
    assert isinstance(data, dict)
    kind = str(event["type"]).removeprefix("failover.").removesuffix(".v1")
    if kind == "notice":
        return f"notice→{data['audience']} ({data['template']})"
    if kind in ("queue.hold", "queue.release"):
        return f"{kind} {data['queue']}"
    if kind == "reconcile":
        ids = data["record_ids"]
        assert isinstance(ids, list)
        return f"reconcile {len(ids)} record{'s' if len(ids) != 1 else ''}"
    if kind == "escalate":
        target = data.get("provider") or data["to"]
        return f"escalate→{target}"
    return kind


class Timeline:
    """Takes replay outputs one at a time and prints them as a table per service."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._rows: dict[str, _Ends[_Row]] = {}
        #: Per service: transitions and commands in rows no longer kept.
        self._skipped: Counter[str] = Counter()
        self.dead: _Ends[DeadLetter] = _Ends()
        #: Jumps of the file's clock, as reported (workflows/recording.py): shown at the end.
        self.jumps: list[str] = []
        self.counts: Counter[str] = Counter()
        #: Which clock the replay used (the header's first line), if said.
        self.clock: str | None = None
        #: Per link, after each of its last few changes of health: (time, health, stale,
        #: damped): why a service's links were bad when it moved.
        self._links: dict[str, deque[tuple[int, int, bool, bool]]] = {}

    def link_changed(self, change: HealthChange) -> None:
        """A change of a link's health, as the core made it (``replay(on_health=...)``): a
        link is stale from a change for staleness until a reading changes it again, and
        flapping from a change for flapping until one for being quiet again."""
        changes = self._links.get(change.link)
        if changes is None:
            changes = self._links[change.link] = deque(maxlen=_LINK_CHANGES)
        _, _, stale, damped = changes[-1] if changes else (0, HEALTHY, False, False)
        reason = change.reason
        stale = reason == "stale" or (stale and reason != "probe")
        damped = reason == "flapping" or (damped and reason != "quiet")
        changes.append((change.time, change.health, stale, damped))

    def _link_reasons(self, service: str, time: int) -> str:
        """`` (link L stale, link M flapping)`` for the service's links that were bad at
        ``time`` because they were stale or flapping; empty if none was."""
        found = []
        for link in self.topology.services[service].links:
            at = [c for c in self._links.get(link, ()) if c[0] <= time]
            if not at or at[-1][1] == HEALTHY:
                continue
            _, _, stale, damped = at[-1]
            if stale:
                found.append(f"link {link} stale")
            if damped:
                found.append(f"link {link} flapping")
        return f" ({', '.join(found)})" if found else ""

    def add(self, record: Emitted | DeadLetter) -> None:
        """One output record, in the order replay made them."""
        if isinstance(record, DeadLetter):
            # Only the reason and where are shown: the bytes (up to the input limit) go.
            self.dead.append(record._replace(raw=b""))
            self.counts["dead letters"] += 1
            return
        if record.topic == STATE:  # the read model repeats what the rows show
            self.counts["state records"] += 1
            return
        event = record.event
        rows = self._rows.get(record.key)
        if rows is None:
            rows = self._rows[record.key] = _Ends()
        data = event["data"]
        time = parse_time(event["time"])
        if event["type"] == "failover.transition.v1":
            self.counts["transitions"] += 1
            change = Text.assemble(
                (data["from"], _STATE_STYLE.get(data["from"], "")),
                " → ",
                (data["to"], f"bold {_STATE_STYLE.get(data['to'], '')}"),
            )
            why = data["detail"]
            if "operator" in data:
                why = f"{data['reason']}: {why}"
            elif data["reason"] in _HEALTH_REASONS and record.key in self.topology.services:
                why += self._link_reasons(record.key, time)
            self._push(record.key, rows, _Row(time, change, why))
        else:
            self.counts["commands"] += 1
            last = rows.last()
            if last is not None and last.time == time:
                last.add(_command(event))
            else:
                row = _Row(time, Text("·", style="dim"), "")
                row.add(_command(event))
                self._push(record.key, rows, row)

    def _push(self, service: str, rows: _Ends[_Row], row: _Row) -> None:
        dropped = rows.append(row)
        if dropped is not None:
            self._skipped[service] += (
                len(dropped.commands) + dropped.more + (0 if dropped.why == "" else 1)
            )

    def print(self, console: Console) -> None:
        if self.clock is not None:
            console.print(Text.assemble(("clock: ", "bold"), _text(self.clock, None)))
            console.print()
        for service_id in self.topology.services:
            service = self.topology.services[service_id]
            site = self.topology.sites[service.site]
            rows = self._rows.get(service_id)
            title = _text(f"{service_id}: {service.name_id} / {service.name_en} — {site.name}")
            if not rows:
                line = Text.assemble(title, "  ", ("online throughout", "green"))
                line.stylize("bold", 0, len(title))
                console.print(line)
                console.print()
                continue
            table = Table(title=title, title_justify="left", title_style="bold", expand=False)
            table.add_column(f"local time ({site.timezone.key})", no_wrap=True)
            table.add_column("state", no_wrap=True)
            table.add_column("why")
            table.add_column("commands")
            for row in rows.head:
                _add_row(table, row, site.timezone)
            if rows.skipped:
                table.add_row(
                    "…",
                    Text(f"{rows.skipped} rows not shown", style="dim"),
                    Text(f"{self._skipped[service_id]} transitions and commands", style="dim"),
                    "",
                )
            for row in rows.tail:
                _add_row(table, row, site.timezone)
            console.print(table)
            console.print()
        if self.dead:
            table = Table(title="dead letters (kept in the output as topic failover-deadletter)",
                          title_justify="left", title_style="bold")  # fmt: skip
            table.add_column("where", no_wrap=True)
            table.add_column("reason")
            for dead in self.dead.head:
                table.add_row(*_dead_row(dead))
            if self.dead.skipped:
                table.add_row("…", Text(f"{self.dead.skipped} not shown", style="dim"))
            for dead in self.dead.tail:
                table.add_row(*_dead_row(dead))
            console.print(table)
            console.print()
        if self.jumps:
            console.print(Text("clock jumps (reported, not refused: a file is trusted)",
                               style="bold"))  # fmt: skip
            for jump in self.jumps:
                console.print(Text("  ") + _text(jump, None))
            console.print()
        summary = ", ".join(f"{count} {name}" for name, count in sorted(self.counts.items()))
        console.print(Text(summary or "no output", style="bold"))


def _text(value: object, limit: int | None = TEXT_LIMIT) -> Text:
    """Input-derived text as rich shows it: literally, control characters escaped."""
    return Text(printable(value, limit))


def _add_row(table: Table, row: _Row, zone: ZoneInfo) -> None:
    commands = [printable(c, TEXT_LIMIT) for c in row.commands]
    if row.more:
        commands.append(f"… {row.more} more")
    why = _UTC_TIME.sub(lambda match: _localized(match.group(), zone), row.why)
    table.add_row(_local(row.time, zone), row.change, _text(why), Text("\n".join(commands)))


def _localized(text: str, zone: ZoneInfo) -> str:
    """A UTC instant of a "why" in the site's local time; as it was if it is no instant (an
    operator's words may hold anything)."""
    try:
        return _local(parse_time(text), zone)
    except (ValueError, OverflowError):
        return text


#: An instant as the core writes it in a transition's detail (UTC): shown in local time.
_UTC_TIME: Final = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?Z\b")


def _dead_row(dead: DeadLetter) -> tuple[Text, Text]:
    origin = dead.origin
    where = f"{origin.file}:{origin.line}" if isinstance(origin, Origin) else "?"
    return _text(where), _text(dead.reason)


def _local(micros: int, zone: ZoneInfo) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    return moment.astimezone(zone).strftime("%a %d %b %H:%M:%S")
