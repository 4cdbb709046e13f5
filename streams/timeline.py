"""The human side of ``failover replay``: per service, what happened, when, and why."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table
from rich.text import Text

from workflows.records import STATE, DeadLetter, Emitted
from workflows.replay import Origin
from workflows.timeutil import parse_time
from workflows.topology import Topology

__all__ = ["Timeline"]

_STATE_STYLE = {"online": "green", "degraded": "yellow", "manual": "red", "restored": "cyan"}


@dataclass
class _Row:
    time: int
    change: Text
    why: str
    commands: list[str] = field(default_factory=list)


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
    """Collects replay outputs and prints them as a table per service."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._rows: dict[str, list[_Row]] = defaultdict(list)
        self.dead: list[DeadLetter] = []
        #: Jumps of the file's clock, as reported (workflows/clock.py): shown at the end.
        self.jumps: list[str] = []
        self.counts: Counter[str] = Counter()

    def add(self, records: Iterable[Emitted | DeadLetter]) -> None:
        for record in records:
            if isinstance(record, DeadLetter):
                self.dead.append(record)
                self.counts["dead letters"] += 1
                continue
            if record.topic == STATE:  # the read model repeats what the rows show
                self.counts["state records"] += 1
                continue
            event = record.event
            rows = self._rows[record.key]
            data = event["data"]
            time = parse_time(event["time"])
            if event["type"] == "failover.transition.v1":
                self.counts["transitions"] += 1
                change = Text.assemble(
                    (data["from"], _STATE_STYLE[data["from"]]),
                    " → ",
                    (data["to"], f"bold {_STATE_STYLE[data['to']]}"),
                )
                why = data["detail"]
                if "operator" in data:
                    why = f"{data['reason']}: {why}"
                rows.append(_Row(time, change, why))
            else:
                self.counts["commands"] += 1
                if rows and rows[-1].time == time:
                    rows[-1].commands.append(_command(event))
                else:
                    rows.append(_Row(time, Text("·", style="dim"), "", [_command(event)]))

    def print(self, console: Console) -> None:
        for service_id in self.topology.services:
            service = self.topology.services[service_id]
            site = self.topology.sites[service.site]
            rows = self._rows.get(service_id, [])
            title = f"{service_id}: {service.name_id} / {service.name_en} — {site.name}"
            if not rows:
                console.print(f"[bold]{title}[/bold]  [green]online throughout[/green]\n")
                continue
            table = Table(title=title, title_justify="left", title_style="bold", expand=False)
            table.add_column(f"local time ({site.timezone.key})", no_wrap=True)
            table.add_column("state", no_wrap=True)
            table.add_column("why")
            table.add_column("commands")
            for row in rows:
                local = _local(row.time, site.timezone)
                table.add_row(local, row.change, row.why, "\n".join(row.commands))
            console.print(table)
            console.print()
        if self.dead:
            table = Table(title="dead letters (kept in the output as topic failover-deadletter)",
                          title_justify="left", title_style="bold")  # fmt: skip
            table.add_column("where", no_wrap=True)
            table.add_column("reason")
            for dead in self.dead:
                origin = dead.origin
                where = f"{origin.file}:{origin.line}" if isinstance(origin, Origin) else "?"
                table.add_row(where, dead.reason)
            console.print(table)
            console.print()
        if self.jumps:
            console.print(Text("clock jumps (reported, not refused: a file is trusted)",
                               style="bold"))  # fmt: skip
            for jump in self.jumps:
                console.print(Text(f"  {jump}"))
            console.print()
        summary = ", ".join(f"{count} {name}" for name, count in sorted(self.counts.items()))
        console.print(f"[bold]{summary or 'no output'}[/bold]")


def _local(micros: int, zone: ZoneInfo) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    return moment.astimezone(zone).strftime("%a %d %b %H:%M:%S")
