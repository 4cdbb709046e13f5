"""The bundled demo: the Ambon case of 5-6 February 2019 (see the README), replayed.

The file must be what ``scripts/make_demo_events.py`` writes, replay must give the same bytes
every time, and the story the README tells must be what the engine does.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.helpers import commands, dead_letters, notices, path, transitions
from workflows.records import DeadLetter, Emitted
from workflows.replay import encode, read_lines, replay
from workflows.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "streams" / "demo" / "ambon.yaml"
EVENTS = ROOT / "streams" / "demo" / "ambon-events.jsonl"
SCRIPT = ROOT / "scripts" / "make_demo_events.py"

TELKOM_ONLY = ("ektp", "akta-lahir", "legalisasi")
SERVICES = ("ektp", "akta-lahir", "legalisasi", "surat-pindah", "rekam-ktp-kecamatan")

# In UTC: Ambon (WIT) is UTC+9.
REPAIR = "2019-02-06T00:00:00Z"  # 09:00 WIT: the repaired exchange starts flapping
QUIET = "2019-02-06T00:40:00Z"  # 09:40 WIT: it stops
RESTORE_AFTER = "2019-02-06T00:55:00Z"  # QUIET + restore_after (900 s)


def run_demo() -> list[Emitted | DeadLetter]:
    topology = Topology.load(TOPOLOGY)
    return list(replay(topology, read_lines(EVENTS), "ambon-events.jsonl"))


@functools.cache
def demo() -> tuple[Emitted | DeadLetter, ...]:
    return tuple(run_demo())


def jsonl(records: Any) -> bytes:
    return b"".join(encode(record) + b"\n" for record in records)


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_demo_events", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_replays_byte_for_byte() -> None:
    first, second = jsonl(run_demo()), jsonl(run_demo())
    assert first == second
    assert first.count(b"\n") == len(demo())
    assert len(demo()) > 50


def test_demo_file_is_what_the_script_writes() -> None:
    assert load_script().lines() == EVENTS.read_bytes()


def test_ektp_forced_to_manual_by_the_acting_head_queue_held() -> None:
    out = list(demo())
    manual = next(step for step in transitions(out, "ektp") if step["to"] == "manual")
    assert manual["reason"] == "operator-force-manual"
    assert manual["operator"]["action"] == "force_manual"
    assert manual["operator"]["actor"] == "Plt. Kepala Dinas"
    assert manual["operator"]["role"] == "acting-head"
    assert "jangan dipaksakan" in manual["operator"]["reason"]
    (held,) = commands(out, "failover.queue.hold.v1", "ektp")
    assert held["data"]["queue"] == "ektp-counter"
    assert held["data"]["incident"] == manual["incident"]
    (released,) = commands(out, "failover.queue.release.v1", "ektp")
    assert released["data"]["incident"] == manual["incident"]
    assert released["time"] > held["time"]


def test_offline_services_go_manual_with_public_notices() -> None:
    out = list(demo())
    for svc in ("legalisasi", "surat-pindah"):
        steps = transitions(out, svc)
        first_manual = next(step for step in steps if step["to"] == "manual")
        assert first_manual["reason"] == "down-sustained"
        assert "operator" not in first_manual
        public = notices(out, svc, "public")
        assert public[0]["data"]["template"] == "manual-public"
        assert public[0]["data"]["incident"] == first_manual["incident"]
        assert "PENGUMUMAN" in public[0]["data"]["text"]["id"]
        assert "WIT" in public[0]["data"]["text"]["id"]
        assert "WIT" in public[0]["data"]["text"]["en"]
        assert commands(out, "failover.queue.hold.v1", svc) == []


def test_escalations_office_head_then_provider() -> None:
    out = list(demo())
    ektp = commands(out, "failover.escalate.v1", "ektp")
    assert [c["data"]["to"] for c in ektp] == ["office-head", "provider"]
    assert ektp[1]["data"]["provider"] == "telkom"
    assert "telkom-sto-pattimura" in ektp[1]["data"]["reason"]
    for svc in TELKOM_ONLY:
        sent = [
            (c["data"]["to"], c["data"].get("provider"))
            for c in commands(out, "failover.escalate.v1", svc)
        ]
        assert sent == [("office-head", None), ("provider", "telkom")], svc
    # surat-pindah's redundant pair fails through two providers: each hears of it once.
    pindah = commands(out, "failover.escalate.v1", "surat-pindah")
    assert pindah[0]["data"]["to"] == "office-head"
    assert sorted(c["data"]["provider"] for c in pindah[1:]) == ["seluler", "telkom"]


def test_flapping_repair_does_not_restore_before_it_is_quiet() -> None:
    out = list(demo())
    for svc in ("akta-lahir", "legalisasi"):
        times = [
            r.event["time"]
            for r in out
            if isinstance(r, Emitted)
            and r.event["subject"] == svc
            and r.event["type"] == "failover.transition.v1"
            and r.event["data"]["to"] == "restored"
        ]
        assert times, svc
        assert times[0] >= RESTORE_AFTER, (svc, times[0])
        moved = [
            r.event["time"]
            for r in out
            if isinstance(r, Emitted)
            and r.event["subject"] == svc
            and r.event["type"] == "failover.transition.v1"
            and REPAIR <= r.event["time"] <= QUIET
        ]
        assert moved == [], svc


def test_legalisasi_relapses_and_reconciles_only_the_new_record() -> None:
    out = list(demo())
    steps = transitions(out, "legalisasi")
    assert [step["to"] for step in steps] == [
        "degraded",
        "manual",
        "restored",
        "manual",
        "restored",
        "online",
    ]
    assert steps[3]["reason"] == "relapse"
    assert len({step["incident"] for step in steps}) == 1
    reconciles = [c["data"]["record_ids"] for c in commands(out, "failover.reconcile.v1")]
    legalisasi = [
        c["data"]["record_ids"] for c in commands(out, "failover.reconcile.v1", "legalisasi")
    ]
    assert legalisasi == [[f"LEG-{n:03d}" for n in range(1, 13)], ["LEG-013"]]
    assert [f"SKP-{n:03d}" for n in range(1, 6)] in reconciles


def test_every_service_ends_online() -> None:
    out = list(demo())
    for svc in SERVICES:
        assert path(out, svc)[-1] == "online", svc


def test_kecamatan_on_redundant_vsat_never_leaves_online() -> None:
    out = list(demo())
    assert path(out, "rekam-ktp-kecamatan") == ["online"]
    assert commands(out, svc="rekam-ktp-kecamatan") == []


def test_exactly_three_dead_letters() -> None:
    letters = dead_letters(demo())
    assert [letter.reason.split(":", 1)[0] for letter in letters] == [
        "schema",
        "unknown-service",
        "not-json",
    ]
    assert letters[1].key == "paspor"
    lines = EVENTS.read_bytes().split(b"\n")
    for letter in letters:
        assert lines[letter.origin.line - 1] == letter.raw
