"""A healthy worker's log holds its start, its rebalances and nothing alarming: a clean
scenario (valid inputs only, commands flowing, wall-clock ticks) must log no warning and no
error. faust's liveness checks run with short timeouts, so that a false alarm of theirs shows
within the test instead of after five minutes in production."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka.errors import GroupCoordinatorNotAvailableError

from streams.topics import partition_for
from tests.kafka.kafkatools import wait_for
from tests.kafka.workers import (
    Outputs,
    cloud_event,
    engine_env,
    engine_topics,
    publish,
    stage2_committed,
    start_worker,
    stop_worker,
)

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]

TOPOLOGY = """
sites:
  office: {name: Test office, timezone: Asia/Jayapura}
links:
  uplink: {provider: telkom}
  backup: {provider: indosat}
services:
  letters:
    site: office
    name: {id: Surat, en: Letters}
    requires: [uplink]
    offline: true
  permits:
    site: office
    name: {id: Izin, en: Permits}
    requires: [[uplink, backup]]
    offline: true
policy:
  degrade_after: 1s
  manual_after: 2s
  stale_after: 10m
"""

#: A log line of level WARNING or above, as faust's worker writes them; or a traceback.
ALARM = re.compile(r"\[(WARNING|ERROR|CRITICAL)\]|^Traceback", re.MULTILINE)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.mark.slow
async def test_a_healthy_worker_logs_no_warning_and_no_error(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topology = tmp_path / "quiet.yaml"
    topology.write_text(TOPOLOGY)
    engine = engine_env(
        kafka_bootstrap, unique_name, tmp_path, partitions=6, topology=topology,
        # The defaults (mode warns, rightly, when a commit or a tick takes longer than its
        # interval: the suite's 0.2 s commits do at start on a busy machine).
        FAILOVER_TICK_INTERVAL="1", FAILOVER_COMMIT_INTERVAL="0.5",
        # faust's stream and commit liveness checks (faust: 300 s each) within the test, but
        # after the worker has had the time to start on a busy machine.
        FAILOVER_FAUST_STREAM_PROCESSING_TIMEOUT="15",
        FAILOVER_FAUST_BROKER_COMMIT_LIVELOCK_SOFT_TIMEOUT="15",
    )  # fmt: skip
    s = engine.settings
    sent = 0

    async def reading(link: str, status: str) -> None:
        nonlocal sent
        sent += 1
        event = cloud_event(
            "link.status.v1", f"probe/{link}/{sent}", _now(), link, {"status": status}
        )
        key = link.encode()
        await publish(
            kafka_bootstrap,
            [(s.topic_link_status, key, event, partition_for(key, s.partitions))],
        )

    async with engine_topics(engine):
        outputs = Outputs(kafka_bootstrap, [s.topic_transitions, s.topic_commands])
        async with outputs:
            worker = start_worker(engine)
            try:

                async def ticking() -> bool:
                    assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
                    try:
                        return await stage2_committed(engine)
                    except GroupCoordinatorNotAvailableError:  # a fresh broker's first group
                        return False

                await wait_for(ticking, timeout=60, what="ticks through both stages")
                for link in ("uplink", "backup"):
                    await reading(link, "up")
                await reading("uplink", "down")

                async def manual() -> bool:
                    assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
                    await outputs.poll()
                    tos = [orjson.loads(r.value)["data"] for r in outputs.of(s.topic_transitions)]
                    return any(t["service"] == "letters" and t["to"] == "manual" for t in tos)

                await wait_for(manual, timeout=60, what="letters to go manual")
                # Readings keep coming while faust's liveness checks run well past their 15 s.
                for _ in range(45):
                    await reading("backup", "up")
                    await reading("uplink", "down")
                    await outputs.poll()
                    await wait_for(ticking, timeout=10, what="the worker to keep up")
                    await asyncio.sleep(0.5)  # a probe's pace, not a wait for a condition
                assert outputs.of(s.topic_commands), "commands flowed"
            finally:
                worker.send_signal(signal.SIGTERM)
                code = await stop_worker(worker)
    log = (engine.logs / "worker-0.log").read_text(errors="replace")
    assert "failover worker settings" in log
    alarms = [line for line in log.splitlines() if ALARM.search(line)]
    assert not alarms, "\n".join(alarms[:20])
    assert code == 0
