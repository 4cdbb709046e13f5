"""The board's in-memory read model: the last ``service-state`` record of every service, and
the recent history of every incident from ``service-transitions`` and ``failover-commands``.

Nothing here talks to Kafka or reads the clock: records go in through :meth:`Board.apply`
with the wall-clock time they were received, and queries read the result. A record that is
not what the contract says (not JSON, another type, a field of the wrong kind) changes
nothing and is counted by reason in :attr:`Board.skipped`.

Bounds (the board runs for months):

- per service: its contract data object as compact JSON bytes plus a few fields to filter on;
- per incident: the newest :data:`MAX_EVENTS` timeline entries (transitions and commands)
  and the newest :data:`MAX_NOTICES` notices; older ones are dropped and counted;
- incidents: at most :data:`MAX_INCIDENTS`; past that the oldest closed incident is
  forgotten first (an open one only when none in the oldest :data:`_EVICT_SCAN` is closed).
"""

from __future__ import annotations

import re
import sys
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Final

import orjson

__all__ = [
    "MAX_EVENTS",
    "MAX_INCIDENTS",
    "MAX_NOTICES",
    "STATES",
    "Board",
    "Entry",
    "Incident",
    "Query",
    "QueryError",
    "ServiceRow",
    "duration_text",
    "since_text",
]

STATES: Final = ("online", "degraded", "manual", "restored")
STATES_INTERNED: Final = {state: state for state in STATES}
STATE_TYPE: Final = "failover.service.state.v1"
TRANSITION_TYPE: Final = "failover.transition.v1"
COMMAND_PREFIX: Final = "failover."

MAX_EVENTS: Final = 200
MAX_NOTICES: Final = 50
MAX_INCIDENTS: Final = 20_000
_EVICT_SCAN: Final = 64
#: Longest text kept from a record's free-text field (a reason, a detail).
MAX_TEXT: Final = 1000

# The same pattern as the page's script (streams/board/static/board.js), so that a time is
# shown the same whether the server or the browser wrote it.
_RFC3339 = re.compile(
    r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d)(?::\d\d(?:\.\d+)?)?(Z|[+-]\d\d:\d\d)$", re.IGNORECASE
)


class QueryError(ValueError):
    """A query parameter is unknown or has a value the board does not accept."""


def parse_time(text: object) -> datetime | None:
    """An RFC 3339 time with an explicit offset, or ``None``."""
    if not isinstance(text, str) or not _RFC3339.match(text):
        return None
    try:
        return datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        return None


def since_text(since: str | None) -> str:
    """``2019-02-05T08:12:00+09:00`` as ``2019-02-05 08:12 +09:00`` (the site's own offset,
    as the record carries it); an unreadable value as it is."""
    if since is None:
        return ""
    match = _RFC3339.match(since)
    if not match:
        return since
    offset = match.group(3).upper()
    return f"{match.group(1)} {match.group(2)} {'+00:00' if offset == 'Z' else offset}"


def duration_text(seconds: float) -> str:
    """``3d 4h``, ``4h 05m`` or ``12m``: how long a state has lasted."""
    total = max(0, int(seconds)) // 60
    days, rest = divmod(total, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m"


def local_text(when: datetime, zone: tzinfo | None) -> str:
    """An event time in a site's local time, with its offset."""
    local = when.astimezone(zone) if zone is not None else when
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M:%S} {offset[:3]}:{offset[3:]}"


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text[:MAX_TEXT]


class ServiceRow:
    """The board's copy of one service's last state record."""

    __slots__ = (
        "data",
        "held",
        "incident",
        "open",
        "service",
        "since",
        "since_ts",
        "site",
        "state",
    )

    def __init__(self, service: str, site: str, state: str, data: bytes, fields: dict[str, Any]):
        self.service = service
        self.site = site
        self.state = state
        #: The record's ``data`` object, compact JSON, unknown fields kept.
        self.data = data
        incident = fields.get("incident")
        self.incident: str | None = incident if isinstance(incident, str) else None
        queue = fields.get("queue")
        self.held = isinstance(queue, dict) and queue.get("held") is True
        manual = fields.get("manual")
        count = manual.get("open") if isinstance(manual, dict) else None
        self.open = count if isinstance(count, int) and not isinstance(count, bool) else 0
        since = fields.get("since")
        self.since: str | None = since if isinstance(since, str) else None
        when = parse_time(since)
        self.since_ts: float | None = when.timestamp() if when is not None else None

    def fields(self) -> dict[str, Any]:
        value: dict[str, Any] = orjson.loads(self.data)
        return value


@dataclass(slots=True)
class Entry:
    """One line of an incident's timeline."""

    time: datetime
    kind: str  # "transition" or a command's type without "failover." and ".v1"
    summary: str
    reason: str | None = None

    def as_json(self, zone: tzinfo | None) -> dict[str, Any]:
        return {
            "time": self.time.isoformat(),
            "local_time": local_text(self.time, zone),
            "kind": self.kind,
            "summary": self.summary,
            "reason": self.reason,
        }


@dataclass(slots=True)
class Notice:
    time: datetime
    audience: str
    template: str
    text_id: str
    text_en: str

    def as_json(self, zone: tzinfo | None) -> dict[str, Any]:
        return {
            "time": self.time.isoformat(),
            "local_time": local_text(self.time, zone),
            "audience": self.audience,
            "template": self.template,
            "text": {"id": self.text_id, "en": self.text_en},
        }


@dataclass(slots=True)
class Incident:
    id: str
    service: str
    site: str
    start: datetime
    closed: bool = False
    events: deque[Entry] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))
    notices: deque[Notice] = field(default_factory=lambda: deque(maxlen=MAX_NOTICES))
    dropped: int = 0

    def add(self, entry: Entry) -> None:
        if len(self.events) == MAX_EVENTS:
            self.dropped += 1
        self.events.append(entry)
        self.start = min(self.start, entry.time)


_PARAMETERS: Final = ("site", "state", "not_online")


@dataclass(frozen=True, slots=True)
class Query:
    """Which services to list: ``site``, ``state`` and ``not_online`` (all optional)."""

    site: str | None = None
    state: str | None = None
    not_online: bool = False

    @classmethod
    def parse(
        cls, items: Iterable[tuple[str, str]], *, extra: tuple[str, ...] = ()
    ) -> tuple[Query, dict[str, str]]:
        """The query from URL parameters; ``extra`` names other parameters allowed, returned
        as a dict.

        Raises:
            QueryError: an unknown or repeated parameter, an unknown state, a bad flag.
        """
        seen: dict[str, str] = {}
        for name, value in items:
            if name not in _PARAMETERS and name not in extra:
                known = ", ".join((*_PARAMETERS, *extra))
                raise QueryError(f"unknown parameter {name[:100]!r}; known: {known}")
            if name in seen:
                raise QueryError(f"parameter {name!r} given twice")
            seen[name] = value
        site = seen.get("site") or None
        if site is not None and len(site) > 200:
            raise QueryError("site: longer than 200 characters")
        state = seen.get("state") or None
        if state is not None and state not in STATES:
            raise QueryError(f"state: {state[:100]!r} is not one of {', '.join(STATES)}")
        flag = seen.get("not_online", "")
        if flag not in ("", "0", "1"):
            raise QueryError(f"not_online: {flag[:100]!r} is not 1 or 0")
        rest = {name: seen[name] for name in extra if name in seen}
        return cls(site, state, flag == "1"), rest

    def matches(self, row: ServiceRow) -> bool:
        return (
            (self.site is None or row.site == self.site)
            and (self.state is None or row.state == self.state)
            and (not self.not_online or row.state != "online")
        )


class Board:
    """The read model. Feed it records with :meth:`apply`; read it with the queries."""

    def __init__(self, zones: dict[str, tzinfo] | None = None) -> None:
        self.services: dict[str, ServiceRow] = {}
        self.by_site: dict[str, set[str]] = {}
        self.not_online: set[str] = set()
        self.incidents: OrderedDict[str, Incident] = OrderedDict()
        #: Site time zones given by a topology; otherwise learnt from the records' offsets.
        self.given_zones: dict[str, tzinfo] = dict(zones or {})
        self.zones: dict[str, tzinfo] = {}
        #: The newest event time (CloudEvent ``time``) of any record read.
        self.newest_event: datetime | None = None
        #: Wall-clock time a record or an answer of the broker last arrived.
        self.heard_from_kafka: datetime | None = None
        self.skipped: dict[tuple[str, str], int] = {}
        self.dropped_events = 0
        self.forgotten_incidents = 0
        self._listeners: list[Any] = []
        #: Grows with every change of a service: answers built from the services are cached
        #: by it (and by the site's and the not-online services' own).
        self.version = 0
        self.site_versions: dict[str, int] = {}
        #: Grows with every change of a service that is or was not online.
        self.not_online_version = 0

    # --- input

    def listen(self, callback: Any) -> None:
        """``callback(row_or_None, service_id)`` after each change of a service's state."""
        self._listeners.append(callback)

    def heard(self, now: datetime) -> None:
        self.heard_from_kafka = now

    def apply(self, topic: str, kind: str, key: bytes | None, value: bytes | None) -> None:
        """One record of a topic; ``kind`` is ``state``, ``transitions`` or ``commands``."""
        if kind == "state" and value is None:
            if key is not None:
                self._delete(key.decode("utf-8", "replace"))
            return
        if value is None:
            return
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError:
            self._skip(topic, "not-json")
            return
        if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
            self._skip(topic, "not-a-cloudevent")
            return
        when = parse_time(event.get("time"))
        if when is None:
            self._skip(topic, "bad-time")
            return
        data: dict[str, Any] = event["data"]
        kind_of = event.get("type")
        if kind == "state":
            if kind_of != STATE_TYPE:
                self._skip(topic, "other-type")
                return
            self._state(topic, data, when)
        elif kind_of == TRANSITION_TYPE:
            self._transition(topic, data, when)
        elif isinstance(kind_of, str) and kind_of.startswith(COMMAND_PREFIX):
            self._command(topic, kind_of, data, when)
        else:
            self._skip(topic, "other-type")
            return
        if self.newest_event is None or when > self.newest_event:
            self.newest_event = when

    def _skip(self, topic: str, reason: str) -> None:
        self.skipped[topic, reason] = self.skipped.get((topic, reason), 0) + 1

    def _state(self, topic: str, data: dict[str, Any], when: datetime) -> None:
        service, site, state = data.get("service"), data.get("site"), data.get("state")
        if not (isinstance(service, str) and service and isinstance(site, str) and site):
            self._skip(topic, "no-service")
            return
        if state not in STATES:
            self._skip(topic, "bad-state")
            return
        assert isinstance(state, str)
        old = self.services.get(service)
        if old is not None and old.site != site:
            self.by_site.get(old.site, set()).discard(service)
        # A copy of exactly its length: orjson's own result keeps its whole write buffer
        # (4 KB for a 500-byte record), which would be most of the board's memory.
        compact = memoryview(orjson.dumps(data)).tobytes()
        row = ServiceRow(service, sys.intern(site), STATES_INTERNED[state], compact, data)
        self.services[service] = row
        self.by_site.setdefault(site, set()).add(service)
        if state == "online":
            self.not_online.discard(service)
        else:
            self.not_online.add(service)
        since = parse_time(row.since)
        if since is not None and site not in self.zones:
            self.zones[site] = since.tzinfo or UTC
        if old is not None and old.incident is not None and old.incident != row.incident:
            done = self.incidents.get(old.incident)
            if done is not None:
                done.closed = True
        if row.incident is not None:
            self._incident(row.incident, service, site, when)
        self._changed(row, old)
        for listener in self._listeners:
            listener(row, service)

    def _delete(self, service: str) -> None:
        row = self.services.pop(service, None)
        if row is None:
            return
        self.by_site.get(row.site, set()).discard(service)
        self.not_online.discard(service)
        self._changed(None, row)
        for listener in self._listeners:
            listener(None, service)

    def _changed(self, new: ServiceRow | None, old: ServiceRow | None) -> None:
        self.version += 1
        for row in (new, old):
            if row is not None:
                self.site_versions[row.site] = self.site_versions.get(row.site, 0) + 1
                if row.state != "online":
                    self.not_online_version += 1

    def version_of(self, query: Query) -> tuple[str, int]:
        """A version of the services ``query`` selects: it grows when any of them changes
        (and maybe more often, never less)."""
        if query.site is not None:
            return "site", self.site_versions.get(query.site, 0)
        if query.not_online or query.state not in (None, "online"):
            return "not-online", self.not_online_version
        return "all", self.version

    def _incident(self, incident: str, service: str, site: str, when: datetime) -> Incident:
        found = self.incidents.get(incident)
        if found is None:
            found = Incident(incident, service, site, when)
            self.incidents[incident] = found
            if len(self.incidents) > MAX_INCIDENTS:
                self._forget()
        else:
            found.start = min(found.start, when)
        return found

    def _forget(self) -> None:
        victim = next(iter(self.incidents))
        for count, (key, incident) in enumerate(self.incidents.items()):
            if count >= _EVICT_SCAN:
                break
            if incident.closed:
                victim = key
                break
        del self.incidents[victim]
        self.forgotten_incidents += 1

    def _ids(self, topic: str, data: dict[str, Any]) -> tuple[str, str, str] | None:
        service, site, incident = data.get("service"), data.get("site"), data.get("incident")
        if not all(isinstance(v, str) and v for v in (service, site, incident)):
            self._skip(topic, "no-incident")
            return None
        return str(service), str(site), str(incident)

    def _transition(self, topic: str, data: dict[str, Any], when: datetime) -> None:
        ids = self._ids(topic, data)
        if ids is None:
            return
        incident = self._incident(ids[2], ids[0], ids[1], when)
        summary = f"{_text(data.get('from'))} → {_text(data.get('to'))}"
        actor = data.get("actor")
        if isinstance(actor, str):
            summary += f" ({_text(actor)})"
        reason = " ".join(t for t in (_text(data.get("reason")), _text(data.get("detail"))) if t)
        self._add(incident, Entry(when, "transition", summary, reason or None))
        if data.get("to") == "online":
            incident.closed = True

    def _command(self, topic: str, kind: str, data: dict[str, Any], when: datetime) -> None:
        ids = self._ids(topic, data)
        if ids is None:
            return
        incident = self._incident(ids[2], ids[0], ids[1], when)
        name = kind.removeprefix(COMMAND_PREFIX).removesuffix(".v1")
        summary, reason = name, None
        if name == "notice":
            audience, template = _text(data.get("audience")) or "", _text(data.get("template"))
            summary = f"notice to {audience}: {template}"
            text = data.get("text")
            if isinstance(text, dict):
                incident.notices.append(
                    Notice(
                        when,
                        audience,
                        template or "",
                        _text(text.get("id")) or "",
                        _text(text.get("en")) or "",
                    )
                )
        elif name in ("queue.hold", "queue.release"):
            summary = f"{name} {_text(data.get('queue'))}"
        elif name == "reconcile":
            records = data.get("record_ids")
            summary = f"reconcile {len(records) if isinstance(records, list) else 0} records"
        elif name == "escalate":
            summary = f"escalate to {_text(data.get('to'))}"
            reason = _text(data.get("reason"))
        self._add(incident, Entry(when, name, summary, reason))

    def _add(self, incident: Incident, entry: Entry) -> None:
        before = incident.dropped
        incident.add(entry)
        self.dropped_events += incident.dropped - before

    # --- queries

    def zone(self, site: str) -> tzinfo | None:
        return self.given_zones.get(site) or self.zones.get(site)

    def select(self, query: Query) -> list[ServiceRow]:
        """The services ``query`` selects, ordered by site and service id."""
        if query.site is not None:
            ids: Iterable[str] = self.by_site.get(query.site, ())
        elif query.not_online or query.state not in (None, "online"):
            ids = self.not_online
        else:
            ids = self.services
        rows = [row for row in map(self.services.__getitem__, ids) if query.matches(row)]
        rows.sort(key=lambda row: (row.site, row.service))
        return rows

    def sites(self) -> list[str]:
        return sorted(site for site, ids in self.by_site.items() if ids)

    def newest_event_ts(self) -> float | None:
        return self.newest_event.timestamp() if self.newest_event is not None else None

    def counts(self) -> Iterator[tuple[str, str, int]]:
        """``(site, state, services)`` for every site and every state, zeros included."""
        tally: dict[tuple[str, str], int] = {}
        for row in self.services.values():
            tally[row.site, row.state] = tally.get((row.site, row.state), 0) + 1
        for site in self.sites():
            for state in STATES:
                yield site, state, tally.get((site, state), 0)

    def open_incident_start(self, row: ServiceRow) -> datetime | None:
        """When the open incident of a service began, as far as the board has seen it."""
        if row.incident is None:
            return None
        found = self.incidents.get(row.incident)
        if found is not None:
            return found.start
        return parse_time(row.since)

    def oldest_open_age(self) -> float | None:
        """Seconds from the start of the oldest open incident to the newest event time seen
        (event time, not the wall clock: a replayed or a stalled stream ages by its own
        clock); ``None`` before any record."""
        if self.newest_event is None:
            return None
        starts = [
            start
            for row in self.services.values()
            if row.incident is not None and (start := self.open_incident_start(row)) is not None
        ]
        if not starts:
            return 0.0
        return max(0.0, (self.newest_event - min(starts)).total_seconds())
