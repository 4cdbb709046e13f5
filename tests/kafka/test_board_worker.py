"""End to end: ``failover worker`` runs the Ambon demo on a real broker and the board follows
what the engine writes to ``service-state`` (and its transitions and commands): the manual
phase with held queues and paper records, then the end where every service is back online,
the board's answer equal to the last record ``failover replay --state`` writes per service;
the worker group's lag read from the broker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.board.reader import Topics
from tests.kafka.boardtools import running_board
from tests.kafka.kafkatools import wait_for
from tests.kafka.workers import (
    DEMO_EVENTS,
    DEMO_TOPOLOGY,
    engine_env,
    engine_topics,
    publish,
    route,
    running_worker,
)
from workflows.records import STATE, Emitted
from workflows.replay import read_lines, replay
from workflows.topology import Topology

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio, pytest.mark.slow]

#: 11:00 WIT on 5 February: every service of Disdukcapil is manual, paper records are open.
CUTOFF = b'"time":"2019-02-05T02:00:00Z"'


def last_states() -> dict[str, dict[str, object]]:
    """The data of the last state record per service that ``failover replay --state`` writes
    for the whole demo."""
    topology = Topology.load(DEMO_TOPOLOGY)
    last: dict[str, dict[str, object]] = {}
    for record in replay(topology, read_lines(DEMO_EVENTS), "demo", state=True):
        if isinstance(record, Emitted) and record.topic == STATE:
            last[record.key] = record.event["data"]
    return last


async def test_board_follows_the_worker_through_the_demo(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path)
    s = engine.settings
    lines = [raw for _, raw in read_lines(DEMO_EVENTS)]
    split = next(
        n for n, raw in enumerate(lines) if raw[raw.index(b'"time":"') :][: len(CUTOFF)] >= CUTOFF
    )
    topics = Topics(s.topic_state, s.topic_transitions, s.topic_commands)

    def messages(part: list[bytes]) -> list[tuple[str, bytes | None, bytes, int | None]]:
        return [(t, key, raw, p) for raw in part for t, key, p in route(s, raw)]

    async with (
        engine_topics(engine),
        running_worker(engine) as worker,
        running_board(kafka_bootstrap, topics, engine_group=s.app_id) as board,
    ):
        await board.wait_ready()
        await publish(kafka_bootstrap, messages(lines[:split]))

        async def manual_phase() -> bool:
            assert worker.poll() is None, engine.log_tail()
            _, body = await board.get("/api/services?not_online=1")
            shown = {x["service"]: x for x in body["services"]}
            return (
                {"ektp", "akta-lahir", "legalisasi", "surat-pindah"} <= set(shown)
                and all(x["state"] == "manual" for x in shown.values())
                and shown["ektp"]["queue"]["held"] is True
                and shown["legalisasi"]["manual"]["open"] > 0
            )

        await wait_for(manual_phase, 120, "the manual phase on the board")
        _, page = await board.get("/?site=disdukcapil-ambon")
        assert "✎" in page
        assert "held" in page

        await publish(kafka_bootstrap, messages(lines[split:]))
        expected = sorted(last_states().values(), key=lambda d: (str(d["site"]), str(d["service"])))

        async def the_end() -> bool:
            assert worker.poll() is None, engine.log_tail()
            _, body = await board.get("/api/services")
            return bool(body["services"] == expected)

        await wait_for(the_end, 180, "the board to show replay --state's last records")
        assert {x["state"] for x in expected} == {"online"}
        status, incident = await board.get("/api/incidents/ektp%4020190204T231200Z")
        assert status == 200
        assert incident["open"] is False
        summaries = [e["summary"] for e in incident["events"]]
        assert "online → degraded" in summaries
        assert "degraded → manual" in summaries
        assert "restored → online" in summaries
        assert any(n["audience"] == "public" for n in incident["notices"])

        async def no_lag() -> bool:
            """The inputs committed to their end; the changes topic (written in
            transactions) to its last record: what is left are commit markers."""
            _, text = await board.get("/metrics")
            lag = {
                family.samples[0].labels["topic"]: sample.value
                for family in text_string_to_metric_families(text)
                if family.name == "failover_engine_consumer_lag"
                for sample in family.samples
                if sample.labels["group"] == s.app_id
            }
            lag = {
                sample.labels["topic"]: sample.value
                for family in text_string_to_metric_families(text)
                if family.name == "failover_engine_consumer_lag"
                for sample in family.samples
            }
            inputs = (s.topic_link_status, s.topic_overrides, s.topic_feedback)
            return (
                all(lag.get(t) == 0 for t in inputs if t in lag)
                and s.topic_link_status in lag
                and lag.get(s.topic_changes, 0) < 6 * s.partitions
            )

        await wait_for(no_lag, 60, "the engine's input lag to reach 0 on /metrics")
