"""``Settings.from_env``: every setting from the environment, and errors that name it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streams.config import Settings, SettingsError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.bootstrap_servers == ("127.0.0.1:9092",)
    assert s.topology is None
    assert s.app_id == "failover-engine"
    assert (s.topic_link_status, s.topic_overrides, s.topic_feedback) == (
        "link-status",
        "operator-overrides",
        "service-feedback",
    )
    assert (s.topic_commands, s.topic_transitions, s.topic_deadletter, s.topic_changes) == (
        "failover-commands",
        "service-transitions",
        "failover-deadletter",
        "failover-engine-link-changes",
    )
    assert s.topic_state == "service-state"
    assert (s.partitions, s.replication, s.transitions_retention_days) == (6, None, 90)
    assert (s.store, s.data_dir) == ("rocksdb://", Path("failover-data"))
    assert s.processing_guarantee == "exactly_once"
    assert s.exactly_once
    assert (s.tick_interval, s.commit_interval, s.session_timeout) == (1.0, 0.5, 10.0)
    assert (s.fetch_max_wait, s.transaction_timeout) == (0.02, 300.0)
    assert (s.max_event_bytes, s.web_port, s.log_level) == (65536, 0, "info")
    assert s == Settings()


def test_every_variable_is_read() -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "a:1, b:2",
        "FAILOVER_TOPOLOGY": "/etc/failover/topology.yaml",
        "FAILOVER_APP_ID": "ambon-1",
        "FAILOVER_TOPIC_LINK_STATUS": "in.links",
        "FAILOVER_TOPIC_OVERRIDES": "in.overrides",
        "FAILOVER_TOPIC_FEEDBACK": "in.feedback",
        "FAILOVER_TOPIC_COMMANDS": "out.commands",
        "FAILOVER_TOPIC_TRANSITIONS": "out.transitions",
        "FAILOVER_TOPIC_DEADLETTER": "out.dead",
        "FAILOVER_TOPIC_CHANGES": "internal.changes",
        "FAILOVER_TOPIC_STATE": "out.state",
        "FAILOVER_PARTITIONS": "12",
        "FAILOVER_REPLICATION": "3",
        "FAILOVER_STORE": "memory://",
        "FAILOVER_DATA_DIR": "/var/lib/failover",
        "FAILOVER_PROCESSING_GUARANTEE": "AT_LEAST_ONCE",
        "FAILOVER_TICK_INTERVAL": "0",
        "FAILOVER_COMMIT_INTERVAL": "0.1",
        "FAILOVER_FAUST_PRODUCER_LINGER": "0.005",
        "FAILOVER_SESSION_TIMEOUT": "45",
        "FAILOVER_FETCH_MAX_WAIT": "0.25",
        "FAILOVER_TRANSACTION_TIMEOUT": "600",
        "FAILOVER_MAX_EVENT_BYTES": "1000",
        "FAILOVER_WEB_PORT": "6066",
        "FAILOVER_LOG_LEVEL": "DEBUG",
    }
    s = Settings.from_env(env)
    assert s.bootstrap_servers == ("a:1", "b:2")
    assert s.broker_urls == ["kafka://a:1", "kafka://b:2"]
    assert s.topology == Path("/etc/failover/topology.yaml")
    assert s.app_id == "ambon-1"
    assert [s.topic_link_status, s.topic_overrides, s.topic_feedback, s.topic_commands,
            s.topic_transitions, s.topic_deadletter, s.topic_changes] == [
        "in.links", "in.overrides", "in.feedback", "out.commands", "out.transitions",
        "out.dead", "internal.changes",
    ]  # fmt: skip
    assert s.topic_state == "out.state"
    assert (s.partitions, s.replication, s.store) == (12, 3, "memory://")
    assert s.data_dir == Path("/var/lib/failover")
    assert s.processing_guarantee == "at_least_once"
    assert not s.exactly_once
    assert (s.tick_interval, s.commit_interval, s.max_event_bytes) == (0.0, 0.1, 1000)
    assert s.session_timeout == 45.0
    assert (s.fetch_max_wait, s.transaction_timeout) == (0.25, 600.0)
    assert (s.web_port, s.log_level) == (6066, "debug")
    assert s.faust_env == (("PRODUCER_LINGER", "0.005"),)


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("KAFKA_BOOTSTRAP_SERVERS", "localhost", "is not host:port"),
        ("FAILOVER_APP_ID", "has space", "use 1 to 200"),
        ("FAILOVER_TOPIC_COMMANDS", "bad/name", "is not a Kafka topic name"),
        ("FAILOVER_TOPIC_COMMANDS", "link-status", "already the topic of"),
        ("FAILOVER_PARTITIONS", "six", "is not a whole number"),
        ("FAILOVER_PARTITIONS", "0", "out of range"),
        ("FAILOVER_REPLICATION", "-1", "out of range"),
        ("FAILOVER_STORE", "redis://", "use memory:// or rocksdb://"),
        ("FAILOVER_PROCESSING_GUARANTEE", "maybe_once", "is not one of"),
        ("FAILOVER_TICK_INTERVAL", "-1", "must be 0 or more"),
        ("FAILOVER_TICK_INTERVAL", "soon", "is not a number"),
        ("FAILOVER_TICK_INTERVAL", "nan", "must be 0 or more"),
        ("FAILOVER_COMMIT_INTERVAL", "0", "must be more than 0"),
        ("FAILOVER_SESSION_TIMEOUT", "1", "out of range [6, 1800]"),
        ("FAILOVER_FETCH_MAX_WAIT", "-0.5", "must be 0 or more"),
        ("FAILOVER_TRANSACTION_TIMEOUT", "0", "must be more than 0"),
        ("FAILOVER_MAX_EVENT_BYTES", "4194304", "out of range"),
        ("FAILOVER_WEB_PORT", "70000", "out of range"),
        ("FAILOVER_LOG_LEVEL", "loud", "is not one of"),
        ("FAILOVER_FAUST_producer_linger", "0.005", "name a faust setting"),
    ],
)
def test_errors_name_the_variable(variable: str, value: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")
    assert problem in str(caught.value)


def test_the_worker_needs_a_topology(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="FAILOVER_TOPOLOGY: not set"):
        Settings.from_env({}).topology_path()
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(SettingsError, match="no such file"):
        Settings.from_env({"FAILOVER_TOPOLOGY": str(missing)}).topology_path()


def _failover(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    code = "import sys; from streams.cli import main; sys.argv[0] = 'failover'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
        timeout=60,
    )


def test_worker_command_reports_bad_settings(tmp_path: Path) -> None:
    result = _failover("worker", env={"PATH": "/usr/bin:/bin", "FAILOVER_PARTITIONS": "x"})
    assert result.returncode == 2
    assert "FAILOVER_PARTITIONS" in result.stderr
    topology = tmp_path / "topology.yaml"
    topology.write_text((ROOT / "tests" / "data" / "design-topology.yaml").read_text())
    env = {"PATH": "/usr/bin:/bin", "FAILOVER_TOPOLOGY": str(topology)}
    result = _failover("worker", env={**env, "FAILOVER_FAUST_PROCESING_GUARANTEE": "x"})
    assert result.returncode == 2
    assert "FAILOVER_FAUST_PROCESING_GUARANTEE: faust reads no setting" in result.stderr
    result = _failover("worker", env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "FAILOVER_TOPOLOGY" in result.stderr


def test_replay_and_demo_do_not_import_faust() -> None:
    code = (
        "import sys, streams.cli, streams.config;"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('faust', 'mode', 'aiokafka')]"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False, timeout=60)
    assert result.returncode == 0


def test_one_prefix_for_every_topic_and_the_app_id() -> None:
    """FAILOVER_TOPIC_PREFIX: every topic the engine owns, and the app id (so its internal
    topic, changelogs, group and transactional ids), start with it."""
    s = Settings.from_env({"FAILOVER_TOPIC_PREFIX": "acme.", "FAILOVER_TOPIC_COMMANDS": "cmds"})
    assert s.topic_prefix == "acme."
    assert s.app_id == "acme.failover-engine"
    assert s.topic_changes == "acme.failover-engine-link-changes"
    assert (s.topic_link_status, s.topic_commands, s.topic_deadletter) == (
        "acme.link-status",
        "acme.cmds",
        "acme.failover-deadletter",
    )
    from streams.topics import topic_specs

    assert all(spec.name.startswith("acme.") for spec in topic_specs(s))
    given = Settings.from_env({"FAILOVER_TOPIC_PREFIX": "acme.", "FAILOVER_APP_ID": "acme.b"})
    assert given.topic_changes == "acme.b-link-changes"


def test_the_internal_topic_carries_the_app_id() -> None:
    a = Settings.from_env({"FAILOVER_APP_ID": "north"})
    b = Settings.from_env({"FAILOVER_APP_ID": "south"})
    assert (a.topic_changes, b.topic_changes) == ("north-link-changes", "south-link-changes")
    assert Settings.from_env({"FAILOVER_TOPIC_CHANGES": "x"}).topic_changes == "x"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"FAILOVER_TOPIC_PREFIX": "a b"}, "FAILOVER_TOPIC_PREFIX"),
        ({"FAILOVER_TOPIC_PREFIX": "p" * 101}, "FAILOVER_TOPIC_PREFIX"),
        ({"FAILOVER_TOPIC_PREFIX": "acme.", "FAILOVER_APP_ID": "other"}, "FAILOVER_APP_ID"),
    ],
)
def test_a_bad_prefix_is_refused(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable


def test_the_transitions_topic_has_an_explicit_retention() -> None:
    from streams.topics import topic_specs

    def retention(env: dict[str, str]) -> str:
        s = Settings.from_env(env)
        (spec,) = [t for t in topic_specs(s) if t.name == s.topic_transitions]
        return dict(spec.config)["retention.ms"]

    assert retention({}) == str(90 * 24 * 3600 * 1000)
    assert retention({"FAILOVER_TRANSITIONS_RETENTION_DAYS": "400"}) == str(400 * 86_400_000)
    assert retention({"FAILOVER_TRANSITIONS_RETENTION_DAYS": "0"}) == "-1"  # for ever
    with pytest.raises(SettingsError, match=r"^FAILOVER_TRANSITIONS_RETENTION_DAYS: "):
        Settings.from_env({"FAILOVER_TRANSITIONS_RETENTION_DAYS": "-1"})


def test_tracing_knows_the_default_topic_names() -> None:
    """streams/tracing/kafka.py tells internal hops from outputs by the worker's names; the
    defaults are written once (Settings), the outputs' being the core's logical names."""
    from streams.tracing import KafkaTopics
    from workflows.records import AUDIT, COMMANDS, DEADLETTER, STATE, TRANSITIONS

    s = Settings()
    assert KafkaTopics.of(s) == KafkaTopics.of(Settings.from_env({}))
    outputs = (s.topic_commands, s.topic_transitions, s.topic_state, s.topic_audit)
    assert outputs == (COMMANDS, TRANSITIONS, STATE, AUDIT)
    assert s.topic_deadletter == DEADLETTER


def test_every_input_type_has_its_input_topics() -> None:
    """One table says where each input type is published (docs/contracts.md)."""
    from streams.config import INPUT_TOPIC_FIELDS
    from workflows.inputs import INPUT_TYPES

    assert set(INPUT_TOPIC_FIELDS) | {"clock.tick.v1"} == set(INPUT_TYPES)
    s = Settings.from_env({"FAILOVER_TOPIC_PREFIX": "p-"})
    assert s.input_topics("link.status.v1") == ("p-link-status",)
    assert s.input_topics("operator.override.v1") == ("p-operator-overrides",)
    assert s.input_topics("manual.record.v1") == s.input_topics("reconcile.completed.v1")
    assert s.input_topics("manual.record.v1") == ("p-service-feedback",)
    assert s.input_topics("clock.tick.v1") == (
        "p-link-status", "p-operator-overrides", "p-service-feedback",
    )  # fmt: skip
    assert s.input_topics("no.such.type") == ("p-link-status",)  # dead-lettered there


SECRET = "k" * 32


def test_the_tick_key_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    s = Settings.from_env({"FAILOVER_TICK_SECRET": f"  {SECRET}\n"})
    assert s.tick_key() == SECRET.encode()
    assert not s.unsigned_ticks
    path = tmp_path / "tick.key"
    path.write_bytes(SECRET.encode() + b"\n")
    assert Settings.from_env({"FAILOVER_TICK_SECRET_FILE": str(path)}).tick_key() == b"k" * 32
    unsigned = Settings.from_env({"FAILOVER_UNSIGNED_TICKS": "accept"})
    assert unsigned.unsigned_ticks
    assert unsigned.tick_key() is None


def test_no_tick_key_refuses_to_run() -> None:
    """Deny by default: with neither a key nor the explicit development setting, the worker
    cannot get a tick key (build_app and ``failover worker`` ask for it first)."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({}).tick_key()
    assert caught.value.variable == "FAILOVER_TICK_SECRET"
    assert "FAILOVER_UNSIGNED_TICKS=accept" in str(caught.value)


@pytest.mark.parametrize(
    ("env", "variable", "problem"),
    [
        ({"FAILOVER_TICK_SECRET": "short-secret"}, "FAILOVER_TICK_SECRET", "12 bytes"),
        ({"FAILOVER_TICK_SECRET_FILE": "/nonexistent/tick.key"}, "FAILOVER_TICK_SECRET_FILE",
         "/nonexistent/tick.key"),
        ({"FAILOVER_TICK_SECRET": SECRET, "FAILOVER_TICK_SECRET_FILE": "/x"},
         "FAILOVER_TICK_SECRET_FILE", "not both"),
        ({"FAILOVER_TICK_SECRET": SECRET, "FAILOVER_UNSIGNED_TICKS": "accept"},
         "FAILOVER_UNSIGNED_TICKS", "choose one"),
        ({"FAILOVER_UNSIGNED_TICKS": "yes"}, "FAILOVER_UNSIGNED_TICKS", "refuse, accept"),
    ],
)  # fmt: skip
def test_bad_tick_key_settings_name_the_variable(
    env: dict[str, str], variable: str, problem: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable
    assert problem in str(caught.value)


def test_the_tick_key_is_never_shown() -> None:
    secret = "s3cr3t-" + "x" * 40
    s = Settings.from_env({"FAILOVER_TICK_SECRET": secret})
    shown = " ".join([repr(s), str(s), str(s.describe()), repr(s.tick_secret)])
    assert "s3cr3t" not in shown
    assert s.describe()["tick_secret"] == "***"  # masked by name, whatever its type
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"FAILOVER_TICK_SECRET": "s3cr3t"})
    assert "s3cr3t" not in str(caught.value)


def test_worker_command_refuses_to_start_without_a_tick_key(tmp_path: Path) -> None:
    topology = tmp_path / "topology.yaml"
    topology.write_text((ROOT / "tests" / "data" / "design-topology.yaml").read_text())
    env = {"PATH": "/usr/bin:/bin", "FAILOVER_TOPOLOGY": str(topology)}
    result = _failover("worker", env=env)
    assert result.returncode == 2
    assert "FAILOVER_TICK_SECRET: not set" in result.stderr
