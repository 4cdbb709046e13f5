"""The public read model (``failover.service.state.v1`` on ``service-state``) as the core
writes it: what each record says, when one is written, and that it is off by default."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from schemas import load_schema
from tests.helpers import make_topology, override, raw, reconciled, record, scenario, service
from tests.test_properties import Story, stories
from workflows.engine import Engine
from workflows.records import STATE, STATE_TYPE, DeadLetter, Emitted
from workflows.replay import encode, read_lines, replay
from workflows.service import ServiceStage, ServiceState
from workflows.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
DEMO_TOPOLOGY = ROOT / "streams" / "demo" / "ambon.yaml"
DEMO_EVENTS = ROOT / "streams" / "demo" / "ambon-events.jsonl"

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _demo(*, state: bool) -> list[Emitted | DeadLetter]:
    topology = Topology.load(DEMO_TOPOLOGY)
    return list(replay(topology, read_lines(DEMO_EVENTS), DEMO_EVENTS.name, state=state))


def _states(out: list[Any]) -> list[Emitted]:
    return [r for r in out if isinstance(r, Emitted) and r.topic == STATE]


def _others(out: list[Any]) -> list[Any]:
    return [r for r in out if not (isinstance(r, Emitted) and r.topic == STATE)]


def test_the_demo_writes_state_records_only_when_asked() -> None:
    plain, with_state = _demo(state=False), _demo(state=True)
    assert _states(plain) == []
    assert _states(with_state)
    # Everything else is the same, in the same order, byte for byte.
    assert [encode(r) for r in _others(with_state)] == [encode(r) for r in plain]


def test_every_state_record_of_the_demo_is_valid() -> None:
    validator = jsonschema_rs.Draft202012Validator(load_schema(STATE_TYPE))
    records = _states(_demo(state=True))
    for r in records:
        event = orjson.loads(encode(r))["value"]  # as written, through JSON
        errors = [e.message for e in validator.iter_errors(event)]
        assert errors == [], event
        assert r.key == event["subject"] == event["data"]["service"]
        assert event["type"] == STATE_TYPE
    ids = Counter(r.event["id"] for r in records)
    assert [i for i, n in ids.items() if n > 1] == []


def test_the_demo_ends_with_every_incident_closed() -> None:
    last = {r.key: r.event["data"] for r in _states(_demo(state=True))}
    assert set(last) == set(Topology.load(DEMO_TOPOLOGY).services)
    ektp = last["ektp"]
    assert ektp["state"] == "online"
    assert ektp["incident"] is None
    assert ektp["since"].endswith("+09:00")  # the site's offset (WIT)
    assert ektp["last_reason_code"] == "reconciled"
    assert ektp["last_operator"]["action"] == "unpin"
    assert ektp["last_operator"]["time"].endswith("+09:00")
    assert ektp["pin"] is None
    # A service whose link never failed and that never changed state: no transition yet.
    assert last["rekam-ktp-kecamatan"]["since"] is None


def _paper() -> Topology:
    return make_topology(
        {"paper": service(["a"], offline=True), "counter": service(["a"], offline=False)}
    )


def _run(topology: Topology, events: list[Any]) -> list[list[Emitted | DeadLetter]]:
    """The outputs of each input, one list per input (the last: the end of input)."""
    engine = Engine(topology, state_records=True)
    per_input: list[list[Emitted | DeadLetter]] = []
    for event in events:
        engine.feed(raw(event))
        per_input.append(engine.drain())
    engine.finish()
    per_input.append(engine.drain())
    return per_input


def test_what_a_state_record_says_through_an_incident() -> None:
    # Link a down from 60 s: manual at 360 s (manual_after 300 s); two paper records, one
    # reconciled after the restoration; an operator's pin and unpin on the way.
    events = scenario(
        1800,
        {"a": [(60, "down"), (600, "up")]},
        record("paper", 400, "R1"),
        record("paper", 410, "R2"),
        override("counter", 420, "pin", actor="Rina", reason="wait for telkom"),
        override("counter", 1000, "unpin", actor="Rina", reason="ok"),
        reconciled("paper", 1000, ["R1"]),
    )
    per_input = _run(_paper(), events)
    states = [r for out in per_input for r in _states(out)]
    paper = [r.event["data"] for r in states if r.key == "paper"]
    counter = [r.event["data"] for r in states if r.key == "counter"]
    # The link going down changes the links and the health before any transition.
    assert paper[0]["state"] == "online"
    assert paper[0]["health"] == "down"
    assert paper[0]["links"] == [{"link": "a", "health": "down"}]
    assert paper[0]["since"] is None
    manual = next(d for d in paper if d["state"] == "manual")
    assert manual["incident"] is not None
    assert manual["last_reason_code"] == "down-sustained"
    assert manual["queue"]["held"] is False  # offline-capable: a ledger, no held queue
    assert [d["manual"] for d in paper if d["state"] == "manual"][-1] == {
        "open": 2,
        "reconciled": 0,
    }
    assert any(d["manual"] == {"open": 1, "reconciled": 1} for d in paper)
    held = next(d for d in counter if d["state"] == "manual")
    assert held["queue"] == {"held": True, "name": "counter"}
    pinned = next(d for d in counter if d["pin"] is not None)
    assert pinned["pin"] == {
        "state": "manual",
        "actor": "Rina",
        "role": "on-call",
        "reason": "wait for telkom",
    }
    assert pinned["last_operator"]["action"] == "pin"
    assert pinned["last_operator"]["time"] == "2019-02-05T09:07:00+09:00"
    assert counter[-1]["pin"] is None
    assert counter[-1]["last_operator"]["action"] == "unpin"
    # At most one record per service per input, and never one without a change.
    for out in per_input:
        keys = Counter(r.key for r in _states(out))
        assert all(n == 1 for n in keys.values())


def test_a_refused_override_changes_no_state_record() -> None:
    # release while online is refused: dead-lettered, and the read model is as it was.
    events = scenario(120, {"a": []}, override("paper", 30, "release"))
    per_input = _run(_paper(), events)
    assert [r for out in per_input for r in _states(out)] == []
    assert any(isinstance(r, DeadLetter) for out in per_input for r in out)


def _check_read_model(topology: Topology, lines: list[bytes]) -> None:
    """After every input, each service's last state record is its read model now: no change
    of a field goes unrecorded."""
    engine = Engine(topology, state_records=True)
    stage = engine.services
    blank = {sid: stage.read_model(sid, ServiceState()) for sid in topology.services}
    last: dict[str, dict[str, Any]] = {}
    for line in [*lines, None]:
        if line is None:
            engine.finish()
        else:
            engine.feed(line)
        out = engine.drain()
        written = Counter(r.key for r in _states(out))
        assert all(n == 1 for n in written.values())
        for r in _states(out):
            last[r.key] = r.event["data"]
        for sid in stage.states:
            assert stage.read_model(sid) == last.get(sid, blank[sid]), sid


@SETTINGS
@given(stories())
def test_the_last_state_record_is_always_the_read_model(story: Story) -> None:
    _check_read_model(story.topology, story.with_copies())


def test_the_demo_misses_no_change() -> None:
    _check_read_model(Topology.load(DEMO_TOPOLOGY), [line for _, line in read_lines(DEMO_EVENTS)])


@SETTINGS
@given(stories())
def test_state_records_change_nothing_else(story: Story) -> None:
    numbered = list(enumerate(story.with_copies(), start=1))
    plain = list(replay(story.topology, iter(numbered), "story.jsonl"))
    with_state = list(replay(story.topology, iter(numbered), "story.jsonl", state=True))
    assert [encode(r) for r in _others(with_state)] == [encode(r) for r in plain]
    ids = Counter(r.event["id"] for r in with_state if isinstance(r, Emitted))
    assert [i for i, n in ids.items() if n > 1] == []


# ----------------------------------------------------------------------- snapshots


def _manual_stage() -> tuple[ServiceStage, list[Any]]:
    topology = _paper()
    engine = Engine(topology, state_records=True)
    events = scenario(900, {"a": [(60, "down")]}, override("counter", 400, "pin"))
    for event in events:
        engine.feed(raw(event))
    return engine.services, engine.drain()


def test_a_snapshot_keeps_the_read_model() -> None:
    stage, _ = _manual_stage()
    for sid, state in stage.states.items():
        saved = orjson.loads(orjson.dumps(state.to_json()))
        again = ServiceState.from_json(saved)
        assert again.entered == state.entered
        assert again.operator == state.operator
        assert stage.read_model(sid, again) == stage.read_model(sid, state)
    assert stage.states["counter"].operator is not None
    assert stage.states["paper"].entered is not None


def test_a_snapshot_of_an_earlier_version_still_loads() -> None:
    # Snapshots written before the read model had 17 fields (16 before the floor): the
    # changelog of a running deployment must still restore.
    stage, _ = _manual_stage()
    state = stage.states["counter"]
    saved = orjson.loads(orjson.dumps(state.to_json()))
    assert len(saved) == 25  # 19, 20: maintenance windows; 21-24: operators
    # 19 before maintenance windows (19: windows, 20: quiet-until).
    assert saved[19:21] == [None, None]
    before = ServiceState.from_json(saved[:19])
    assert before.to_json() == saved
    for old in (saved[:17], saved[:16]):
        again = ServiceState.from_json(old)
        assert again.state == state.state == "manual"
        assert again.incident == state.incident
        assert again.pin == state.pin
        assert again.entered is None
        assert again.operator is None
        data = stage.read_model("counter", again)
        assert data["since"] is None
        assert data["last_operator"] is None
        assert data["pin"] is not None
        # The next transition or operator action fills them in again.
        fresh = ServiceStage(_paper(), state_records=True)
        fresh.restore("counter", again)
        assert fresh.read_model("counter")["state"] == "manual"


def test_failover_replay_state_writes_them(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from streams.cli import app

    out = tmp_path / "out.jsonl"
    args = ["replay", str(DEMO_TOPOLOGY), str(DEMO_EVENTS), "--quiet", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--state"])
    assert result.exit_code == 0, result.output
    expected = b"".join(encode(r) + b"\n" for r in _demo(state=True))
    assert out.read_bytes() == expected


def test_an_input_rolled_back_leaves_no_state_record(monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo's pin raises half way (after the pin is set, in its notice): dead-lettered,
    # the service put back as it was, and no state record for the change undone. What is
    # written is what the file without that line gives.
    lines = list(read_lines(DEMO_EVENTS))
    (index,) = [
        i
        for i, (_, raw) in enumerate(lines)
        if b'"operator.override.v1"' in raw and b'"pin"' in raw
    ]
    original = ServiceStage._notice

    def failing(self: ServiceStage, *args: Any, **kwargs: Any) -> None:
        if args[4] == "pinned-oncall":  # (svc, s, time, audience, template, ...)
            raise RuntimeError("injected")
        original(self, *args, **kwargs)

    topology = Topology.load(DEMO_TOPOLOGY)
    with monkeypatch.context() as m:
        m.setattr(ServiceStage, "_notice", failing)
        out = list(replay(topology, iter(lines), "demo", state=True))
    assert [r.reason.split(":")[0] for r in out if isinstance(r, DeadLetter)].count(
        "internal-error"
    ) == 1
    without = list(replay(topology, iter(lines[:index] + lines[index + 1 :]), "demo", state=True))
    assert [encode(r) for r in _states(out)] == [encode(r) for r in _states(without)]
