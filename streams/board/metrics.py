"""Prometheus metrics of the board, computed from its read model at each scrape (a registry of
the board's own and a custom collector: no global state)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from streams.board.model import Board
from streams.board.reader import Lag

__all__ = ["METRICS", "BoardCollector", "registry"]

#: Every metric name the board exports (alert rules and dashboards may use only these).
METRICS = (
    "failover_board_services",
    "failover_board_open_incidents",
    "failover_board_held_queues",
    "failover_board_open_paper_records",
    "failover_board_oldest_open_incident_age_seconds",
    "failover_board_newest_event_timestamp_seconds",
    "failover_board_heard_from_kafka_timestamp_seconds",
    "failover_board_ready",
    "failover_board_records_skipped",
    "failover_engine_consumer_lag",
    "failover_engine_consumer_lag_checked_timestamp_seconds",
)


class BoardCollector(Collector):
    def __init__(
        self, board: Board, lag: Callable[[], Lag | None], ready: Callable[[], bool]
    ) -> None:
        self.board = board
        self.lag = lag
        self.ready = ready

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        board = self.board
        services = GaugeMetricFamily(
            "failover_board_services", "Services per site and state.", labels=["site", "state"]
        )
        for site, state, count in board.counts():
            services.add_metric([site, state], count)
        yield services
        incidents = GaugeMetricFamily(
            "failover_board_open_incidents",
            "Services with an open incident, per site.",
            labels=["site"],
        )
        held = GaugeMetricFamily(
            "failover_board_held_queues",
            "Queues of online-only services held, per site.",
            labels=["site"],
        )
        paper = GaugeMetricFamily(
            "failover_board_open_paper_records",
            "Paper records not yet reconciled, per site.",
            labels=["site"],
        )
        per_site: dict[str, list[int]] = {site: [0, 0, 0] for site in board.sites()}
        for row in board.services.values():
            tally = per_site.setdefault(row.site, [0, 0, 0])
            tally[0] += row.incident is not None
            tally[1] += row.held
            tally[2] += row.open
        for site, (open_incidents, held_queues, records) in sorted(per_site.items()):
            incidents.add_metric([site], open_incidents)
            held.add_metric([site], held_queues)
            paper.add_metric([site], records)
        yield incidents
        yield held
        yield paper
        age = board.oldest_open_age()
        if age is not None:
            yield GaugeMetricFamily(
                "failover_board_oldest_open_incident_age_seconds",
                "Age of the oldest open incident, measured to the newest event time the board "
                "has seen (event time, not the wall clock); 0 when none is open.",
                value=age,
            )
        newest = board.newest_event_ts()
        if newest is not None:
            yield GaugeMetricFamily(
                "failover_board_newest_event_timestamp_seconds",
                "Newest event time (CloudEvent time) of any record read, Unix seconds.",
                value=newest,
            )
        if board.heard_from_kafka is not None:
            yield GaugeMetricFamily(
                "failover_board_heard_from_kafka_timestamp_seconds",
                "Wall-clock time the broker last sent a record or answered, Unix seconds.",
                value=board.heard_from_kafka.timestamp(),
            )
        yield GaugeMetricFamily(
            "failover_board_ready",
            "1 once the board has read the state topic up to its end offsets at start.",
            value=1 if self.ready() else 0,
        )
        skipped = CounterMetricFamily(
            "failover_board_records_skipped",
            "Records not shown because they do not follow the contract, by topic and reason.",
            labels=["topic", "reason"],
        )
        for (topic, reason), count in sorted(board.skipped.items()):
            skipped.add_metric([topic, reason], count)
        yield skipped
        lag = self.lag()
        if lag is not None and lag.checked is not None:
            family = GaugeMetricFamily(
                "failover_engine_consumer_lag",
                "Records the engine's consumer group has not committed yet, per topic, read "
                "from the broker's committed offsets (grows while every worker is down).",
                labels=["group", "topic"],
            )
            for topic, value in sorted(lag.by_topic.items()):
                family.add_metric([lag.group, topic], value)
            yield family
            yield GaugeMetricFamily(
                "failover_engine_consumer_lag_checked_timestamp_seconds",
                "Wall-clock time the engine's lag was last read from the broker, Unix seconds.",
                value=lag.checked.timestamp(),
            )


def registry(collector: BoardCollector) -> CollectorRegistry:
    own = CollectorRegistry(auto_describe=False)
    own.register(collector)
    return own
