"""No secret in the worker's log: ``failover worker`` on the real broker, started with secrets
in its environment (telemetry headers, a URL with a password, Kafka-security-like variables),
logging at debug; its whole log, start-up line of settings included, holds none of them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.kafka.kafkatools import wait_for
from tests.kafka.workers import engine_env, engine_topics, running_worker

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]

SECRETS = {
    "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s3cr3t-otlp-header",
    # A dead collector: the exporter retries, and logs, with this endpoint in hand.
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://user:s3cr3t-url-pass@127.0.0.1:9",
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_METRIC_EXPORT_INTERVAL": "500",
    "FAILOVER_KAFKA_SASL_PASSWORD": "s3cr3t-sasl-pass",
    "FAILOVER_TICK_SECRET": "s3cr3t-tick-key-" + "k" * 32,  # a key long enough to be used
}


async def test_the_worker_log_holds_no_secret(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    engine = engine_env(
        kafka_bootstrap, unique_name, tmp_path, FAILOVER_LOG_LEVEL="debug", **SECRETS
    )
    log = engine.logs / "worker-0.log"

    async def started() -> bool:
        text = log.read_text(errors="replace") if log.exists() else ""
        # The settings line, and the exporter's first attempts at the dead collector, are in.
        return "failover worker settings" in text and "Starting new HTTP connection" in text

    async with engine_topics(engine), running_worker(engine):
        await wait_for(started, timeout=60, what="the worker's start-up log")
    text = log.read_text(errors="replace")
    assert "failover worker settings" in text
    assert "s3cr3t" not in text, [line for line in text.splitlines() if "s3cr3t" in line][:3]
