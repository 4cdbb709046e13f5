"""No secret in any error or log line (streams/redact.py): which names hold secrets, how the
settings show them, and how the worker masks what a library logs or a crash prints."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from streams.config import Settings, SettingsError
from streams.redact import MASK, Redactor, install, is_secret, mask_settings, shown

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "tests" / "data" / "design-topology.yaml"


@pytest.mark.parametrize(
    "name",
    [
        "FAILOVER_FAUST_BROKER_CREDENTIALS",
        "FAILOVER_KAFKA_SASL_PASSWORD",
        "FAILOVER_KAFKA_SASL_USERNAME",
        "FAILOVER_TICK_SECRET",
        "GITHUB_TOKEN",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "AWS_SECRET_ACCESS_KEY",
        "API_KEY",
        "ssl_key",
        "sasl_password",
        "DB_PASSWD",
        "HTTP_AUTHORIZATION",
        "SASL_JAAS_CONFIG",
        "PRIVATE_KEY_PEM",
    ],
)
def test_names_that_hold_secrets(name: str) -> None:
    assert is_secret(name)
    assert shown(name, "hunter22") == MASK


@pytest.mark.parametrize(
    "name",
    [
        "FAILOVER_TOPOLOGY",
        "FAILOVER_FAUST_APP_KEY_SERIALIZER",
        "FAILOVER_FAUST_TABLE_KEY_INDEX_SIZE",
        "KAFKA_BOOTSTRAP_SERVERS",
        "PATH",
        "PWD",
        "FAILOVER_SESSION_TIMEOUT",
        "topic_deadletter",
        "faust_env",
    ],
)
def test_names_that_do_not(name: str) -> None:
    assert not is_secret(name)
    assert shown(name, "x") == "'x'"


def test_the_redactor_masks_values_their_parts_and_url_passwords() -> None:
    redact = Redactor(["user:s3cr3t-pass", "abc", "Bearer tok-3456"])
    text = (
        "Unknown credentials type <class 'str'>: user:s3cr3t-pass; again s3cr3t-pass; "
        "Authorization=Bearer tok-3456 and tok-3456; short abc stays; "
        "endpoint https://admin:pa55word@collector:4318/v1 and kafka://bob:x@b:9092"
    )
    clean = redact(text)
    for secret in ("s3cr3t-pass", "tok-3456", "pa55word", "bob:x@"):
        assert secret not in clean
    assert "short abc stays" in clean  # shorter than MIN_MASKED: only never shown
    assert "https://admin:***@collector:4318/v1" in clean


def test_a_secret_setting_is_refused_without_showing_it() -> None:
    """faust takes BROKER_CREDENTIALS only as an object: as text it crashed the worker with
    the password in the traceback."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"FAILOVER_FAUST_BROKER_CREDENTIALS": "user:s3cr3t-pass"})
    assert caught.value.variable == "FAILOVER_FAUST_BROKER_CREDENTIALS"
    assert "s3cr3t" not in str(caught.value)
    assert "not shown" in str(caught.value)


def test_the_start_up_line_masks_every_secret_setting() -> None:
    """A setting whose name says it holds a secret (as a Kafka security password will) is
    ``***`` in ``describe``, and so is a faust setting of such a name."""

    @dataclasses.dataclass(frozen=True, slots=True)
    class WithSecrets(Settings):
        sasl_password: str = "s3cr3t-pass"

    settings = WithSecrets(faust_env=(("BROKER_CREDENTIALS", "user:s3cr3t-cred"),))
    described = settings.describe()
    assert described["sasl_password"] == MASK
    assert "s3cr3t" not in repr(described)
    assert described["app_id"] == "failover-engine"
    assert mask_settings({"API_KEY": "k", "PORT": "1"}) == {"API_KEY": MASK, "PORT": "1"}


def test_installed_logging_masks_messages_arguments_and_tracebacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {"FAILOVER_KAFKA_SASL_PASSWORD": "s3cr3t-pass", "HOME": "/root"}
    handler = logging.StreamHandler(sys.stderr)
    logger = logging.getLogger("tests.redact")
    logger.addHandler(handler)
    logger.propagate = False
    before = logging.getLogRecordFactory()
    try:
        install(env)
        install(env)  # idempotent: one layer, not two
        logger.warning("connecting with %s", "s3cr3t-pass")
        logger.warning("a literal s3cr3t-pass and 100% of %(x)s", {"x": "s3cr3t-pass"})
        try:
            raise ValueError("bad credentials 'user:s3cr3t-pass'")
        except ValueError:
            logger.exception("start failed")
    finally:
        logging.setLogRecordFactory(before)
        sys.excepthook = sys.__excepthook__
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert "s3cr3t" not in err
    assert err.count(MASK) >= 4
    assert "connecting with ***" in err
    assert "ValueError: bad credentials 'user:***'" in err


def _failover(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = "import sys; from streams.cli import main; sys.argv[0] = 'failover'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=ROOT,
        check=False,
        timeout=120,
    )


def test_the_worker_command_never_prints_a_secret(tmp_path: Path) -> None:
    """The error of a secret setting, and the traceback of a crash inside faust, with the
    secret's value in the exception: both reach stderr masked."""
    base = {
        "FAILOVER_TOPOLOGY": str(TOPOLOGY),
        "FAILOVER_DATA_DIR": str(tmp_path),
        "FAILOVER_UNSIGNED_TICKS": "accept",  # past the tick key check, to faust's own
    }
    result = _failover(
        "worker", env={**base, "FAILOVER_FAUST_BROKER_CREDENTIALS": "user:s3cr3t-pass"}
    )
    assert result.returncode == 2
    assert "FAILOVER_FAUST_BROKER_CREDENTIALS" in result.stderr
    assert "s3cr3t" not in result.stdout + result.stderr

    # faust refuses this linger with the value in its exception: a crash at start-up. Here
    # that value is also a secret's, which is what the traceback must not show.
    result = _failover(
        "worker",
        env={**base, "FAILOVER_FAUST_PRODUCER_LINGER": "s3cr3t7", "APP_TOKEN": "s3cr3t7"},
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "PRODUCER_LINGER" in result.stderr or "float" in result.stderr
    assert "s3cr3t" not in result.stdout + result.stderr
