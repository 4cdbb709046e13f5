"""Shared fixtures. Kafka tests use a real broker: ``KAFKA_BOOTSTRAP_SERVERS`` when set,
otherwise the one ``infra/kafka/up`` starts (and this session stops again)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The bootstrap address of a real Kafka broker for this test session."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    started = subprocess.run(
        [str(ROOT / "infra" / "kafka" / "up")], capture_output=True, text=True, check=False
    )
    if started.returncode != 0:
        pytest.fail(f"infra/kafka/up failed:\n{started.stdout}\n{started.stderr}")
    address = started.stdout.strip().splitlines()[-1]
    try:
        yield address
    finally:
        if not os.environ.get("FAILOVER_KEEP_KAFKA"):
            subprocess.run([str(ROOT / "infra" / "kafka" / "down")], check=False)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """``unique_name("input")`` gives a topic or group name no other test run uses."""
    run = uuid.uuid4().hex[:10]
    test = request.node.name.replace("[", "-").replace("]", "")[:40]

    def make(purpose: str) -> str:
        return f"t-{test}-{purpose}-{run}"

    return make
