"""Operators on a real broker: ``failover override`` signs and sends an override to a running
worker and prints the engine's verdict from the audit topic; a forged override is refused
with the same audit record and dead letter as replay gives for the same bytes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nacl.signing
import orjson
import pytest

from streams.demokeys import demo_key
from streams.topics import partition_for
from tests.kafka.kafkatools import wait_for
from tests.kafka.workers import (
    ROOT,
    Engine,
    Outputs,
    Ticker,
    cloud_event,
    demo_key_file,
    engine_env,
    engine_topics,
    publish,
    run_cli,
    running_worker,
    wall_time,
)
from workflows.engine import TICK_KEY
from workflows.operators import sign_override
from workflows.records import AUDIT, DeadLetter, Emitted
from workflows.replay import replay
from workflows.topology import Topology

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]

ACTING = "Plt. Kepala Dinas"
VERDICT = "the override's verdict"


async def test_failover_override_is_applied_and_its_verdict_printed(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=2)
    s = engine.settings
    key_file = demo_key_file(tmp_path, ACTING)
    command = [
        str(Path(sys.executable).parent / "failover"), "override", "force_manual", "ektp",
        "--reason", "Jaringan putus; jangan dipaksakan.", "--operator", ACTING,
        "--role", "acting-head", "--key-name", "demo", "--key-file", str(key_file),
        "--wait", "90",
    ]  # fmt: skip
    async with engine_topics(engine):
        outputs = Outputs(kafka_bootstrap, [s.topic_transitions, s.topic_audit])
        async with outputs, running_worker(engine) as worker:
            ticker = Ticker(kafka_bootstrap, engine)
            code, text, err = await run_cli(command, engine, ticker, worker, VERDICT)
            assert code == 0, (text, err)
            await wait_for(lambda: _has(outputs, s.topic_transitions), what="the transition")
    assert f"as {ACTING}/demo" in text
    assert text.splitlines()[-1] == "applied"
    (audit,) = outputs.of(s.topic_audit)
    data = orjson.loads(audit.value)["data"]
    assert (data["verdict"], data["actor"], data["key"]) == ("applied", ACTING, f"{ACTING}/demo")
    (transition,) = outputs.of(s.topic_transitions)
    moved = orjson.loads(transition.value)["data"]
    assert (moved["to"], moved["operator"]["actor"]) == ("manual", ACTING)


async def _has(outputs: Outputs, topic: str) -> bool:
    await outputs.poll()
    return bool(outputs.of(topic))


async def test_a_forged_override_is_refused_as_replay_refuses_it(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """The acting head's key id, a stranger's key: audited and dead-lettered, byte for byte
    what replay makes of the same input, and the service is not forced."""
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=2)
    s = engine.settings
    n = s.partitions
    at = wall_time(-5)
    event = orjson.loads(
        cloud_event(
            "operator.override.v1",
            "override/ektp/forged",
            at,
            "ektp",
            {"action": "release", "actor": ACTING, "role": "acting-head", "reason": "x"},
        )
    )
    forged = orjson.dumps(
        sign_override(event, f"{ACTING}/demo", nacl.signing.SigningKey(b"\x05" * 32))
    )
    tick = cloud_event("clock.tick.v1", "tick/after", wall_time(), None, {})
    messages = [
        (s.topic_overrides, b"ektp", forged, partition_for("ektp", n)),
        *((t, TICK_KEY.encode(), tick, p) for t in engine.inputs for p in range(n)),
    ]
    topology = Topology.load(ROOT / "streams" / "demo" / "ambon.yaml")
    expected = list(replay(topology, iter([(1, forged)]), "forged.jsonl"))
    (want_audit,) = [r for r in expected if isinstance(r, Emitted) and r.topic == AUDIT]
    (want_dead,) = [r for r in expected if isinstance(r, DeadLetter)]
    async with engine_topics(engine):
        await publish(kafka_bootstrap, messages)
        outputs = Outputs(kafka_bootstrap, [s.topic_audit, s.topic_deadletter])
        async with outputs, running_worker(engine) as worker:

            async def both() -> bool:
                assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
                await outputs.poll()
                return bool(outputs.of(s.topic_audit)) and bool(outputs.of(s.topic_deadletter))

            await wait_for(both, timeout=60, what="the audit record and the dead letter")
    (audit,) = outputs.of(s.topic_audit)
    assert audit.value == orjson.dumps(want_audit.event)
    (dead,) = outputs.of(s.topic_deadletter)
    assert dead.value == forged
    assert dead.headers["failover-reason"].decode() == want_dead.reason
    assert want_dead.reason == (
        f"unauthenticated: the signature does not verify with key '{ACTING}/demo'"
    )


HEAD = "Kepala Dinas"


def _two_person_topology(tmp_path: Path) -> Path:
    """The demo's topology with the acting head granted release too: two operators who may
    release ektp."""
    text = (ROOT / "streams" / "demo" / "ambon.yaml").read_text()
    path = tmp_path / "two-person.yaml"
    path.write_text(text.replace("[force_manual, pin]", "[force_manual, release, pin]"))
    return path


def _cli(tmp_path: Path, action: str, operator: str, *extra: str) -> list[str]:
    role = "acting-head" if operator == ACTING else "office-head"
    return [
        str(Path(sys.executable).parent / "failover"), "override", action, "ektp",
        "--reason", f"uji {action}", "--operator", operator, "--role", role,
        "--key-name", "demo", "--key-file", str(demo_key_file(tmp_path, operator)),
        "--wait", "90", *extra,
    ]  # fmt: skip


async def test_two_operators_release_a_held_queue_against_a_running_worker(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """ektp forced to manual, its exchange down: the acting head's release waits (exit 4,
    pending), the office head's releases it (exit 0); both audited, and the transition names
    both."""
    topology = _two_person_topology(tmp_path)
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=2, topology=topology)
    s = engine.settings
    n = s.partitions
    down = cloud_event("link.status.v1", "probe/down", wall_time(-20), "telkom-sto-pattimura",
                       {"status": "down", "latency_ms": None, "loss_pct": None})  # fmt: skip
    force = orjson.loads(cloud_event(
        "operator.override.v1", "override/ektp/force", wall_time(-10), "ektp",
        {"action": "force_manual", "actor": ACTING, "role": "acting-head", "reason": "putus"},
    ))  # fmt: skip
    forced = orjson.dumps(sign_override(force, f"{ACTING}/demo", demo_key(ACTING)))
    async with engine_topics(engine):
        await publish(kafka_bootstrap, [
            (s.topic_link_status, b"telkom-sto-pattimura", down,
             partition_for("telkom-sto-pattimura", n)),
            (s.topic_overrides, b"ektp", forced, partition_for("ektp", n)),
        ])  # fmt: skip
        outputs = Outputs(kafka_bootstrap, [s.topic_transitions, s.topic_audit, s.topic_commands])
        ticker = Ticker(kafka_bootstrap, engine)
        async with outputs, running_worker(engine) as worker:

            async def manual() -> bool:
                await ticker.tick()
                await outputs.poll()
                moves = [orjson.loads(r.value)["data"] for r in outputs.of(s.topic_transitions)]
                return any(m["to"] == "manual" for m in moves)

            await wait_for(manual, timeout=60, what="ektp in manual")
            code, out, err = await run_cli(
                _cli(tmp_path, "release", ACTING), engine, ticker, worker, VERDICT
            )
            text = out + err
            assert code == 4, text
            assert "pending: two-person" in text
            code, out, err = await run_cli(
                _cli(tmp_path, "release", ACTING), engine, ticker, worker, VERDICT
            )
            text = out + err
            assert code == 1, text
            assert "refused: same-operator" in text
            code, out, err = await run_cli(
                _cli(tmp_path, "release", HEAD), engine, ticker, worker, VERDICT
            )
            text = out + err
            assert code == 0, text
            assert text.splitlines()[-1] == "applied"

            async def restored() -> bool:
                await outputs.poll()
                moves = [orjson.loads(r.value)["data"] for r in outputs.of(s.topic_transitions)]
                audits = [orjson.loads(r.value)["data"] for r in outputs.of(s.topic_audit)]
                releases = [a for a in audits if a["action"] == "release"]
                return any(m["to"] == "restored" for m in moves) and len(releases) >= 4

            await wait_for(restored, timeout=30, what="the release and its audit records")
    moves = [orjson.loads(r.value)["data"] for r in outputs.of(s.topic_transitions)]
    (release,) = [m for m in moves if m["to"] == "restored"]
    assert release["reason"] == "operator-release"
    assert f"approved by {HEAD}" in release["detail"]
    verdicts = [orjson.loads(r.value)["data"] for r in outputs.of(s.topic_audit)]
    assert [(v["actor"], v["verdict"]) for v in verdicts if v["action"] == "release"] == [
        (ACTING, "pending"),
        (ACTING, "refused"),
        (ACTING, "applied"),
        (HEAD, "applied"),
    ]
    templates = [
        orjson.loads(r.value)["data"].get("template") for r in outputs.of(s.topic_commands)
    ]
    assert "release-pending-staff" in templates


async def test_a_pin_until_expires_on_event_time_against_a_running_worker(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """``failover override pin ektp --until`` a few seconds ahead: applied (and the audit
    record says until); the ticks that pass it lift the pin (the on-call notice says so).
    ``--until`` on a release is refused by the command itself, nothing sent."""
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=2)
    s = engine.settings
    refused = subprocess_run(_cli(tmp_path, "release", HEAD, "--until", wall_time(60)), engine)
    assert refused.returncode == 2
    assert "not applicable to release" in refused.stderr.decode()
    until = wall_time(6)
    async with engine_topics(engine):
        outputs = Outputs(kafka_bootstrap, [s.topic_audit, s.topic_commands])
        ticker = Ticker(kafka_bootstrap, engine)
        async with outputs, running_worker(engine) as worker:
            command = _cli(tmp_path, "pin", ACTING, "--until", until)
            code, out, err = await run_cli(command, engine, ticker, worker, VERDICT)
            text = out + err
            assert code == 0, text

            async def expired() -> bool:
                assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
                await ticker.tick()
                await outputs.poll()
                return any(
                    orjson.loads(r.value)["data"].get("template") == "pin-expired-oncall"
                    for r in outputs.of(s.topic_commands)
                )

            await wait_for(expired, timeout=60, what="the pin's expiry")
    (audit,) = [orjson.loads(r.value)["data"] for r in outputs.of(s.topic_audit)]
    assert (audit["verdict"], audit["until"]) == ("applied", until)


def subprocess_run(command: list[str], engine: Engine) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        command, env={**os.environ, **engine.env}, cwd=ROOT, capture_output=True, check=False,
        timeout=120,
    )  # fmt: skip
