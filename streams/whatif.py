"""``failover what-if``: the same recording under two topologies, and what changes.

Two replays, no more, each streamed: a run is folded into a :class:`Summary` as its records
pass (per service its transitions, a count of its commands by kind, its time in ``manual``
and its incidents), so memory grows with the transitions, never with the inputs or the text
of the commands. :func:`compare` then says per service what changes from the first run to the
second: transitions earlier, later, added or gone; commands (notices, holds, releases,
reconciles, escalations) added or gone; time spent in ``manual``; incidents opened.

``--set path=value`` (:func:`apply_settings`) changes a copy of a topology's document, which
is then validated as the file is (:meth:`Topology.check`): a value of the wrong form is an
error with its path, as in the file.
"""

from __future__ import annotations

import copy
import difflib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import yaml

from workflows.recording import describe_gap
from workflows.records import COMMANDS, DeadLetter, Emitted
from workflows.timeutil import format_time, parse_event_time, parse_time
from workflows.topology import TopologyError

__all__ = ["Latest", "Summary", "apply_settings", "compare", "summarize", "text_report"]

Line = TypeVar("Line", bound=tuple[Any, ...])
#: A transition as compared: (time, from, to, reason).
Transition = tuple[int, str, str, str]


@dataclass
class Summary:
    """What one replay did, per service."""

    transitions: dict[str, list[Transition]] = field(default_factory=dict)
    commands: dict[str, Counter[str]] = field(default_factory=dict)
    #: Per service and command: the time of its first occurrence.
    first: dict[tuple[str, str], int] = field(default_factory=dict)
    manual: Counter[str] = field(default_factory=Counter)
    incidents: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    _since: dict[str, int] = field(default_factory=dict)  # services in manual: since when

    def add(self, record: Emitted | DeadLetter) -> None:
        if isinstance(record, DeadLetter):
            self.dead_letters += 1
            return
        event = record.event
        data = event["data"]
        service = record.key
        time = parse_time(event["time"])
        if event["type"] == "failover.transition.v1":
            before, after = data["from"], data["to"]
            self.transitions.setdefault(service, []).append((time, before, after, data["reason"]))
            if before == "online":
                self.incidents[service] += 1
            if after == "manual":
                self._since[service] = time
            elif before == "manual":
                self.manual[service] += time - self._since.pop(service, time)
            return
        if record.topic != COMMANDS:  # the operators' audit: not a command
            return
        command = _command(event["type"], data)
        counts = self.commands.setdefault(service, Counter())
        counts[command] += 1
        self.first.setdefault((service, command), time)

    def finish(self, end: int | None) -> None:
        """The end of the recording (its latest input time): a service still in ``manual``
        counts its time until then."""
        for service, since in self._since.items():
            if end is not None and end > since:
                self.manual[service] += end - since
        self._since.clear()


def _command(type_: str, data: Mapping[str, Any]) -> str:
    kind = type_.removeprefix("failover.").removesuffix(".v1")
    if kind == "notice":
        return f"notice {data['audience']} {data['template']}"
    if kind in ("queue.hold", "queue.release"):
        return f"{kind} {data['queue']}"
    if kind == "escalate":
        return f"escalate {data.get('provider') or data['to']}"
    return kind


def summarize(records: Iterable[Emitted | DeadLetter], end: int | None = None) -> Summary:
    summary = Summary()
    for record in records:
        summary.add(record)
    summary.finish(end)
    return summary


class _Time(msgspec.Struct):
    time: Any = None


_TIME = msgspec.json.Decoder(_Time)


class Latest:
    """Passes numbered lines through and keeps the latest event time among them (the end
    of the recording: a service still in ``manual`` counts its time until then)."""

    def __init__(self) -> None:
        self.time: int | None = None

    def watch(self, lines: Iterable[Line]) -> Iterator[Line]:
        last: object = None
        for line in lines:
            try:
                text = _TIME.decode(line[1]).time
            except (msgspec.DecodeError, RecursionError):
                text = None
            if text != last and isinstance(text, str):
                last = text
                try:
                    time = parse_event_time(text)
                except ValueError:
                    time = None
                if time is not None and (self.time is None or time > self.time):
                    self.time = time
            yield line


def _transition(t: Transition) -> dict[str, Any]:
    return {"time": format_time(t[0]), "from": t[1], "to": t[2], "reason": t[3]}


def compare(a: Summary, b: Summary) -> dict[str, dict[str, Any]]:
    """Per service that changes, what changes from ``a`` to ``b`` (services in the order
    they first appear in ``a``, then those only in ``b``)."""
    services = list(dict.fromkeys([*a.transitions, *a.commands, *b.transitions, *b.commands]))
    out: dict[str, dict[str, Any]] = {}
    for service in services:
        change: dict[str, Any] = {}
        ta, tb = a.transitions.get(service, []), b.transitions.get(service, [])
        moves = _transitions(ta, tb)
        if any(moves.values()):
            change["transitions"] = moves
        ca, cb = a.commands.get(service, Counter()), b.commands.get(service, Counter())
        added, gone = cb - ca, ca - cb
        if added or gone:
            change["commands"] = {
                "added": [
                    {"command": c, "count": n, "first": format_time(b.first[service, c])}
                    for c, n in sorted(added.items())
                ],
                "gone": [
                    {"command": c, "count": n, "first": format_time(a.first[service, c])}
                    for c, n in sorted(gone.items())
                ],
            }
        if a.manual[service] != b.manual[service]:
            change["manual"] = {
                "a": a.manual[service] // 1_000_000,
                "b": b.manual[service] // 1_000_000,
            }
        if a.incidents[service] != b.incidents[service]:
            change["incidents"] = {"a": a.incidents[service], "b": b.incidents[service]}
        if change:
            out[service] = change
    return out


def _transitions(ta: list[Transition], tb: list[Transition]) -> dict[str, list[dict[str, Any]]]:
    """Transitions matched by their edge (from, to) in order, after the prefix both runs
    share; a matched pair at different times is earlier or later, an unmatched one added or
    gone."""
    moves: dict[str, list[dict[str, Any]]] = {"earlier": [], "later": [], "added": [], "gone": []}
    if ta == tb:
        return moves
    # What both did alike up to their first difference is not matched again: the diff of
    # the edges alone could pair an early transition with a later one of the same edge.
    same = 0
    while same < min(len(ta), len(tb)) and ta[same] == tb[same]:
        same += 1
    ta, tb = ta[same:], tb[same:]
    edges = difflib.SequenceMatcher(None, [t[1:3] for t in ta], [t[1:3] for t in tb], False)
    for tag, i1, i2, j1, j2 in edges.get_opcodes():
        if tag == "equal":
            for x, y in zip(ta[i1:i2], tb[j1:j2], strict=True):
                if x[0] != y[0]:
                    entry = {"from": x[1], "to": x[2], "a": format_time(x[0]),
                             "b": format_time(y[0]), "by_seconds": (y[0] - x[0]) / 1e6}  # fmt: skip
                    moves["earlier" if y[0] < x[0] else "later"].append(entry)
        else:
            moves["gone"].extend(_transition(t) for t in ta[i1:i2])
            moves["added"].extend(_transition(t) for t in tb[j1:j2])
    return moves


def _steps(document: Any, path: str) -> list[str]:
    """The keys of a dotted path; a key that exists with dots in it (ids may hold dots) is
    taken whole, the longest that exists."""
    parts = path.split(".")
    steps: list[str] = []
    here = document
    index = 0
    while index < len(parts):
        taken = 1
        if isinstance(here, Mapping):
            for end in range(len(parts), index, -1):
                if ".".join(parts[index:end]) in here:
                    taken = end - index
                    break
        step = ".".join(parts[index : index + taken])
        steps.append(step)
        here = here.get(step) if isinstance(here, Mapping) else None
        index += taken
    return steps


def apply_settings(document: Any, settings: list[str], file: str) -> Any:
    """A copy of ``document`` with each ``path=value`` set (``policy.restore_after=30m``,
    ``services.ektp.policy.manual_after=2m``); the value is read as a YAML scalar (``30m``
    text, ``800`` a number). Missing mappings on the way are made.

    Raises:
        TopologyError: a setting without ``=``, an empty path, a value that is not a scalar,
            or a path through something that is not a mapping.
    """
    out = copy.deepcopy(document)
    for setting in settings:
        path, equals, text = setting.partition("=")
        where = f"--set {setting[:200]}"
        if not equals or not path or any(not part for part in path.split(".")):
            raise TopologyError(file, where, "not PATH=VALUE (a dotted path, e.g. "
                                "policy.restore_after=30m)")  # fmt: skip
        try:
            value = yaml.safe_load(text) if text.strip() else text
        except yaml.YAMLError:
            value = text
        if value is not None and not isinstance(value, str | int | float | bool):
            raise TopologyError(file, where, "the value must be a text, number or boolean")
        here = out
        steps = _steps(out, path)
        for step in steps[:-1]:
            if not isinstance(here, dict):
                break
            here = here.setdefault(step, {})
        if not isinstance(here, dict):
            raise TopologyError(file, where, "goes through something that is not a mapping")
        here[steps[-1]] = value
    return out


def _seconds(seconds: int) -> str:
    return describe_gap(seconds * 1_000_000)


def text_report(changes: Mapping[str, Mapping[str, Any]], a: str, b: str) -> list[str]:
    """The comparison for people, a line each (names escaped by the caller's data)."""
    if not changes:
        return [f"no change: {b} does with this recording exactly what {a} does"]
    lines = [f"what changes from A ({a}) to B ({b}), per service:"]
    for service, change in changes.items():
        lines.append("")
        lines.append(f"{service}:")
        moves = change.get("transitions", {})
        for kind in ("earlier", "later"):
            for m in moves.get(kind, []):
                lines.append(
                    f"  {m['from']} → {m['to']} {kind} by {_seconds(int(abs(m['by_seconds'])))}: "
                    f"{m['a']} in A, {m['b']} in B"
                )
        for kind in ("added", "gone"):
            for m in moves.get(kind, []):
                lines.append(f"  {m['from']} → {m['to']} {kind} ({m['reason']} at {m['time']})")
        commands = change.get("commands", {})
        for kind in ("added", "gone"):
            for c in commands.get(kind, []):
                times = f"{c['count']}x, first at {c['first']}"
                lines.append(f"  command {kind}: {c['command']} ({times})")
        if "manual" in change:
            m = change["manual"]
            delta = m["b"] - m["a"]
            sign = "+" if delta > 0 else "-"
            lines.append(
                f"  time in manual: {_seconds(m['a'])} in A, {_seconds(m['b'])} in B "
                f"({sign}{_seconds(abs(delta))})"
            )
        if "incidents" in change:
            i = change["incidents"]
            lines.append(f"  incidents: {i['a']} in A, {i['b']} in B")
    return lines
