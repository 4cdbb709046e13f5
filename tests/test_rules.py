"""One test per rule of docs/state-machine.md and docs/clock.md, each on a small topology.

Policies are short (see :data:`tests.helpers.POLICY`): degrade_after 60s, manual_after 300s,
degraded_max 600s, recover_after 120s, restore_after 300s, relapse_after 60s, stale_after
120s, escalate_after 1h. Times are seconds after 2019-02-05T00:00:00Z (09:00 WIT); probes
read and the engine ticks every 60 s unless a test says otherwise.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pytest

from schemas import load_schema
from tests.helpers import (
    POLICY,
    Event,
    at,
    commands,
    dead_letters,
    emitted,
    make_topology,
    notices,
    override,
    path,
    probe,
    raw,
    readings,
    reconciled,
    record,
    run,
    scenario,
    service,
    tick,
    ticks,
    timeline,
    transitions,
)
from workflows.engine import Engine
from workflows.records import DeadLetter, Emitted
from workflows.replay import encode, read_lines, replay
from workflows.topology import Topology

DEMO = Path(__file__).resolve().parent.parent / "streams" / "demo"
DEMO_TOPOLOGY = DEMO / "ambon.yaml"
DEMO_EVENTS = DEMO / "ambon-events.jsonl"


def one(topology_services: dict[str, Any], links: Any = ("a",), **policy: Any) -> Topology:
    return make_topology(topology_services, links, policy={**POLICY, **policy})


def edges(out: list[Any], svc: str) -> list[tuple[str, str, str, str]]:
    """``(time, from, to, reason)`` of each transition of ``svc``."""
    return [
        (step_time, step["from"], step["to"], step["reason"])
        for step_time, step in (
            (event["time"], event["data"])
            for event in emitted(out, "failover.transition.v1")
            if event["subject"] == svc
        )
    ]


def reasons(out: list[Any]) -> list[str]:
    return [letter.reason for letter in dead_letters(out)]


# ------------------------------------------------------ transitions (docs/state-machine.md)


def test_online_to_degraded_after_degrade_after_impaired() -> None:
    topology = one({"s": service(["a"])})
    events = scenario(
        420,
        {"a": [(0, "up"), (300, "degraded")]},
        # A blip of 40 s: shorter than degrade_after, so nothing happens.
        probe("a", 130, "degraded"),
        probe("a", 170, "up"),
    )
    out = run(topology, events)
    assert edges(out, "s") == [(at(360), "online", "degraded", "impaired")]
    (step,) = transitions(out, "s")
    assert step["cause"] == "tick/360"
    assert step["health"] == "impaired"
    assert step["incident"] == "s@20190205T000600Z"
    assert [n["data"]["audience"] for n in notices(out, "s")] == ["staff", "oncall"]


def test_down_for_manual_after_goes_manual_from_online() -> None:
    # "direct" would degrade only after 15 minutes: down for manual_after takes it from online
    # to manual at once; "s" passes through degraded on the way, for the same reason.
    topology = one(
        {"direct": service(["a"], policy={"degrade_after": "900s"}), "s": service(["a"])}
    )
    out = run(topology, scenario(480, {"a": [(0, "up"), (120, "down")]}))
    assert edges(out, "direct") == [(at(420), "online", "manual", "down-sustained")]
    assert edges(out, "s") == [
        (at(180), "online", "degraded", "impaired"),
        (at(420), "degraded", "manual", "down-sustained"),
    ]
    assert transitions(out, "direct")[0]["health"] == "down"


def test_impaired_for_degraded_max_goes_manual_do_not_force_it() -> None:
    topology = one({"s": service(["a"])})
    out = run(topology, scenario(780, {"a": [(0, "up"), (120, "degraded", 1800.0, 14.0)]}))
    # Never down, so manual_after (300 s) never applies; degraded_max (600 s) does.
    assert edges(out, "s") == [
        (at(180), "online", "degraded", "impaired"),
        (at(720), "degraded", "manual", "impaired-sustained"),
    ]
    assert "not forcing it" in transitions(out, "s")[1]["detail"]


def test_degraded_recovers_after_recover_after_healthy() -> None:
    topology = one({"s": service(["a"])})
    changes = [(0, "up"), (120, "degraded"), (240, "up"), (600, "degraded")]
    out = run(topology, scenario(700, {"a": changes}))
    assert edges(out, "s") == [
        (at(180), "online", "degraded", "impaired"),
        (at(360), "degraded", "online", "recovered"),  # healthy from 240, for 120 s
        (at(660), "online", "degraded", "impaired"),
    ]
    first, back, second = transitions(out, "s")
    assert first["incident"] == back["incident"] != second["incident"]
    recovered = [n for n in notices(out, "s") if n["data"]["template"] == "recovered-staff"]
    assert [n["time"] for n in recovered] == [at(360)]


def test_manual_restores_after_restore_after_stable() -> None:
    # A flicker inside the stability window starts it again (flap damping kept out of the
    # way with a high threshold: see the flapping test for that).
    topology = one({"s": service(["a"])}, flap_threshold=10)
    changes = [(0, "up"), (120, "down"), (600, "up"), (660, "down"), (720, "up")]
    out = run(topology, scenario(1080, {"a": changes}))
    assert edges(out, "s") == [
        (at(180), "online", "degraded", "impaired"),
        (at(420), "degraded", "manual", "down-sustained"),
        (at(1020), "manual", "restored", "stable"),  # healthy from 720, for 300 s
        (at(1020), "restored", "online", "reconciled"),
    ]


def test_restored_closes_at_once_when_ledger_empty() -> None:
    topology = one({"paper": service(["a"]), "ktp": service(["a"], offline=False)})
    out = run(topology, scenario(960, {"a": [(0, "up"), (120, "down"), (600, "up")]}))
    for svc in ("paper", "ktp"):
        assert edges(out, svc)[-2:] == [
            (at(900), "manual", "restored", "stable"),
            (at(900), "restored", "online", "reconciled"),
        ]
        closed = [n for n in notices(out, svc) if n["data"]["template"] == "closed-staff"]
        assert len(closed) == 1
        assert " 0 " in closed[0]["data"]["text"]["en"]
    assert commands(out, "failover.reconcile.v1") == []


def test_restored_waits_for_every_ledger_record() -> None:
    topology = one({"paper": service(["a"])})
    events = scenario(
        1080,
        {"a": [(0, "up"), (120, "down"), (600, "up")]},
        record("paper", 450, "R1"),
        record("paper", 500, "R2"),
        reconciled("paper", 930, ["R1"]),
        reconciled("paper", 990, ["R2"], id="done"),
    )
    out = run(topology, events)
    (command,) = commands(out, "failover.reconcile.v1")
    assert command["time"] == at(900)
    assert command["data"]["record_ids"] == ["R1", "R2"]
    assert edges(out, "paper")[-2:] == [
        (at(900), "manual", "restored", "stable"),
        (at(990), "restored", "online", "reconciled"),
    ]
    assert transitions(out, "paper")[-1]["cause"] == "done"
    assert dead_letters(out) == []


def test_partial_reconcile_keeps_restored() -> None:
    topology = one({"paper": service(["a"])})
    events = scenario(
        1500,
        {"a": [(0, "up"), (120, "down"), (600, "up")]},
        record("paper", 450, "R1"),
        record("paper", 500, "R2"),
        reconciled("paper", 930, ["R1", "NOT-IN-LEDGER"]),
        reconciled("paper", 990, ["NOT-IN-LEDGER"]),
    )
    out = run(topology, events)
    assert path(out, "paper")[-1] == "restored"
    assert reasons(out) == ["unknown-records: none of record_ids is in the ledger"]


def test_relapse_holds_again_without_second_reconcile() -> None:
    # Only an offline-capable service can relapse: an online-only one has no ledger, so its
    # restored state closes at once. The relapse notifies again and reconciles only what is
    # new.
    topology = one({"paper": service(["a"])})
    changes = [(0, "up"), (120, "down"), (600, "up"), (960, "down"), (1200, "up")]
    events = scenario(
        1560,
        {"a": changes},
        record("paper", 450, "R1"),
        record("paper", 1050, "R2"),
        reconciled("paper", 1530, ["R1", "R2"]),
    )
    out = run(topology, events)
    assert edges(out, "paper") == [
        (at(180), "online", "degraded", "impaired"),
        (at(420), "degraded", "manual", "down-sustained"),
        (at(900), "manual", "restored", "stable"),
        (at(1020), "restored", "manual", "relapse"),
        (at(1500), "manual", "restored", "stable"),
        (at(1530), "restored", "online", "reconciled"),
    ]
    assert len({step["incident"] for step in transitions(out, "paper")}) == 1
    assert [c["data"]["record_ids"] for c in commands(out, "failover.reconcile.v1")] == [
        ["R1"],
        ["R2"],
    ]
    public = notices(out, "paper", "public")
    assert [(n["time"], n["data"]["template"]) for n in public] == [
        (at(420), "manual-public"),
        (at(900), "resumed-public"),
        (at(1020), "manual-public"),
        (at(1500), "resumed-public"),
    ]
    assert len({n["id"] for n in public}) == 4


def test_online_only_service_queue_held_and_released() -> None:
    topology = one({"ktp": service(["a"], offline=False, queue="ktp-counter")})
    out = run(topology, scenario(960, {"a": [(0, "up"), (120, "down"), (600, "up")]}))
    held = commands(out, "failover.queue.hold.v1")
    released = commands(out, "failover.queue.release.v1")
    assert [(c["time"], c["data"]["queue"]) for c in held] == [(at(420), "ktp-counter")]
    assert [(c["time"], c["data"]["queue"]) for c in released] == [(at(900), "ktp-counter")]
    incident = transitions(out, "ktp")[0]["incident"]
    assert held[0]["data"]["incident"] == released[0]["data"]["incident"] == incident
    templates = [(n["time"], n["data"]["template"]) for n in notices(out, "ktp")]
    assert (at(420), "hold-public") in templates
    assert (at(420), "hold-staff") in templates
    assert (at(900), "resumed-public") in templates
    assert path(out, "ktp") == ["online", "degraded", "manual", "restored", "online"]


def test_offline_service_keeps_ledger() -> None:
    topology = one({"paper": service(["a"])})
    events = scenario(
        1080,
        {"a": [(0, "up"), (120, "down"), (600, "up")]},
        record("paper", 60, "EARLY"),  # online: no ledger to keep it in
        record("paper", 450, "R1"),
        record("paper", 460, "R1", id="same-record-again"),
        record("paper", 470, "R2"),
        record("paper", 930, "R3"),  # written on paper, logged after restoration
        reconciled("paper", 990, ["R1", "R2", "R3"]),
    )
    out = run(topology, events)
    assert reasons(out) == ["not-applicable: manual record while online"]
    assert [
        (c["time"], c["data"]["record_ids"]) for c in commands(out, "failover.reconcile.v1")
    ] == [
        (at(900), ["R1", "R2"]),
        (at(930), ["R3"]),
    ]
    assert edges(out, "paper")[-1] == (at(990), "restored", "online", "reconciled")
    (closed,) = [n for n in notices(out, "paper") if n["data"]["template"] == "closed-staff"]
    assert " 3 " in closed["data"]["text"]["en"]
    assert commands(out, "failover.queue.hold.v1") == []


# --------------------------------------------------------------------------- overrides


def test_force_manual_override_carries_operator() -> None:
    topology = one({"s": service(["a"])})
    who = {
        "actor": "Plt. Kepala Dinas",
        "role": "acting-head",
        "reason": "Jaringan lambat lalu putus; jangan dipaksakan.",
    }
    events = scenario(
        300,
        {"a": [(0, "up"), (120, "down")]},
        override("s", 130, "force_manual", id="force", **who),
    )
    out = run(topology, events)
    step = transitions(out, "s")[0]
    assert (step["from"], step["to"], step["reason"]) == (
        "online",
        "manual",
        "operator-force-manual",
    )
    assert step["cause"] == "force"
    assert step["operator"] == {"action": "force_manual", **who}
    assert step["health"] == "down"
    assert emitted(out, "failover.transition.v1")[0]["time"] == at(130)
    assert who["actor"] in step["detail"]
    assert len(transitions(out, "s")) == 1


def test_release_override() -> None:
    topology = one({"s": service(["a"])})
    events = scenario(
        600,
        {"a": [(0, "up")]},
        override("s", 130, "force_manual"),
        override("s", 200, "release", actor="Kepala Dinas", role="office-head", id="rel"),
    )
    out = run(topology, events)
    assert edges(out, "s") == [
        (at(130), "online", "manual", "operator-force-manual"),
        (at(200), "manual", "restored", "operator-release"),
        (at(200), "restored", "online", "reconciled"),
    ]
    released = transitions(out, "s")[1]
    assert released["operator"] == {
        "action": "release",
        "actor": "Kepala Dinas",
        "role": "office-head",
        "reason": "test",
    }
    assert released["cause"] == "rel"


def test_pin_freezes_automatic_transitions() -> None:
    topology = one({"s": service(["a"]), "t": service(["a"])})
    events = scenario(
        2000,
        {"a": [(0, "up"), (120, "down"), (1000, "up")]},
        override("s", 30, "pin", actor="Kepala Dinas", role="office-head", reason="wait"),
        override("s", 900, "force_manual"),  # an operator still can; the timers cannot
    )
    out = run(topology, events)
    # The same link takes "t" all the way round; "s" only moves when told to.
    assert path(out, "t") == ["online", "degraded", "manual", "restored", "online"]
    assert edges(out, "s") == [(at(900), "online", "manual", "operator-force-manual")]
    (pinned,) = [n for n in notices(out, "s") if n["data"]["template"] == "pinned-oncall"]
    assert pinned["time"] == at(30)
    assert pinned["data"]["audience"] == "oncall"
    assert pinned["data"]["incident"] == "none"
    assert "Kepala Dinas" in pinned["data"]["text"]["en"]


def test_unpin_catches_up() -> None:
    topology = one({"s": service(["a"])})
    events = scenario(
        1100,
        {"a": [(0, "up"), (120, "down")]},
        override("s", 30, "pin"),
        override("s", 1000, "unpin", id="unpin"),
    )
    out = run(topology, events)
    # Down since 120, for far longer than manual_after: straight to manual when unpinned.
    assert edges(out, "s") == [(at(1000), "online", "manual", "down-sustained")]
    assert transitions(out, "s")[0]["cause"] == "unpin"
    templates = [n["data"]["template"] for n in notices(out, "s")]
    assert templates[:2] == ["pinned-oncall", "unpinned-oncall"]


def test_override_not_applicable_dead_lettered() -> None:
    topology = one({"s": service(["a"])})
    misplaced = [
        override("s", 60, "release", id="release-while-online"),
        override("s", 70, "unpin", id="unpin-while-not-pinned"),
        override("s", 200, "force_manual", id="force-while-manual"),
    ]
    base = scenario(600, {"a": [(0, "up"), (120, "down")]}, override("s", 130, "force_manual"))
    out = run(topology, timeline(base, misplaced))
    letters = dead_letters(out)
    assert [letter.reason for letter in letters] == [
        "not-applicable: release while online",
        "not-applicable: unpin while not pinned",
        "not-applicable: force_manual while manual",
    ]
    assert [letter.key for letter in letters] == ["s", "s", "s"]
    assert [letter.raw for letter in letters] == [raw(event) for event in misplaced]
    # And they changed nothing else.
    assert [r for r in out if isinstance(r, Emitted)] == run(topology, base)


def test_escalation_office_head_then_provider_once_per_incident() -> None:
    links = {"a": {"provider": "telkom"}}
    topology = one({"paper": service(["a"])}, links)
    changes = [(0, "up"), (120, "down"), (8000, "up"), (8400, "down")]
    events = scenario(16200, {"a": changes}, record("paper", 500, "R1"))
    out = run(topology, events)
    # manual at 420; restored at 8300, relapse at 8460: still the same incident.
    assert [step["to"] for step in transitions(out, "paper")] == [
        "degraded",
        "manual",
        "restored",
        "manual",
    ]
    escalations = commands(out, "failover.escalate.v1")
    assert [(c["time"], c["data"]["to"]) for c in escalations] == [
        (at(420 + 3600), "office-head"),
        (at(420 + 7200), "provider"),
    ]
    assert escalations[1]["data"]["provider"] == "telkom"
    assert "a" in escalations[1]["data"]["reason"]
    authority = notices(out, "paper", "authority")
    assert [n["time"] for n in authority] == [at(4020)]
    assert "Kepala Kantor" in authority[0]["data"]["text"]["en"]
    assert [n["time"] for n in notices(out, "paper", "provider")] == [at(7620)]
    assert len({c["id"] for c in escalations}) == 2


# ------------------------------------------------------------------------ link health


def test_stale_link_counts_as_down() -> None:
    topology = one({"s": service(["a"])})
    # The last reading is at 60; from 180 the link has been silent for stale_after.
    out = run(topology, scenario(540, {"a": [(0, "up"), (120, None)]}))
    assert edges(out, "s") == [
        (at(240), "online", "degraded", "impaired"),
        (at(480), "degraded", "manual", "down-sustained"),
    ]
    assert transitions(out, "s")[0]["health"] == "down"
    (oncall,) = notices(out, "s", "oncall")
    assert "a=down" in oncall["data"]["text"]["en"]


def test_stale_link_is_down_at_the_tick_that_finds_it() -> None:
    """health.py: at one instant a link's change comes before an operator's word, and both
    before the tick that evaluates them. Staleness found by the tick at 120 is a change at
    120, so the operator's force_manual at 120 must see the link down, just as it does when
    a probe says "down" at 120."""
    topology = one({"s": service(["a"])})
    force = override("s", 120, "force_manual", id="op")
    silent = [tick(0), probe("a", 0, "up"), tick(60), force, tick(120), tick(180)]
    said = [tick(0), probe("a", 0, "up"), tick(60), probe("a", 120, "down"), force, tick(120)]
    assert transitions(run(topology, said), "s")[0]["health"] == "down"
    assert transitions(run(topology, silent), "s")[0]["health"] == "down"


def test_never_heard_link_goes_stale_after_first_tick() -> None:
    topology = one({"heard": service(["a"]), "silent": service(["b"])}, ("a", "b"))
    # Link b never reports. Before the first tick (at 1000) nothing can be said of it.
    events = timeline(readings("a", 1500, [(0, "up")]), ticks(1000, 1500))
    engine = Engine(topology)
    out: list[Any] = []
    for event in events:
        engine.feed(raw(event))
        out.extend(engine.drain())
        if event["time"] < at(1000):
            assert out == []
    assert edges(out, "silent") == [
        (at(1180), "online", "degraded", "impaired"),  # stale at 1120 = 1000 + 120
        (at(1420), "degraded", "manual", "down-sustained"),
    ]
    assert transitions(out, "heard") == []


def test_latency_threshold_makes_impaired_never_better() -> None:
    services = {
        "slow": service(["slow"]),
        "down": service(["down"]),
        "fast": service(["fast"]),
        "said-degraded": service(["said-degraded"]),
    }
    topology = one(services, tuple(services))
    out = run(
        topology,
        scenario(
            480,
            {
                "slow": [(0, "up", 35.0, 0.0), (120, "up", 1800.0, 0.0)],
                # A good latency never makes a link better than its status.
                "down": [(0, "up", 35.0, 0.0), (120, "down", 10.0, 0.0)],
                "fast": [(0, "up", 35.0, 0.0), (120, "up", 799.0, 0.0)],
                "said-degraded": [(0, "up", 35.0, 0.0), (120, "degraded", 10.0, 0.0)],
            },
        ),
    )
    assert [(step["to"], step["health"]) for step in transitions(out, "slow")] == [
        ("degraded", "impaired")
    ]
    assert [(step["to"], step["health"]) for step in transitions(out, "said-degraded")] == [
        ("degraded", "impaired")
    ]
    assert edges(out, "down")[-1] == (at(420), "degraded", "manual", "down-sustained")
    assert transitions(out, "fast") == []


def test_loss_threshold() -> None:
    services = {"lossy": service(["lossy"]), "cut": service(["cut"]), "fine": service(["fine"])}
    topology = one(services, tuple(services))
    out = run(
        topology,
        scenario(
            780,
            {
                "lossy": [(0, "up", 35.0, 0.0), (120, "up", 35.0, 6.0)],
                # Loss makes a link impaired, never down: only its status says down.
                "cut": [(0, "up", 35.0, 0.0), (120, "up", None, 100.0)],
                "fine": [(0, "up", 35.0, 0.0), (120, "up", 35.0, 4.9)],
            },
        ),
    )
    assert transitions(out, "lossy")[0]["health"] == "impaired"
    assert edges(out, "cut") == [
        (at(180), "online", "degraded", "impaired"),
        (at(720), "degraded", "manual", "impaired-sustained"),
    ]
    assert transitions(out, "fine") == []


def test_threshold_reached_counts_as_impaired_as_documented() -> None:
    """``schemas/topology.schema.json`` documents latency_degraded_ms and loss_degraded_pct
    as the values *at or above which* a link counts as impaired."""
    services = {"at-latency": service(["l"]), "at-loss": service(["p"])}
    topology = one(services, ("l", "p"))
    out = run(
        topology,
        scenario(
            300,
            {
                "l": [(0, "up", 35.0, 0.0), (120, "up", 800.0, 0.0)],
                "p": [(0, "up", 35.0, 0.0), (120, "up", 35.0, 5.0)],
            },
        ),
    )
    assert [step["to"] for step in transitions(out, "at-latency")] == ["degraded"]
    assert [step["to"] for step in transitions(out, "at-loss")] == ["degraded"]


def test_redundant_group_best_link_counts() -> None:
    topology = one({"r": service([["a", "b"]]), "plain": service(["a"])}, ("a", "b"))
    links = {
        "a": [(0, "up"), (120, "down"), (900, "up")],
        "b": [(0, "up"), (600, "degraded")],
    }
    out = run(topology, scenario(1100, links))
    # Losing a while b is healthy changes nothing; when b degrades too, the best is impaired.
    assert edges(out, "r") == [
        (at(660), "online", "degraded", "impaired"),
        (at(1020), "degraded", "online", "recovered"),  # a is back at 900
    ]
    assert path(out, "plain")[:3] == ["online", "degraded", "manual"]


def test_service_health_worst_over_requirements() -> None:
    topology = one({"s": service(["a", "b"])}, ("a", "b"))
    links = {
        "a": [(0, "up"), (120, "degraded"), (900, "up")],
        "b": [(0, "up"), (240, "down"), (600, "up")],
    }
    out = run(topology, scenario(1260, links))
    assert edges(out, "s") == [
        (at(180), "online", "degraded", "impaired"),
        (at(540), "degraded", "manual", "down-sustained"),  # b down from 240
        # b is back at 600, but a is impaired until 900: the worst counts.
        (at(1200), "manual", "restored", "stable"),
        (at(1200), "restored", "online", "reconciled"),
    ]
    assert [step["health"] for step in transitions(out, "s")][:2] == ["impaired", "down"]


def test_flapping_link_damped_as_impaired_until_quiet() -> None:
    topology = one({"s": service(["a"])})
    flaps = [
        probe("a", 120 + 30 * k, "down" if k % 2 == 0 else "up") for k in range(40)
    ]  # 120 .. 1290, ending up
    steady_before = readings("a", 60, [(0, "up")])
    steady_after = readings("a", 2100, [(0, "up")], start=1320)
    events = timeline(steady_before, flaps, steady_after, ticks(0, 2100))
    out = run(topology, events)
    # Damped from the 4th change (210): impaired at best, so degraded_max applies; the
    # link is trusted again flap_quiet (300 s) after its last change (1290), and the
    # stability window (300 s) starts only then.
    assert edges(out, "s") == [
        (at(240), "online", "degraded", "impaired"),
        (at(780), "degraded", "manual", "impaired-sustained"),
        (at(1920), "manual", "restored", "stable"),
        (at(1920), "restored", "online", "reconciled"),
    ]
    assert len(notices(out, "s", "public")) == 2


# ------------------------------------------------------- inputs, ordering (docs/clock.md)


def _story() -> tuple[Topology, list[Event]]:
    topology = one({"paper": service(["a"]), "ktp": service(["a"], offline=False)})
    changes = [(0, "up"), (120, "down"), (600, "up"), (960, "down"), (1200, "up")]
    events = scenario(
        1620,
        {"a": changes},
        override("ktp", 100, "pin"),
        override("ktp", 700, "unpin"),
        record("paper", 450, "R1"),
        record("paper", 1050, "R2"),
        reconciled("paper", 1530, ["R1", "R2"]),
    )
    return topology, events


def test_duplicate_event_id_changes_nothing() -> None:
    topology, events = _story()
    baseline = run(topology, events)
    assert dead_letters(baseline) == []
    assert len(transitions(baseline)) >= 8

    doubled = [copy for event in events for copy in (event, dict(event))]
    twice = run(topology, doubled)
    # A copy of an override is refused (a signed order is used once); nothing else differs.
    replayed = [d for d in dead_letters(twice) if d.reason.startswith("replayed: override ")]
    assert len(replayed) == sum(e["type"] == "operator.override.v1" for e in events) > 0
    assert [r for r in twice if r not in replayed] == baseline

    # Copies arriving later, after more ticks (well inside the dedup horizon).
    late = [e for e in events if e["type"] not in ("clock.tick.v1", "operator.override.v1")]
    assert run(topology, events[:-1] + late + events[-1:]) == baseline

    # Same id, different content: still a duplicate.
    impostor = probe("a", 120, "up", id="probe/a/120")
    at_120 = next(i for i, e in enumerate(events) if e["id"] == "probe/a/120")
    assert run(topology, [*events[: at_120 + 1], impostor, *events[at_120 + 1 :]]) == baseline


def test_duplicate_older_than_dedup_horizon_dead_lettered() -> None:
    """Past the horizon a duplicate can no longer be recognised: refused, not re-applied."""
    topology = one({"s": service(["a"], policy={"dedup_horizon": "600s"})})
    force = override("s", 10, "force_manual", id="force")
    events = scenario(
        3060,
        {"a": [(0, "up")]},
        force,
        override("s", 20, "release"),
        override("s", 2000, "pin"),  # wakes the service, which forgets ids past the horizon
    )
    out = run(topology, [*events[:-1], force, events[-1]])
    assert path(out, "s") == ["online", "manual", "restored", "online"]
    (letter,) = dead_letters(out)
    assert letter.key == "s"
    assert letter.reason.startswith("too-old")
    assert letter.raw == raw(force)


def test_older_link_event_does_not_move_health_backwards() -> None:
    topology = one({"s": service(["a"])})
    events = scenario(480, {"a": [(0, "up"), (180, "down")]})
    baseline = run(topology, events)
    assert edges(baseline, "s")[0] == (at(240), "online", "degraded", "impaired")

    # An "up" reading of 230 arrives after the "down" of 240 (before the tick), and one of
    # 100 arrives at the very end: neither makes the link better.
    at_240 = next(i for i, e in enumerate(events) if e["id"] == "probe/a/240")
    older = probe("a", 230, "up", id="older")
    stale = probe("a", 100, "up", id="much-older")
    shuffled = [*events[: at_240 + 1], older, *events[at_240 + 1 :], stale]
    assert run(topology, shuffled) == baseline


def test_late_event_applied_at_watermark() -> None:
    topology = one(
        {"s": service(["a"]), "t": service(["b"])},
        {"a": {"provider": "isp"}, "b": {"provider": "isp", "policy": {"stale_after": "1h"}}},
    )
    events = [*scenario(600, {"a": [(0, "up")]}), probe("b", 0, "up")]
    events = timeline(events)
    after_300 = next(i for i, e in enumerate(events) if e["id"] == "tick/300") + 1
    late = [override("s", 100, "force_manual", id="late-force"), probe("b", 100, "down")]
    engine = Engine(topology)
    out: list[Any] = []
    for index, event in enumerate([*events[:after_300], *late, *events[after_300:]]):
        engine.feed(raw(event))
        produced = engine.drain()
        if event["id"] == "tick/360":
            # Applied at the first tick after they arrived, in their place: the watermark.
            assert (at(300), "online", "manual", "operator-force-manual") in edges(produced, "s")
        elif index < after_300 + len(late):
            assert produced == []
        out.extend(produced)
    assert edges(out, "s")[0] == (at(300), "online", "manual", "operator-force-manual")
    # b's late "down" counts from the watermark (300), not from its own time (100).
    assert edges(out, "t")[:2] == [
        (at(360), "online", "degraded", "impaired"),
        (at(600), "degraded", "manual", "down-sustained"),
    ]


def test_incident_id_deterministic_and_on_every_record() -> None:
    topology, events = _story()
    out = run(topology, events)
    assert run(topology, events) == out
    steps = transitions(out, "paper")
    assert steps[0]["incident"] == "paper@20190205T000300Z"  # left online at 180
    incident = steps[0]["incident"]
    assert all(step["incident"] == incident for step in steps)
    assert all(c["data"]["incident"] == incident for c in commands(out, svc="paper"))
    # Each incident of ktp has its id on every record made while it was open; the pin
    # notice, made while no incident was open, says so.
    ktp = [r.event for r in out if isinstance(r, Emitted) and r.event["subject"] == "ktp"]
    assert ktp[0]["data"]["template"] == "pinned-oncall"
    assert ktp[0]["data"]["incident"] == "none"
    opened: str | None = None  # the incident open now
    last: str | None = None  # the latest incident: its closing notice follows the close
    for event in ktp:
        data = event["data"]
        moved = event["type"] == "failover.transition.v1"
        if moved and data["from"] == "online":
            opened = last = data["incident"]
            assert opened == f"ktp@{event['time'].replace('-', '').replace(':', '')}"
        if data.get("template") in {"pinned-oncall", "unpinned-oncall"} and opened is None:
            assert data["incident"] == "none"
        else:
            assert data["incident"] == last
        if moved and data["to"] == "online":
            opened = None
    assert last is not None
    incidents = {step["incident"] for step in transitions(out)}
    assert len(incidents) == len({s["incident"] for s in transitions(out) if s["from"] == "online"})


def test_incident_reopened_at_the_same_instant_gets_a_new_id() -> None:
    """Forced to manual, released, closed (empty ledger) and forced again, all at one
    instant: the second incident must not reuse the first one's id, or its transition and
    notices repeat output ids that consumers drop as duplicates."""
    topology = one({"s": service(["a"])})
    events = scenario(
        120,
        {"a": [(0, "up")]},
        override("s", 10, "force_manual", id="1-force"),
        override("s", 10, "release", id="2-release"),
        override("s", 10, "force_manual", id="3-force"),
    )
    out = run(topology, events)
    assert path(out, "s") == ["online", "manual", "restored", "online", "manual"]
    first, *_, second = transitions(out, "s")
    assert first["incident"] != second["incident"]
    ids = [event["id"] for event in emitted(out)]
    assert len(ids) == len(set(ids))


def test_public_notice_once_per_state_entry_in_id_and_en_with_local_time() -> None:
    topology = one({"paper": service(["a"], name=("Legalisasi KK", "Family card legalisation"))})
    events = scenario(
        4500,
        {"a": [(0, "up"), (120, "down"), (3960, "up")]},
        record("paper", 450, "R1"),
    )
    out = run(topology, events)
    public = notices(out, "paper", "public")
    assert [(n["time"], n["data"]["template"]) for n in public] == [
        (at(420), "manual-public"),
        (at(4260), "resumed-public"),  # 01:11 UTC
    ]
    manual = public[0]["data"]["text"]
    assert set(manual) == {"id", "en"}
    assert "Legalisasi KK" in manual["id"]
    assert "5 Februari 2019 pukul 09.07 WIT" in manual["id"]  # 00:07 UTC
    assert "Family card legalisation" in manual["en"]
    assert "5 February 2019 at 09:07 WIT" in manual["en"]
    assert "10.11 WIT" in public[1]["data"]["text"]["id"]
    assert "10:11 WIT" in public[1]["data"]["text"]["en"]
    assert "Kantor Uji" in manual["id"]
    assert "Kantor Uji" in manual["en"]


def test_dead_letters_bad_json_schema_unknown_type_unknown_link_unknown_service_too_large_key_mismatch() -> None:  # noqa: E501  # fmt: skip
    topology = one({"s": service(["a"])})
    engine = Engine(topology)
    bad_schema = probe("a", 10, "up", -5.0)
    unknown_type = {**tick(10), "type": "link.status.v9"}
    padded = {**probe("a", 10, "up"), "padding": "x" * (64 * 1024)}
    inputs: list[tuple[bytes, str | None]] = [
        (b"this line is not JSON", None),
        (raw(bad_schema), None),
        (raw(unknown_type), None),
        (raw(probe("fibre-x", 10, "down")), None),
        (raw(override("paspor", 10, "force_manual")), None),
        (raw(padded), None),
        (raw(probe("a", 10, "down", id="keyed")), "b"),
    ]
    for line, key in inputs:
        engine.feed(line, key)
    letters = [r for r in engine.drain() if isinstance(r, DeadLetter)]
    assert [letter.reason.split(":", 1)[0] for letter in letters] == [
        "not-json",
        "schema",
        "unknown-type",
        "unknown-link",
        "unknown-service",
        "too-large",
        "key-mismatch",
    ]
    assert [letter.raw for letter in letters] == [line for line, _ in inputs]
    assert letters[1].reason.startswith("schema: $.data.latency_ms")
    assert letters[3].key == "fibre-x"
    assert letters[4].key == "paspor"
    assert engine.counts["deadletter:not-json"] == 1
    assert engine.counts["deadletter:too-large"] == 1
    # The engine goes on: a good input after all that still works.
    engine.feed(raw(override("s", 20, "force_manual")), "s")
    engine.feed(raw(tick(60)), "__tick__")
    assert [(step["from"], step["to"]) for step in transitions(engine.drain(), "s")] == [
        ("online", "manual")
    ]


def test_manual_record_for_online_only_service_rejected() -> None:
    topology = one({"ktp": service(["a"], offline=False)})
    events = scenario(
        300,
        {"a": [(0, "up"), (120, "down")]},
        override("ktp", 130, "force_manual"),
        record("ktp", 150, "K-1", id="ktp-record"),
    )
    out = run(topology, events)
    (letter,) = dead_letters(out)
    assert letter.key == "ktp"
    assert letter.reason == "not-applicable: online-only service keeps no ledger"
    assert orjson.loads(letter.raw)["id"] == "ktp-record"
    assert path(out, "ktp") == ["online", "manual"]


def test_reconcile_for_other_incident_rejected() -> None:
    topology = one({"paper": service(["a"])})
    incident = "paper@20190205T000300Z"
    events = scenario(
        1080,
        {"a": [(0, "up"), (120, "down"), (600, "up")]},
        reconciled("paper", 60, ["R1"], id="no-incident-yet"),
        record("paper", 450, "R1"),
        reconciled("paper", 930, ["R1"], incident="paper@20190101T000000Z", id="other"),
        reconciled("paper", 990, ["R1"], incident=incident, id="this-one"),
    )
    out = run(topology, events)
    assert [(letter.key, letter.reason) for letter in dead_letters(out)] == [
        ("paper", "not-applicable: incident (open) is not open for this service"),
        ("paper", "not-applicable: incident paper@20190101T000000Z is not open for this service"),
    ]
    assert transitions(out, "paper")[0]["incident"] == incident
    assert edges(out, "paper")[-1] == (at(990), "restored", "online", "reconciled")
    assert transitions(out, "paper")[-1]["cause"] == "this-one"


@functools.cache
def _validator(name: str) -> Any:
    return jsonschema_rs.validator_for(load_schema(name))


def test_output_events_validate_against_schemas() -> None:
    topology = Topology.load(DEMO_TOPOLOGY)
    records = list(replay(topology, read_lines(DEMO_EVENTS), "ambon-events.jsonl"))
    seen: set[str] = set()
    for item in records:
        if isinstance(item, Emitted):
            name = item.event["type"]
            errors = [e.message for e in _validator(name).iter_errors(item.event)]
            assert errors == [], (name, item.event["id"], errors)
        else:
            name = "deadletter"
            line = orjson.loads(encode(item))
            errors = [e.message for e in _validator(name).iter_errors(line)]
            assert errors == [], (line, errors)
        seen.add(name)
    assert seen == {
        "failover.transition.v1",
        "failover.notice.v1",
        "failover.queue.hold.v1",
        "failover.queue.release.v1",
        "failover.reconcile.v1",
        "failover.escalate.v1",
        "failover.audit.v1",
        "deadletter",
    }
    # The small stories reach what the demo does not: pins outside an incident, records
    # reconciled one by one, overrides refused.
    topology, events = _story()
    extra = run(topology, [*events, override("ktp", 1700, "unpin"), tick(1800)])
    for item in extra:
        if isinstance(item, Emitted):
            assert _validator(item.event["type"]).is_valid(item.event), item.event
        else:
            line = orjson.loads(encode(item._replace(origin="story")))
            assert _validator("deadletter").is_valid(line), line


@pytest.mark.parametrize("flip", [False, True], ids=["one-order", "other-order"])
def test_inputs_order_by_time_rank_id_not_arrival(flip: bool) -> None:
    topology = one({"s": service(["a"]), "t": service(["a"])})
    base = scenario(600, {"a": [(0, "up")]})
    pairs = [
        # A link's change before an operator's word at the same instant: the forced
        # transition sees the link down, whichever arrived first.
        (probe("a", 130, "down", id="z-probe"), override("s", 130, "force_manual", id="a-op")),
        # Two operators' words at one instant: by id, the pin first, then the force.
        (override("t", 200, "force_manual", id="t-2"), override("t", 200, "pin", id="t-1")),
    ]
    events = list(base)
    for first, second in pairs:
        where = next(i for i, e in enumerate(events) if e["time"] > first["time"])
        events[where:where] = [second, first] if flip else [first, second]
    out = run(topology, events)

    reference = list(base)
    for first, second in pairs:
        where = next(i for i, e in enumerate(reference) if e["time"] > first["time"])
        reference[where:where] = [first, second]
    assert out == run(topology, reference)
    forced = transitions(out, "s")[0]
    assert (forced["to"], forced["health"]) == ("manual", "down")
    first_two = [r.event for r in out if isinstance(r, Emitted) and r.event["subject"] == "t"][:2]
    assert first_two[0]["data"]["template"] == "pinned-oncall"
    assert (first_two[1]["type"], first_two[1]["data"]["to"]) == (
        "failover.transition.v1",
        "manual",
    )
