"""Every input example as a program, against ``failover worker`` on a real broker.

The worker runs without its own ticker (``FAILOVER_TICK_INTERVAL=0``): examples/ticker.py
is its clock, tagging each tick with the worker's key. An operator forces a service to
paper (examples/override.py, signed with the operator's key), the office reports a record
done by hand (examples/manual_record.py), the operator releases it, the engine asks for the
record to be re-entered and the office reports it done (examples/reconcile.py): the incident
closes. A record reported while the service is online is dead-lettered, and
examples/deadletters.py shows it. (examples/probe.py and examples/consumer.py are run by
tests/kafka/test_engine.py.)
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from streams.demokeys import demo_key
from tests.kafka.kafkatools import wait_for
from tests.kafka.workers import ROOT, Outputs, engine_env, engine_topics, running_worker

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]

OPERATOR = "Kepala Dinas"
TOPOLOGY = f"""
sites:
  office: {{name: Test office, timezone: Asia/Jayapura}}
links:
  uplink: {{provider: telkom}}
services:
  letters:
    site: office
    name: {{id: Surat, en: Letters}}
    requires: [uplink]
    offline: true
operators:
  {OPERATOR}:
    name: Kepala Dinas Uji
    role: office-head
    keys: {{demo: {base64.b64encode(bytes(demo_key(OPERATOR).verify_key)).decode()}}}
    grants:
      - {{actions: [force_manual, release], sites: [office]}}
policy:
  stale_after: 1h
"""


@pytest.mark.slow
async def test_every_input_example_against_a_worker(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topology = tmp_path / "office.yaml"
    topology.write_text(TOPOLOGY)
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=2, topology=topology)
    s = engine.settings
    env = {
        **os.environ,
        **engine.env,
        "FAILOVER_OPERATOR_KEY": base64.b64encode(bytes(demo_key(OPERATOR))).decode(),
    }

    def example(name: str, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, str(ROOT / "examples" / f"{name}.py"), *args],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{name}: {done.stderr}"
        return done.stdout

    async with engine_topics(engine):
        outputs = Outputs(kafka_bootstrap, [s.topic_transitions, s.topic_commands])
        ticks = tmp_path / "ticker.log"
        with ticks.open("wb") as log:
            ticker = subprocess.Popen(
                [sys.executable, str(ROOT / "examples" / "ticker.py"), "--interval", "0.2"],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            async with outputs, running_worker(engine) as worker:

                def edges() -> list[tuple[str, str]]:
                    return [
                        (e["data"]["from"], e["data"]["to"])
                        for e in map(
                            orjson.loads, (r.value for r in outputs.of(s.topic_transitions))
                        )
                    ]

                async def reached(count: int) -> bool:
                    assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
                    assert ticker.poll() is None, ticks.read_text()
                    await outputs.poll()
                    return len(edges()) >= count

                example("manual_record", "letters", "EARLY-1")  # while online: dead letter
                who = ["--operator", OPERATOR, "--role", "office-head", "--key-name", "demo"]
                sent = example("override", "letters", "force_manual", *who, "--reason", "uji")
                assert sent.startswith("sent override/letters/force_manual/")
                await wait_for(lambda: reached(1), timeout=60, what="the service on paper")
                example("manual_record", "letters", "REC-1", "--kind", "letter")
                example("override", "letters", "release", *who, "--reason", "jaringan pulih")
                await wait_for(lambda: reached(2), timeout=60, what="the service restored")
                commands = [orjson.loads(r.value) for r in outputs.of(s.topic_commands)]
                (ask,) = [c for c in commands if c["type"] == "failover.reconcile.v1"]
                assert ask["data"]["record_ids"] == ["REC-1"]
                example("reconcile", "letters", "REC-1", "--incident", ask["data"]["incident"])
                await wait_for(lambda: reached(3), timeout=60, what="the incident closed")
            dead = example("deadletters")
        finally:
            ticker.terminate()
            ticker.wait(timeout=30)
    assert edges() == [("online", "manual"), ("manual", "restored"), ("restored", "online")]
    (line,) = dead.splitlines()
    assert line.startswith("not-applicable: manual record while online | ")
    assert f"{s.topic_feedback}[" in line
    assert "EARLY-1" in line
