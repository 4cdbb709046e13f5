"""Builders shared by the core's tests: small topologies written as YAML, input events as
CloudEvents, and a driver that runs :class:`workflows.engine.Engine` over them.

Times are whole seconds (or fractions) after :data:`EPOCH`, 2019-02-05T00:00:00Z, which is
09:00 WIT in Ambon.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import yaml

from workflows.engine import Engine
from workflows.records import AUDIT, COMMANDS, TRANSITIONS, DeadLetter, Emitted
from workflows.timeutil import parse_time
from workflows.topology import Topology

EPOCH = datetime(2019, 2, 5, tzinfo=UTC)
Event = dict[str, Any]
Record = Emitted | DeadLetter

# Short policies, so a test can walk through every state in a few simulated minutes.
POLICY: dict[str, Any] = {
    "degrade_after": "60s",
    "manual_after": "300s",
    "degraded_max": "600s",
    "recover_after": "120s",
    "restore_after": "300s",
    "relapse_after": "60s",
    "stale_after": "120s",
    "escalate_after": "1h",
    "latency_degraded_ms": 800,
    "loss_degraded_pct": 5,
}

SITE = "office"


# ----------------------------------------------------------------------------- time


def at(seconds: float) -> str:
    """The RFC 3339 timestamp ``seconds`` after :data:`EPOCH`."""
    moment = EPOCH + timedelta(seconds=seconds)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------- topology


def service(
    requires: list[Any],
    *,
    offline: bool = True,
    queue: str | None = None,
    site: str = SITE,
    policy: Mapping[str, Any] | None = None,
    name: tuple[str, str] = ("Layanan uji", "Test service"),
) -> dict[str, Any]:
    """One service entry; an online-only service gets a queue named after it by default."""
    entry: dict[str, Any] = {
        "site": site,
        "name": {"id": name[0], "en": name[1]},
        "requires": requires,
        "offline": offline,
    }
    if not offline:
        entry["queue"] = queue or "counter"
    elif queue is not None:
        entry["queue"] = queue
    if policy:
        entry["policy"] = dict(policy)
    return entry


def topology_yaml(
    services: Mapping[str, Mapping[str, Any]],
    links: Iterable[str] | Mapping[str, Mapping[str, Any]] = ("a",),
    *,
    policy: Mapping[str, Any] | None = None,
    sites: Mapping[str, Mapping[str, Any]] | None = None,
    unsigned: bool = True,
) -> str:
    """The YAML text of a topology: ``links`` as ids (provider ``isp``) or full entries;
    ``unsigned``: it takes unsigned overrides (``unsigned_overrides: accept``)."""
    if isinstance(links, Mapping):
        link_map = {k: dict(v) for k, v in links.items()}
    else:
        link_map = {link: {"provider": "isp"} for link in links}
    document = {
        "sites": dict(sites)
        if sites is not None
        else {
            SITE: {
                "name": "Kantor Uji",
                "timezone": "Asia/Jayapura",
                "head": "Kepala Kantor",
            }
        },
        "links": link_map,
        "services": {k: dict(v) for k, v in services.items()},
        "policy": dict(POLICY if policy is None else policy),
    }
    if unsigned:
        # The state machine's tests send overrides unsigned; test_operators.py tests signing.
        document["unsigned_overrides"] = "accept"
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def make_topology(
    services: Mapping[str, Mapping[str, Any]],
    links: Iterable[str] | Mapping[str, Mapping[str, Any]] = ("a",),
    *,
    policy: Mapping[str, Any] | None = None,
    sites: Mapping[str, Mapping[str, Any]] | None = None,
) -> Topology:
    """Write the topology as YAML text and load it the way an operator's file is loaded."""
    return Topology.parse(
        topology_yaml(services, links, policy=policy, sites=sites), "test-topology.yaml"
    )


# --------------------------------------------------------------------------- events


def envelope(
    type_: str, id_: str, seconds: float, subject: str | None, data: Any, source: str = "/test"
) -> Event:
    event: Event = {
        "specversion": "1.0",
        "id": id_,
        "source": source,
        "type": type_,
        "time": at(seconds),
    }
    if subject is not None:
        event["subject"] = subject
    event["data"] = data
    return event


def probe(
    link: str,
    t: float,
    status: str = "up",
    latency_ms: float | None = None,
    loss_pct: float | None = None,
    *,
    id: str | None = None,
) -> Event:
    return envelope(
        "link.status.v1",
        id or f"probe/{link}/{t}",
        t,
        link,
        {"status": status, "latency_ms": latency_ms, "loss_pct": loss_pct},
        "/probes/test",
    )


def tick(t: float, *, id: str | None = None) -> Event:
    return envelope("clock.tick.v1", id or f"tick/{t}", t, None, {}, "/failover/ticker")


def override(
    svc: str,
    t: float,
    action: str,
    *,
    actor: str = "Rina",
    role: str = "on-call",
    reason: str = "test",
    id: str | None = None,
) -> Event:
    return envelope(
        "operator.override.v1",
        id or f"override/{svc}/{action}/{t}",
        t,
        svc,
        {"action": action, "actor": actor, "role": role, "reason": reason},
        "/operators/test",
    )


def record(svc: str, t: float, record_id: str, *, id: str | None = None) -> Event:
    return envelope(
        "manual.record.v1",
        id or f"record/{svc}/{record_id}",
        t,
        svc,
        {"record_id": record_id},
        "/offices/test",
    )


def reconciled(
    svc: str,
    t: float,
    record_ids: list[str],
    *,
    incident: str | None = None,
    id: str | None = None,
) -> Event:
    data: dict[str, Any] = {"record_ids": record_ids}
    if incident is not None:
        data["incident"] = incident
    return envelope(
        "reconcile.completed.v1",
        id or f"reconciled/{svc}/{t}/{'+'.join(record_ids)}",
        t,
        svc,
        data,
        "/offices/test",
    )


def ticks(start: float, stop: float, every: float = 60) -> list[Event]:
    """Ticks at ``start``, ``start + every``, ... up to and including ``stop``."""
    out: list[Event] = []
    t = start
    while t <= stop:
        out.append(tick(t))
        t += every
    return out


def timeline(*streams: Iterable[Event]) -> list[Event]:
    """Merge event lists into one, ordered by event time (stable: ties keep list order)."""
    merged = [event for stream in streams for event in stream]
    return sorted(merged, key=lambda event: parse_time(event["time"]))


Change = tuple[Any, ...]  # (t, status) or (t, status, latency_ms, loss_pct)


def readings(
    link: str, stop: float, changes: Sequence[Change], *, every: float = 60, start: float = 0
) -> list[Event]:
    """A probe reading every ``every`` seconds from ``start`` to ``stop`` (inclusive); each
    change ``(t, status[, latency_ms, loss_pct])`` says what the readings are from ``t`` on.
    Before the first change, and between changes, the last one holds; ``status`` None means
    the probe is silent."""
    ordered = sorted(changes, key=lambda change: change[0])
    out: list[Event] = []
    t = start
    while t <= stop:
        current: Change | None = None
        for change in ordered:
            if change[0] <= t:
                current = change
        if current is None:
            current = (t, "up")
        if current[1] is not None:
            latency = current[2] if len(current) > 2 else None
            loss = current[3] if len(current) > 3 else None
            out.append(probe(link, t, current[1], latency, loss))
        t += every
    return out


def scenario(
    stop: float, links: Mapping[str, Sequence[Change]], *extra: Event, every: float = 60
) -> list[Event]:
    """Probe readings for ``links`` and a tick every ``every`` seconds from 0 to ``stop``,
    plus ``extra`` events, in event-time order. At one instant: readings, then the extra
    events, then the tick (all arrive before the tick that covers them)."""
    probes = [
        event
        for link, changes in links.items()
        for event in readings(link, stop, changes, every=every)
    ]
    return timeline(probes, extra, ticks(0, stop, every))


def raw(event: Event | bytes) -> bytes:
    return event if isinstance(event, bytes) else orjson.dumps(event)


# ---------------------------------------------------------------------------- running


def run(
    topology: Topology,
    events: Iterable[Event | bytes],
    *,
    finish: bool = True,
    audit: bool = False,
) -> list[Record]:
    """Feed every event (in list order) to a fresh engine, then drain; everything out but
    the operators' audit records unless ``audit`` (tests/test_operators.py tests those)."""
    engine = Engine(topology)
    out: list[Record] = []
    for event in events:
        engine.feed(raw(event))
        out.extend(engine.drain())
    if finish:
        engine.finish()
        out.extend(engine.drain())
    if not audit:
        out = [r for r in out if not (isinstance(r, Emitted) and r.topic == AUDIT)]
    return out


def emitted(out: Iterable[Record], type_: str | None = None) -> list[Event]:
    """The CloudEvents out, optionally only one ``type``."""
    return [
        r.event
        for r in out
        if isinstance(r, Emitted) and (type_ is None or r.event["type"] == type_)
    ]


def transitions(out: Iterable[Record], svc: str | None = None) -> list[dict[str, Any]]:
    """The ``data`` of every transition (of ``svc``), in order."""
    return [
        r.event["data"]
        for r in out
        if isinstance(r, Emitted)
        and r.topic == TRANSITIONS
        and (svc is None or r.event["subject"] == svc)
    ]


def path(out: Iterable[Record], svc: str) -> list[str]:
    """``["online", "degraded", "manual", ...]``: the states ``svc`` went through."""
    steps = transitions(out, svc)
    return ["online", *(step["to"] for step in steps)]


def commands(
    out: Iterable[Record], type_: str | None = None, svc: str | None = None
) -> list[Event]:
    """Command CloudEvents (notices, holds, releases, reconciles, escalations)."""
    return [
        r.event
        for r in out
        if isinstance(r, Emitted)
        and r.topic == COMMANDS
        and (type_ is None or r.event["type"] == type_)
        and (svc is None or r.event["subject"] == svc)
    ]


def notices(
    out: Iterable[Record], svc: str | None = None, audience: str | None = None
) -> list[Event]:
    return [
        event
        for event in commands(out, "failover.notice.v1", svc)
        if audience is None or event["data"]["audience"] == audience
    ]


def dead_letters(out: Iterable[Record]) -> list[DeadLetter]:
    return [r for r in out if isinstance(r, DeadLetter)]


def failover(
    *args: str | Path, columns: int = 200, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``failover ARGS`` in a process of its own, as a user runs it: a bare PATH, a terminal
    ``columns`` wide, output captured."""
    code = "import sys; from streams.cli import main; sys.argv[0] = 'failover'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
        timeout=120,
        input=stdin,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": str(columns)},
    )
