"""Records of the ``service-state`` contract for the board's tests, and the Ambon demo as the
board sees it: the engine's real transitions and commands (replayed), and the state records
the contract says go with them."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import orjson

from harness.state import state_event
from workflows.records import Emitted
from workflows.replay import read_lines, replay
from workflows.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
DISDUKCAPIL = "disdukcapil-ambon"
SIRIMAU = "kecamatan-sirimau"
#: The site's offset (WIT, Asia/Jayapura), as the contract writes times in ``data``.
WIT = "+09:00"

Record = tuple[str, str, dict[str, Any]]  # (kind: state|transitions|commands, key, event)


@functools.cache
def _demo() -> tuple[Emitted, ...]:
    topology = Topology.load(ROOT / "streams" / "demo" / "ambon.yaml")
    events = ROOT / "streams" / "demo" / "ambon-events.jsonl"
    return tuple(r for r in replay(topology, read_lines(events), "demo") if isinstance(r, Emitted))


def _outputs(start: str, end: str) -> list[Record]:
    kinds = {"service-transitions": "transitions", "failover-commands": "commands"}
    return [
        (kinds[r.topic], r.key, r.event)
        for r in _demo()
        if r.topic in kinds and start <= r.event["time"] <= end
    ]


def ambon_manual() -> list[Record]:
    """5 February 2019, 08:25 WIT: the exchange has burnt; ektp and akta-lahir are manual with
    their queues held, the offline-capable services manual with paper records open, the
    district office still online over its VSAT link."""
    inc = {s: f"{s}@20190204T231200Z" for s in ("ektp", "akta-lahir", "legalisasi")}
    inc["surat-pindah"] = "surat-pindah@20190204T231400Z"
    states = [
        state_event(
            "ektp", DISDUKCAPIL, "manual", f"2019-02-05T08:15:30{WIT}",
            incident=inc["ektp"], held=True, health="down",
            last_reason="operator-force-manual",
        ),
        state_event(
            "akta-lahir", DISDUKCAPIL, "manual", f"2019-02-05T08:24:00{WIT}",
            incident=inc["akta-lahir"], held=True, health="down", last_reason="down-sustained",
        ),
        state_event(
            "legalisasi", DISDUKCAPIL, "manual", f"2019-02-05T08:24:00{WIT}",
            incident=inc["legalisasi"], offline=True, open_records=7, health="down",
            last_reason="down-sustained",
        ),
        state_event(
            "surat-pindah", DISDUKCAPIL, "manual", f"2019-02-05T08:21:00{WIT}",
            incident=inc["surat-pindah"], offline=True, open_records=3, health="down",
            last_reason="down-sustained",
        ),
        state_event(
            "rekam-ktp-kecamatan", SIRIMAU, "online", f"2019-02-05T07:30:00{WIT}",
        ),
    ]  # fmt: skip
    return [
        *_outputs("2019-02-04T00:00:00Z", "2019-02-04T23:24:00Z"),
        *(("state", e["subject"], e) for e in states),
    ]


def ektp_restored() -> list[Record]:
    """6 February, 11:30 WIT: ektp restored (its queue released), then online."""
    incident = "ektp@20190204T231200Z"
    return [
        *_outputs("2019-02-06T02:30:30Z", "2019-02-06T02:30:30Z"),
        (
            "state",
            "ektp",
            state_event(
                "ektp", DISDUKCAPIL, "restored", f"2019-02-06T11:30:30{WIT}",
                incident=incident, last_reason="stable",
            ),
        ),
        (
            "state",
            "ektp",
            state_event(
                "ektp", DISDUKCAPIL, "online", f"2019-02-06T11:30:30{WIT}",
                last_reason="reconciled",
            ),
        ),
    ]  # fmt: skip


def encode(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


def release_waiting(service: str = "ektp") -> Record:
    """The engine's own state record of ``service`` (held, its exchange down) once the acting
    head's release waits for a second operator: the demo replayed with that release added (and
    the acting head granted release)."""
    from tests.test_twoperson import _demo_override, _insert

    text = (ROOT / "streams" / "demo" / "ambon.yaml").read_text()
    topology = Topology.parse(text.replace("[force_manual, pin]", "[force_manual, release, pin]"))
    lines = [raw for _, raw in read_lines(ROOT / "streams" / "demo" / "ambon-events.jsonl")]
    release = _demo_override(service, "2019-02-05T05:00:30Z", "release", "Plt. Kepala Dinas")
    waiting = [
        r.event
        for r in replay(topology, enumerate(_insert(lines, release), 1), "demo", state=True)
        if isinstance(r, Emitted)
        and r.topic == "service-state"
        and r.key == service
        and "pending_release" in r.event["data"]
    ]
    return ("state", service, waiting[0])
