"""Two people for the dangerous release, and overrides that expire (``until``): the core
(workflows/service.py), its audit records, notices and read model, and replay against the
Kafka path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema_rs
import nacl.signing
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import load_schema
from streams.demokeys import sign_as
from tests.helpers import (
    POLICY,
    at,
    dead_letters,
    make_topology,
    notices,
    override,
    path,
    run,
    scenario,
    service,
    transitions,
)
from tests.test_stream_partitions import oracle, simulate
from workflows.engine import Engine
from workflows.operators import sign_override
from workflows.records import AUDIT, STATE, Emitted
from workflows.replay import read_lines
from workflows.service import ServiceStage, ServiceState
from workflows.topology import Topology, TopologyError

ROOT = Path(__file__).resolve().parent.parent
AUDIT_SCHEMA = jsonschema_rs.validator_for(load_schema("failover.audit.v1"))
STATE_SCHEMA = jsonschema_rs.validator_for(load_schema("failover.service.state.v1"))

Record = Any


def _topology(window: str | None = None, offline: bool = False) -> Topology:
    policy = dict(POLICY)
    if window is not None:
        policy["release_approval_window"] = window
    return make_topology({"counter": service(["a"], offline=offline)}, policy=policy)


def _down(stop: float, *extra: dict[str, Any], up_at: float | None = None) -> list[Any]:
    """Link ``a`` down from 60 s (the service is manual from 360 s), up again at ``up_at``."""
    changes: list[tuple[Any, ...]] = [(60, "down")]
    if up_at is not None:
        changes.append((up_at, "up"))
    return scenario(stop, {"a": changes}, *extra)


def _release(t: float, actor: str, ident: str | None = None) -> dict[str, Any]:
    return override("counter", t, "release", actor=actor, id=ident or f"release/{actor}/{t}")


def _run(topology: Topology, events: list[Any]) -> list[Record]:
    engine = Engine(topology, state_records=True)
    out: list[Record] = []
    for event in events:
        engine.feed(orjson.dumps(event))
        out.extend(engine.drain())
    engine.finish()
    out.extend(engine.drain())
    return out


def _audits(out: list[Record]) -> list[dict[str, Any]]:
    records = [r.event for r in out if isinstance(r, Emitted) and r.topic == AUDIT]
    for event in records:
        assert AUDIT_SCHEMA.is_valid(event), event
    return [event["data"] for event in records]


def _states(out: list[Record]) -> list[dict[str, Any]]:
    records = [r.event for r in out if isinstance(r, Emitted) and r.topic == STATE]
    for event in records:
        assert STATE_SCHEMA.is_valid(event), event
    return [event["data"] for event in records]


# ------------------------------------------------------------------------ two people


def test_one_release_waits_visibly() -> None:
    out = _run(_topology(), _down(900, _release(420, "Rina")))
    assert path(out, "counter") == ["online", "degraded", "manual"]  # still held
    (pending,) = _audits(out)
    assert pending["verdict"] == "pending"
    assert pending["reason"].startswith("two-person: ")
    assert pending["expires"] == at(420 + 900)
    (notice,) = [n for n in notices(out, "counter", "staff")
                 if n["data"]["template"] == "release-pending-staff"]  # fmt: skip
    assert "second, different operator" in notice["data"]["text"]["en"]
    waiting = [s for s in _states(out) if "pending_release" in s]
    assert waiting
    assert waiting[-1]["pending_release"]["actor"] == "Rina"
    assert not dead_letters(out)


def test_two_different_operators_release() -> None:
    out = _run(_topology(), _down(900, _release(420, "Rina"), _release(480, "Budi")))
    # Released at 480; its link still down, it goes round again (online, degraded, manual).
    assert path(out, "counter")[:4] == ["online", "degraded", "manual", "restored"]
    step = transitions(out, "counter")[2]
    assert step["cause"] == "release/Budi/480"
    assert step["reason"] == "operator-release"
    assert "released by Rina" in step["detail"]
    assert "approved by Budi" in step["detail"]
    assert step["operator"]["actor"] == "Rina"
    verdicts = [(a["override"], a["verdict"]) for a in _audits(out)]
    assert verdicts == [
        ("release/Rina/420", "pending"),
        ("release/Rina/420", "applied"),
        ("release/Budi/480", "applied"),
    ]
    audits = _audits(out)
    assert audits[1]["approved_by"] == "release/Budi/480"
    assert audits[2]["approves"] == "release/Rina/420"
    assert "pending_release" not in _states(out)[-1]
    assert not dead_letters(out)


def test_the_same_operator_twice_does_not_release() -> None:
    out = _run(_topology(), _down(1500, _release(420, "Rina"), _release(480, "Rina")))
    assert path(out, "counter") == ["online", "degraded", "manual"]
    (dead,) = dead_letters(out)
    assert dead.reason.startswith("same-operator: ")
    verdicts = [(a["override"], a["verdict"]) for a in _audits(out)]
    assert verdicts == [
        ("release/Rina/420", "pending"),
        ("release/Rina/480", "refused"),
        ("release/Rina/420", "lapsed"),  # 15 minutes on, nobody approved it
    ]
    lapsed = _audits(out)[-1]
    assert lapsed["reason"].startswith("lapsed: ")
    assert any(n["data"]["template"] == "release-lapsed-staff" for n in notices(out, "counter"))
    assert "pending_release" not in _states(out)[-1]


def test_the_window_is_policy_and_an_approval_after_it_waits_anew() -> None:
    out = _run(_topology("2m"), _down(900, _release(420, "Rina"), _release(600, "Budi")))
    assert path(out, "counter") == ["online", "degraded", "manual"]
    verdicts = [(a["override"], a["verdict"]) for a in _audits(out)]
    assert verdicts == [
        ("release/Rina/420", "pending"),
        ("release/Rina/420", "lapsed"),
        ("release/Budi/600", "pending"),
        ("release/Budi/600", "lapsed"),  # at 720, nobody approved it either
    ]
    assert _audits(out)[0]["expires"] == at(540)


def test_one_operator_releases_when_links_are_healthy_or_the_service_works_on_paper() -> None:
    # Healthy again at 420 (restore_after 5m would restore at 720): one release is enough.
    out = _run(_topology(), _down(900, _release(480, "Rina"), up_at=420))
    assert path(out, "counter")[:4] == ["online", "degraded", "manual", "restored"]
    assert transitions(out, "counter")[2]["reason"] == "operator-release"
    assert [a["verdict"] for a in _audits(out)] == ["applied"]
    # An offline-capable service's release is not dangerous: no second operator either.
    out = _run(_topology(offline=True), _down(900, _release(420, "Rina")))
    assert path(out, "counter")[:4] == ["online", "degraded", "manual", "restored"]
    assert [a["verdict"] for a in _audits(out)] == ["applied"]


def test_a_release_that_waits_is_superseded_when_the_service_restores_itself() -> None:
    out = _run(_topology("1h"), _down(1200, _release(420, "Rina"), up_at=450))
    assert path(out, "counter")[:4] == ["online", "degraded", "manual", "restored"]
    assert transitions(out, "counter")[2]["reason"] == "stable"
    verdicts = [(a["verdict"], (a["reason"] or "").split(":")[0]) for a in _audits(out)]
    assert verdicts == [("pending", "two-person"), ("lapsed", "superseded")]


def test_release_approval_window_is_validated() -> None:
    for bad, message in [
        ("0s", "longer than zero"),
        ("soon", "does not match"),
        ("400d", "longer than"),
    ]:
        with pytest.raises(TopologyError, match=message):
            _topology(bad)
    assert _topology("30m").services["counter"].policy.release_approval_window == 1800 * 10**6
    assert _topology().services["counter"].policy.release_approval_window == 900 * 10**6


def test_signed_releases_by_two_operators_of_the_demo() -> None:
    text = (ROOT / "streams" / "demo" / "ambon.yaml").read_text()
    topology = Topology.parse(text.replace("[force_manual, pin]", "[force_manual, release, pin]"))
    lines = [raw for _, raw in read_lines(ROOT / "streams" / "demo" / "ambon-events.jsonl")]
    # ektp is manual from 23:15:30 on the 4th, its exchange down: two signed releases.
    first = _demo_override("ektp", "2019-02-05T05:00:30Z", "release", "Plt. Kepala Dinas")
    second = _demo_override("ektp", "2019-02-05T05:05:30Z", "release", "Kepala Dinas")
    out = run(topology, _insert(lines, first, second), audit=True)
    step = [t for t in transitions(out, "ektp") if t["reason"] == "operator-release"]
    assert len(step) == 1
    assert "approved by Kepala Dinas" in step[0]["detail"]
    verdicts = [a["verdict"] for a in _audits(out) if a["action"] == "release"]
    assert verdicts == ["pending", "applied", "applied"]


# --------------------------------------------------------------------------- until


def test_force_manual_until_holds_then_the_service_returns_as_usual() -> None:
    topology = make_topology({"paper": service(["a"])}, policy=POLICY)
    forced = override("paper", 60, "force_manual", id="force")
    forced["data"]["until"] = at(1000)
    out = run(topology, scenario(1500, {"a": []}, forced), audit=True)
    steps = transitions(out, "paper")
    assert [s["to"] for s in steps] == ["manual", "restored", "online"]
    assert "until" in steps[0]["detail"]
    restored = [r.event for r in out if isinstance(r, Emitted) and r.event["type"]
                == "failover.transition.v1" and r.event["data"]["to"] == "restored"]  # fmt: skip
    assert restored[0]["time"] == at(1020)  # the first tick after 1000, not 360
    (applied,) = _audits(out)
    assert applied["until"] == at(1000)
    # Without until: restored after restore_after (5m) of health, at the tick of 360.
    plain = override("paper", 60, "force_manual", id="force")
    out = run(topology, scenario(1500, {"a": []}, plain))
    restored = [r.event for r in out if isinstance(r, Emitted) and r.event["type"]
                == "failover.transition.v1" and r.event["data"]["to"] == "restored"]  # fmt: skip
    assert restored[0]["time"] == at(360)


def test_a_pin_until_expires_and_the_service_catches_up() -> None:
    topology = make_topology({"paper": service(["a"])}, policy=POLICY)
    pin = override("paper", 30, "pin", id="pin")
    pin["data"]["until"] = at(1200)
    out = _run(topology, scenario(1500, {"a": [(60, "down")]}, pin))
    steps = transitions(out, "paper")
    assert steps[0]["to"] == "manual"
    assert steps[0]["cause"] == "tick/1200"  # frozen until then; caught up at once
    oncall = [n["data"]["template"] for n in notices(out, "paper", "oncall")]
    assert oncall[:2] == ["pinned-oncall", "pin-expired-oncall"]
    pinned = [s for s in _states(out) if s["pin"] is not None]
    assert pinned
    assert pinned[0]["pin"]["until"].startswith("2019-02-05T09:20:00")


@pytest.mark.parametrize("action", ["release", "unpin"])
def test_until_on_an_action_that_does_not_last_is_refused(action: str) -> None:
    topology = make_topology({"paper": service(["a"])}, policy=POLICY)
    first = override("paper", 30, "pin" if action == "unpin" else "force_manual", id="first")
    bad = override("paper", 90, action, id="bad")
    bad["data"]["until"] = at(600)
    out = run(topology, scenario(300, {"a": []}, first, bad), audit=True)
    (dead,) = dead_letters(out)
    assert dead.reason.startswith(f"not-applicable: until has no meaning for {action}")
    assert [a["verdict"] for a in _audits(out)] == ["applied", "refused"]


def test_until_not_after_the_override_is_refused() -> None:
    topology = make_topology({"paper": service(["a"])}, policy=POLICY)
    bad = override("paper", 90, "pin", id="bad")
    bad["data"]["until"] = at(90)
    out = run(topology, scenario(300, {"a": []}, bad))
    (dead,) = dead_letters(out)
    assert dead.reason.startswith("not-applicable: until ")
    assert "is not after the override's time" in dead.reason


# ------------------------------------------------------------------- state and parity


def test_the_state_keeps_a_waiting_release_and_until_and_reads_older_snapshots() -> None:
    topology = _topology()
    stage = ServiceStage(topology, state_records=True)
    engine = Engine(topology)
    engine.services = stage
    events = _down(450, _release(420, "Rina"))
    for event in events:
        engine.feed(orjson.dumps(event))
    state = stage.states["counter"]
    state.forced_until, state.pin_until = 123, 456
    state.budget = {"Rina/k1": (60_000_000, 3, 1)}
    assert state.release is not None
    saved = orjson.loads(orjson.dumps(state.to_json()))
    assert saved[19] is None
    assert saved[20] is None
    again = ServiceState.from_json(saved)
    assert (again.release, again.forced_until, again.pin_until) == (state.release, 123, 456)
    assert again.budget == state.budget
    for older in (saved[:19], saved[:21]):
        old = ServiceState.from_json(older)
        assert (old.release, old.forced_until, old.pin_until) == (None, None, None)
        assert old.state == "manual"


def _demo_override(service_id: str, time: str, action: str, actor: str,
                   until: str | None = None) -> bytes:  # fmt: skip
    data: dict[str, Any] = {"action": action, "actor": actor,
                            "role": "acting-head" if actor.startswith("Plt") else "office-head",
                            "reason": "uji dua orang"}  # fmt: skip
    if until is not None:
        data["until"] = until
    event = {
        "specversion": "1.0",
        "id": f"override/{service_id}/{action}/{actor}/{time}",
        "source": "/operators/console",
        "type": "operator.override.v1",
        "time": time,
        "subject": service_id,
        "data": data,
    }
    return orjson.dumps(sign_as(event))


def _insert(lines: list[bytes], *extra: bytes) -> list[bytes]:
    """``extra`` overrides placed among the demo's lines just before the first line stamped
    after them (so they arrive before the tick that covers them)."""
    out = list(lines)
    for raw in extra:
        moment = orjson.loads(raw)["time"]
        index = next(i for i, line in enumerate(out) if orjson.loads(line)["time"] > moment)
        out.insert(index, raw)
    return out


def _parity_case() -> tuple[Topology, list[bytes]]:
    text = (ROOT / "streams" / "demo" / "ambon.yaml").read_text()
    topology = Topology.parse(text.replace("[force_manual, pin]", "[force_manual, release, pin]"))
    lines = [raw for _, raw in read_lines(ROOT / "streams" / "demo" / "ambon-events.jsonl")]
    extra = [
        _demo_override("ektp", "2019-02-05T05:00:30Z", "release", "Plt. Kepala Dinas"),
        _demo_override("ektp", "2019-02-05T05:05:30Z", "release", "Kepala Dinas"),
        _demo_override("akta-lahir", "2019-02-05T05:10:30Z", "release", "Kepala Dinas"),
        _demo_override("akta-lahir", "2019-02-05T05:12:30Z", "release", "Kepala Dinas"),
        _demo_override(
            "legalisasi", "2019-02-05T05:40:30Z", "pin", "Plt. Kepala Dinas", "2019-02-05T06:10:00Z"
        ),
        _demo_override(
            "surat-pindah", "2019-02-05T05:40:30Z", "unpin", "Kepala Dinas", "2019-02-05T06:10:00Z"
        ),
    ]
    return topology, _insert(lines, *extra)


@pytest.mark.parametrize(("partitions", "seed", "restart_every", "batched"),
                         [(1, 0, None, False), (4, 1, 7, False), (3, 2, 3, True)])  # fmt: skip
def test_replay_and_the_kafka_path_give_the_same_verdicts(
    partitions: int, seed: int, restart_every: int | None, batched: bool
) -> None:
    topology, lines = _parity_case()
    expected, reasons = oracle(topology, lines)
    audits = [orjson.loads(e)["data"] for events in expected.values() for e in events
              if b'"failover.audit.v1"' in e]  # fmt: skip
    assert {a["verdict"] for a in audits} >= {"pending", "applied", "lapsed", "refused"}
    assert any(reason.startswith("same-operator: ") for reason in reasons)
    got, got_reasons = simulate(partitions, seed, restart_every, batched, topology=topology,
                                lines=lines)  # fmt: skip
    assert got == expected
    assert got_reasons == reasons


_ACTORS = st.sampled_from(["Rina", "Budi", "Sari"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(361, 1700), _ACTORS), min_size=1, max_size=6),
    st.one_of(st.none(), st.integers(400, 1700)),
    st.sampled_from(["2m", "5m", "15m"]),
)
def test_an_unhealthy_hold_is_released_only_by_two_different_operators_within_the_window(
    releases: list[tuple[int, str]], up_at: int | None, window: str
) -> None:
    """Whatever releases arrive: the hold of an online-only service whose link is down is
    released by an operator only on the release of a second, different operator within the
    window after a waiting one; every release gets exactly one first verdict; replay and the
    restored state agree."""
    seconds = {"2m": 120, "5m": 300, "15m": 900}[window]
    events = [_release(t, actor, f"release/{i}") for i, (t, actor) in enumerate(releases)]
    out = _run(_topology(window), _down(1800, *events, up_at=up_at))
    audits = _audits(out)
    first = {}
    for record in audits:
        first.setdefault(record["override"], record["verdict"])
    assert set(first) == {e["id"] for e in events}
    steps = transitions(out, "counter")
    for step in steps:
        if step["reason"] == "operator-release" and step["health"] != "healthy":
            assert "approved by" in step["detail"]
            approver = step["cause"]
            (approval,) = [a for a in audits if a["override"] == approver]
            approved = approval["approves"]
            requester = next(a for a in audits if a["override"] == approved)
            assert requester["actor"] != approval["actor"]
            (t1,) = [t for i, (t, _) in enumerate(releases) if f"release/{i}" == approver]
            t0 = next(t for i, (t, _) in enumerate(releases) if f"release/{i}" == approved)
            assert t0 <= t1 < t0 + seconds
    # Pending ones end: approved (applied), lapsed or still waiting at the end of input.
    for ident, verdict in first.items():
        if verdict == "pending":
            later = [a["verdict"] for a in audits if a["override"] == ident][1:]
            assert later in ([], ["applied"], ["lapsed"])
    assert _run(_topology(window), _down(1800, *events, up_at=up_at)) == out


# ------------------------------------------------------------------------ a flood


def _forged(i: int, time: str, key_id: str = "Plt. Kepala Dinas/demo") -> bytes:
    event = {
        "specversion": "1.0",
        "id": f"forged/{i}",
        "source": "/operators/console",
        "type": "operator.override.v1",
        "time": time,
        "subject": "ektp",
        "data": {"action": "release", "actor": "Plt. Kepala Dinas", "role": "acting-head",
                 "reason": "x"},
    }  # fmt: skip
    stranger = nacl.signing.SigningKey(b"\x07" * 32)
    return orjson.dumps(sign_override(event, key_id, stranger))


def _flood_case() -> tuple[Topology, list[bytes]]:
    """The demo with 100 forged overrides on ektp in one minute (the acting head's key id, a
    stranger's key), then the office head's signed pin a minute later."""
    topology = Topology.load(ROOT / "streams" / "demo" / "ambon.yaml")
    lines = [raw for _, raw in read_lines(ROOT / "streams" / "demo" / "ambon-events.jsonl")]
    flood = [_forged(i, f"2019-02-05T05:00:{i % 50 + 5:02d}Z") for i in range(100)]
    pin = _demo_override("ektp", "2019-02-05T05:01:30Z", "pin", "Kepala Dinas")
    return topology, _insert(lines, *flood, pin)


def test_a_flood_of_forged_overrides_is_refused_before_the_signature_past_the_limit() -> None:
    topology, lines = _flood_case()
    out = run(topology, lines, audit=True)
    dead = [d.reason.split(":")[0] for d in dead_letters(out) if d.key == "ektp"]
    assert dead.count("unauthenticated") == 60  # max_overrides_per_minute, verified
    assert dead.count("rate-limited") == 40  # refused before the signature, every one kept
    audits = [a for a in _audits(out) if a["override"].startswith("forged/")]
    assert [a["reason"].split(":")[0] for a in audits] == ["unauthenticated"] * 60 + [
        "rate-limited"
    ]  # the flood's refusal audited once
    pinned = [a for a in _audits(out) if a["action"] == "pin" and a["actor"] == "Kepala Dinas"]
    assert pinned[0]["verdict"] == "applied"  # the next minute, the real operator is heard
    # The engine's cheap check and the full path refuse alike: byte for byte the same as an
    # engine that never takes the cheap path.
    assert [r for r in out if not isinstance(r, Emitted)] == [
        r for r in _without_cheap_check(topology, lines) if not isinstance(r, Emitted)
    ]


def _without_cheap_check(topology: Topology, lines: list[bytes]) -> list[Record]:
    import workflows.inputs as inputs_module

    original = inputs_module.flood_reason
    inputs_module.flood_reason = lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        return run(topology, lines, audit=True)
    finally:
        inputs_module.flood_reason = original


@pytest.mark.parametrize(("partitions", "seed", "restart_every", "batched"),
                         [(2, 3, None, False), (3, 4, 5, False), (2, 5, 2, True)])  # fmt: skip
def test_a_flood_is_refused_alike_by_replay_and_the_kafka_path(
    partitions: int, seed: int, restart_every: int | None, batched: bool
) -> None:
    topology, lines = _flood_case()
    expected, reasons = oracle(topology, lines)
    assert sum(n for r, n in reasons.items() if r.startswith("rate-limited")) == 40
    got, got_reasons = simulate(partitions, seed, restart_every, batched, topology=topology,
                                lines=lines)  # fmt: skip
    # An override refused as it enters is audited at once, on Kafka when its partition is
    # read: the same records, placed among the tick's outputs by arrival. The rest in order.
    assert set(got) == set(expected)
    for sid, events in expected.items():
        audit = [e for e in events if b'"failover.audit.v1"' in e]
        assert [e for e in got[sid] if e not in audit] == [e for e in events
                                                              if e not in audit]  # fmt: skip
        assert sorted(e for e in got[sid] if e in audit) == sorted(audit)
    assert got_reasons == reasons


def test_max_overrides_per_minute_is_validated() -> None:
    policy = {**POLICY, "max_overrides_per_minute": 0}
    with pytest.raises(TopologyError, match="max_overrides_per_minute"):
        make_topology({"counter": service(["a"], offline=False)}, policy=policy)
