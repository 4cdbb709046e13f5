"""Shared fixtures. Kafka tests use a real broker: ``KAFKA_BOOTSTRAP_SERVERS`` when set,
otherwise the one ``infra/kafka/up`` starts (and this session stops again)."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent

# Property tests explore new examples on every run of ``./dev test``. CI's gate runs with
# ``FAILOVER_HYPOTHESIS_PROFILE=ci``: the same examples every time (seeded from each test), so
# a verdict depends on the change, not on the draw; what a developer's run finds is fixed in
# code and kept as an explicit test.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("FAILOVER_HYPOTHESIS_PROFILE", "default"))


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


def _free_port(taken: int | None = None) -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (as .ci/run picks them)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port != taken:
            return port


@dataclass(frozen=True)
class PrivateKafka:
    """A broker of one test's own (its own data dir and ports): the test may stop it and
    start it again without disturbing the session's broker and the tests that use it."""

    data_dir: Path
    port: int
    controller_port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self, script: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "KAFKA_DATA_DIR": str(self.data_dir),
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
        }
        return subprocess.run(
            [str(ROOT / "infra" / "kafka" / script), *args],
            env=env, capture_output=True, text=True, check=False, timeout=180,
        )  # fmt: skip

    def up(self) -> None:
        """Start the broker (again: same data dir and ports, so topics and offsets stay)."""
        started = self._run("up")
        if started.returncode != 0:
            pytest.fail(f"infra/kafka/up failed:\n{started.stdout}\n{started.stderr}")
        assert started.stdout.strip().splitlines()[-1] == self.address

    def down(self, *, wipe: bool = False) -> None:
        """Stop the broker (SIGTERM, as an operator would); ``wipe`` also deletes its data."""
        stopped = self._run("down", *(["--wipe"] if wipe else []))
        if stopped.returncode != 0:
            pytest.fail(f"infra/kafka/down failed:\n{stopped.stdout}\n{stopped.stderr}")

    def server_log(self) -> Path:
        return self.data_dir / "logs" / "server.log"


@pytest.fixture
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateKafka]:
    """A running broker of this test's own on free ports, stopped and wiped afterwards.

    Call its ``down()`` and ``up()`` in a thread (``asyncio.to_thread``) from an async test:
    each takes seconds, and the test's own Kafka clients must keep running meanwhile."""
    port = _free_port()
    broker = PrivateKafka(tmp_path_factory.mktemp("kafka"), port, _free_port(taken=port))
    try:
        broker.up()
        yield broker
    finally:
        broker.down(wipe=True)


@dataclass(frozen=True)
class SecureKafka:
    """A broker started by ``infra/kafka/up --secure``: SASL_SSL only, deny by default. The
    ``*_env`` are the ``KAFKA_*`` client variables of its ``engine`` and ``probe`` users."""

    address: str
    data_dir: Path
    engine_env: dict[str, str]
    probe_env: dict[str, str]


def _env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """The secured broker of this session: the one whose data dir ``FAILOVER_SECURE_KAFKA_DIR``
    names (.ci/run starts one), otherwise one of the session's own on free ports, stopped and
    wiped afterwards."""
    given = os.environ.get("FAILOVER_SECURE_KAFKA_DIR")
    if given:
        data_dir = Path(given)
        engine = _env_file(data_dir / "client.env")
        yield SecureKafka(
            engine["KAFKA_BOOTSTRAP_SERVERS"], data_dir, engine, _env_file(data_dir / "probe.env")
        )
        return
    port = _free_port()
    data_dir = tmp_path_factory.mktemp("secure-kafka")
    env = {
        **os.environ,
        "KAFKA_DATA_DIR": str(data_dir),
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(_free_port(taken=port)),
    }

    def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ROOT / "infra" / "kafka" / script), *args],
            env=env, capture_output=True, text=True, check=False, timeout=240,
        )  # fmt: skip

    started = run("up", "--secure")
    try:
        if started.returncode != 0:
            pytest.fail(f"infra/kafka/up --secure failed:\n{started.stdout}\n{started.stderr}")
        engine = _env_file(data_dir / "client.env")
        yield SecureKafka(
            started.stdout.strip().splitlines()[-1],
            data_dir,
            engine,
            _env_file(data_dir / "probe.env"),
        )
    finally:
        run("down", "--wipe")


@pytest.fixture
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests decide the telemetry configuration; the ``OTEL_*`` of the environment they run
    in does not."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
