"""The engine on a real broker: ``failover worker`` in a subprocess, as in production.

- Parity: the demo file published in file order gives, for every service, exactly the
  transitions and commands that ``failover replay`` gives (order across services is not
  defined on Kafka; per service and topic it is), and the same dead letters.
- Bad input on the wire is dead-lettered with its reason and its original bytes, and the
  engine goes on.
- Live: the ticker's wall-clock ticks drive the machines; the examples in ``examples/`` work.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from streams.config import Settings
from streams.topics import partition_for
from tests.kafka.kafkatools import wait_for
from tests.kafka.workers import (
    DEMO_EVENTS,
    DEMO_TOPOLOGY,
    ROOT,
    Engine,
    Outputs,
    await_dead_letters_and_a_transition,
    cloud_event,
    engine_env,
    engine_topics,
    group_done,
    group_lag,
    kill_twice,
    one_of_two_killed,
    publish,
    route,
    running_worker,
    stable_offsets,
    stage2_committed,
)
from workflows.engine import TICK_KEY
from workflows.records import AUDIT, COMMANDS, TRANSITIONS, DeadLetter, Emitted
from workflows.replay import read_lines, replay
from workflows.topology import Topology

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]


def expected_outputs(settings: Settings) -> tuple[dict[tuple[str, str], list[bytes]], Counter[str]]:
    """What replay gives for the demo: per (topic, service) the event bytes; dead letters."""
    topics = {
        COMMANDS: settings.topic_commands,
        TRANSITIONS: settings.topic_transitions,
        AUDIT: settings.topic_audit,
    }
    per_key: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    reasons: Counter[str] = Counter()
    for record in replay(Topology.load(DEMO_TOPOLOGY), read_lines(DEMO_EVENTS), "demo"):
        if isinstance(record, Emitted):
            per_key[(topics[record.topic], record.key)].append(orjson.dumps(record.event))
        else:
            assert isinstance(record, DeadLetter)
            reasons[record.reason] += 1
    return per_key, reasons


def demo_messages(settings: Settings) -> list[tuple[str, bytes | None, bytes, int | None]]:
    return [
        (topic, key, raw, partition)
        for _, raw in read_lines(DEMO_EVENTS)
        for topic, key, partition in route(settings, raw)
    ]


def demo_total(settings: Settings) -> int:
    expected, reasons = expected_outputs(settings)
    return sum(len(v) for v in expected.values()) + sum(reasons.values())


async def finish(engine: Engine, outputs: Outputs, worker: subprocess.Popen[bytes]) -> None:
    """Wait until the worker has produced and committed everything for the demo."""
    total = demo_total(engine.settings)

    async def complete() -> bool:
        assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
        await outputs.poll()
        return len(outputs.records) >= total

    async def settled() -> bool:
        return await group_done(engine) and await outputs.at_end()

    try:
        await wait_for(complete, timeout=150, what=f"{total} output records")
        await wait_for(settled, timeout=30, what="the worker to commit every input")
    except AssertionError:
        print(engine.log_tail())
        print("lag:", await group_lag(engine))
        print("changes (LSO, HW):", await stable_offsets(engine, engine.settings.topic_changes))
        raise


async def run_demo(engine: Engine, bootstrap: str) -> Outputs:
    """Publish the demo file, run a worker until it has committed everything; the outputs."""
    s = engine.settings
    await publish(bootstrap, demo_messages(s))
    outputs = Outputs(
        bootstrap, [s.topic_commands, s.topic_transitions, s.topic_audit, s.topic_deadletter]
    )
    async with outputs, running_worker(engine) as worker:
        await finish(engine, outputs, worker)
    return outputs


def assert_parity(engine: Engine, outputs: Outputs) -> None:
    s = engine.settings
    expected, reasons = expected_outputs(s)
    got: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    for record in outputs.records:
        if record.topic in (s.topic_commands, s.topic_transitions, s.topic_audit):
            assert record.key is not None
            service = record.key.decode()
            assert record.partition == partition_for(record.key, s.partitions)
            got[(record.topic, service)].append(record.value)
    assert set(got) == set(expected)
    for key, events in expected.items():
        if got[key] != events:
            ids = [orjson.loads(e)["id"] for e in events]
            got_ids = [orjson.loads(e)["id"] for e in got[key]]
            print("expected:", *events, sep="\n  ")
            print("got:", *got[key], sep="\n  ")
            print("missing:", [i for i in ids if i not in got_ids])
            print("extra:", [i for i in got_ids if i not in ids])
        assert got[key] == events, key
    dead = outputs.of(s.topic_deadletter)
    assert Counter(r.headers["failover-reason"].decode() for r in dead) == reasons
    lines = {raw for _, raw in read_lines(DEMO_EVENTS)}
    for record in dead:
        assert record.value in lines  # the original bytes
        assert record.headers["failover-source-topic"].decode() in engine.inputs


@pytest.mark.slow
async def test_demo_on_kafka_matches_replay(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    # 3 partitions: every routing path (fan-out across partitions, watermarks from several
    # stage-1 partitions) at half the time of 6; tests/test_stream_partitions.py covers 6.
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=3)
    async with engine_topics(engine):
        outputs = await run_demo(engine, kafka_bootstrap)
        assert_parity(engine, outputs)


_event = cloud_event


def _link(ident: str, link: str, time: str = "2019-02-05T00:00:00Z") -> bytes:
    return _event("link.status.v1", ident, time, link,
                  {"status": "up", "latency_ms": 10.0, "loss_pct": 0.0})  # fmt: skip


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_bad_input_is_dead_lettered_and_processing_goes_on(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path, store: str
) -> None:
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=2, FAILOVER_STORE=store)
    s = engine.settings
    n = s.partitions
    links, overrides = s.topic_link_status, s.topic_overrides

    def keyed(topic: str, key: str, value: bytes) -> tuple[str, bytes, bytes, int]:
        return topic, key.encode(), value, partition_for(key, n)

    huge = _link("probe/huge", "backup-4g")[:-1] + b',"pad":"' + b"x" * (2 * 1024 * 1024) + b'"}'
    bad = [
        (keyed(links, "garbage", b"{not json"), "not-json"),
        (
            keyed(
                links,
                "backup-4g",
                _event(
                    "link.status.v1",
                    "probe/x",
                    "2019-02-05T00:00:00Z",
                    "backup-4g",
                    {"status": "sideways"},
                ),
            ),
            "schema",
        ),
        (keyed(links, "no-such-link", _link("probe/unknown", "no-such-link")), "unknown-link"),
        (keyed(links, "backup-4g", huge), "too-large"),
        (
            keyed(links, "backup-4g", _link("probe/mismatch", "telkom-sto-pattimura")),
            "key-mismatch",
        ),
        (keyed(overrides, "ektp", b"[]"), "unknown-type"),
    ]
    override = _event(
        "operator.override.v1",
        "override/ektp/1",
        "2019-02-05T00:00:10Z",
        "ektp",
        {
            "action": "force_manual",
            "actor": "Kepala Dinas",
            "role": "office-head",
            "reason": "test",
        },
    )
    tick = _event("clock.tick.v1", "tick/2019-02-05T00:01:00Z", "2019-02-05T00:01:00Z", None, {})
    ticks = [(t, TICK_KEY.encode(), tick, p) for t in engine.inputs for p in range(n)]
    async with engine_topics(engine):
        sent = [message for message, _ in bad]
        # The override on a partition its service does not hash to: forwarded to the
        # service's (tests/kafka/test_forward.py), not refused.
        misrouted = (overrides, b"ektp", override, (partition_for("ektp", n) + 1) % n)
        await publish(kafka_bootstrap, [*sent, misrouted, *ticks])
        outputs = Outputs(kafka_bootstrap, [s.topic_transitions, s.topic_deadletter])
        async with outputs, running_worker(engine) as worker:
            await await_dead_letters_and_a_transition(engine, worker, outputs, len(bad))
    dead = outputs.of(s.topic_deadletter)
    assert len(dead) == len(bad)
    by_value = {r.value: r for r in dead}
    for (topic, key, value, partition), code in bad:
        record = by_value[value]  # the original bytes, whole (2 MB included)
        assert record.key == key
        assert record.headers["failover-reason"].decode().split(":", 1)[0] == code
        assert record.headers["failover-source-topic"].decode() == topic
        assert int(record.headers["failover-source-partition"]) == partition
        assert int(record.headers["failover-source-offset"]) >= 0
    (transition,) = outputs.of(s.topic_transitions)
    event = orjson.loads(transition.value)
    assert (event["subject"], event["data"]["from"], event["data"]["to"]) == (
        "ektp",
        "online",
        "manual",
    )
    assert event["data"]["cause"] == "override/ektp/1"


LIVE_TOPOLOGY = """
sites:
  office: {name: Test office, timezone: Asia/Jayapura}
links:
  uplink: {provider: telkom}
services:
  letters:
    site: office
    name: {id: Surat, en: Letters}
    requires: [uplink]
    offline: true
policy:
  degrade_after: 1s
  manual_after: 3s
  stale_after: 10m
"""


@pytest.mark.slow
async def test_live_ticker_and_the_examples(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """Wall-clock ticks drive a service to manual after the example probe reports its link
    down; the example consumer prints each command once, and drops them all when the same
    commands are delivered again (another consumer group, same database)."""
    topology = tmp_path / "live.yaml"
    topology.write_text(LIVE_TOPOLOGY)
    engine = engine_env(
        kafka_bootstrap, unique_name, tmp_path, partitions=2, topology=topology,
        FAILOVER_TICK_INTERVAL="0.2",
    )  # fmt: skip
    s = engine.settings
    example_env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "FAILOVER_TOPIC_LINK_STATUS": s.topic_link_status,
        "FAILOVER_TOPIC_COMMANDS": s.topic_commands,
        "CONSUMER_DB": str(tmp_path / "handled.sqlite"),
    }
    async with engine_topics(engine):
        outputs = Outputs(kafka_bootstrap, [s.topic_transitions, s.topic_commands, *engine.inputs])
        async with outputs, running_worker(engine) as worker:

            async def ticking() -> bool:
                assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
                return await stage2_committed(engine)

            # Before the probe speaks, time must already flow through both stages: a reading
            # older than degrade_after at the first tick would skip "degraded" (rightly).
            await wait_for(ticking, timeout=60, what="ticks through both stages")
            probe = subprocess.run(
                [sys.executable, str(ROOT / "examples" / "probe.py"), "uplink", "down"],
                env=example_env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert probe.returncode == 0, probe.stderr

            async def manual() -> bool:
                assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
                await outputs.poll()
                tos = [orjson.loads(r.value)["data"]["to"] for r in outputs.of(s.topic_transitions)]
                return tos[-1:] == ["manual"]

            try:
                await wait_for(manual, timeout=60, what="the service to go manual")
            except AssertionError:
                print(engine.log_tail())
                raise
        transitions = [orjson.loads(r.value) for r in outputs.of(s.topic_transitions)]
        assert [(t["data"]["from"], t["data"]["to"]) for t in transitions] == [
            ("online", "degraded"),
            ("degraded", "manual"),
        ]
        # The ticker publishes to every partition of the three inputs.
        ticked = {(r.topic, r.partition) for r in outputs.records if r.key == TICK_KEY.encode()}
        assert ticked == {(t, p) for t in engine.inputs for p in range(s.partitions)}
        commands = {orjson.loads(r.value)["id"] for r in outputs.of(s.topic_commands)}
        assert commands

        async def consume(group: str, marker: str) -> list[str]:
            process = subprocess.Popen(
                [sys.executable, str(ROOT / "examples" / "consumer.py")],
                env={**example_env, "CONSUMER_GROUP": group, "PYTHONUNBUFFERED": "1"},
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert process.stdout is not None
            lines: list[str] = []
            loop = asyncio.get_running_loop()
            try:
                while sum(marker in line for line in lines) < len(commands):
                    line = await asyncio.wait_for(
                        loop.run_in_executor(None, process.stdout.readline), timeout=30
                    )
                    assert line, "the example consumer exited"
                    lines.append(line)
            finally:
                process.terminate()
                process.wait(timeout=30)
                process.stdout.close()
            return lines

        first = await consume(unique_name("group-a"), "failover.")
        assert len([line for line in first if "duplicate" not in line]) == len(commands)
        again = await consume(unique_name("group-b"), "duplicate dropped")
        assert all("duplicate dropped" in line for line in again)


@pytest.mark.slow
async def test_kill_and_restart_mid_scenario_still_gives_replay_output(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """SIGKILL the worker twice while it works through the demo (its open transactions are
    left hanging, its state is lost); each time a new worker takes over from the committed
    offsets and the changelogs. The committed output is still exactly replay's: nothing
    lost, nothing twice."""
    engine = engine_env(
        kafka_bootstrap, unique_name, tmp_path, partitions=3, FAILOVER_SESSION_TIMEOUT="6"
    )
    s = engine.settings
    total = demo_total(s)
    async with engine_topics(engine):
        await publish(kafka_bootstrap, demo_messages(s))
        topics = [s.topic_commands, s.topic_transitions, s.topic_audit, s.topic_deadletter]
        outputs = Outputs(kafka_bootstrap, topics)
        async with outputs:
            await kill_twice(engine, outputs, total, "output records")
            async with running_worker(engine) as worker:
                await finish(engine, outputs, worker)
        assert_parity(engine, outputs)  # inside: FAILOVER_KEEP_TOPICS keeps them on failure


@pytest.mark.slow
async def test_two_workers_one_killed_the_other_takes_over_with_replay_output(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """Two workers in one consumer group share the partitions; one is SIGKILLed while both
    work through the demo (its open transactions are left hanging). The other takes its
    partitions over, restores their state from the changelogs and handles the rest of the
    demo on them: the committed output is still exactly replay's, nothing lost, nothing
    twice."""
    engine = engine_env(
        kafka_bootstrap, unique_name, tmp_path, partitions=3, FAILOVER_SESSION_TIMEOUT="6"
    )
    s = engine.settings
    total = demo_total(s)
    lines = [raw for _, raw in read_lines(DEMO_EVENTS)]
    quarter, half = len(lines) // 4, len(lines) // 2

    async def publish_lines(part: list[bytes]) -> None:
        await publish(
            kafka_bootstrap, [(t, k, raw, p) for raw in part for t, k, p in route(s, raw)]
        )

    async with engine_topics(engine):
        await publish_lines(lines[:quarter])
        topics = [s.topic_commands, s.topic_transitions, s.topic_audit, s.topic_deadletter]
        outputs = Outputs(kafka_bootstrap, topics)
        async with (
            outputs,
            one_of_two_killed(
                engine,
                outputs,
                total,
                second=lambda: publish_lines(lines[quarter:half]),
                rest=lambda: publish_lines(lines[half:]),
            ) as survivor,
        ):
            await finish(engine, outputs, survivor)
        assert_parity(engine, outputs)  # inside: FAILOVER_KEEP_TOPICS keeps them on failure
