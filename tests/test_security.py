"""``KafkaSecurity.from_env``: TLS and SASL settings, refused combinations that name their
variable, and a password that never shows (settings, errors, logs)."""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from streams import redact
from streams.config import Settings, SettingsError
from streams.security import KafkaSecurity, SecurityError

PASSWORD = "s3cr3t-Pa55word"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a client certificate signed by it (openssl, as infra/kafka/up makes them)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed (infra/kafka/up --secure needs it too)")
    d = tmp_path_factory.mktemp("pki")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
        "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=engine",
        "-keyout", "client.key", "-out", "client.csr")  # fmt: skip
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", "client.crt")  # fmt: skip
    (d / "client.pem").write_text((d / "client.crt").read_text() + (d / "client.key").read_text())
    run("genpkey", "-algorithm", "RSA", "-aes-256-cbc", "-pass", "pass:x", "-out", "locked.key")
    (d / "not-pem.txt").write_text("hello\n")
    return d


def sasl_ssl(pki: Path, **extra: str) -> dict[str, str]:
    env = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "engine",
        "KAFKA_SASL_PASSWORD": PASSWORD,
        "KAFKA_SSL_CAFILE": str(pki / "ca.crt"),
    }
    env.update(extra)
    return {k: v for k, v in env.items() if v}


def test_plaintext_by_default() -> None:
    s = KafkaSecurity.from_env({})
    assert s == KafkaSecurity()
    assert s.client_options() == {"security_protocol": "PLAINTEXT"}
    assert s.faust_credentials() is None
    assert Settings.from_env({}).security == s


def test_sasl_ssl_with_mutual_tls(pki: Path) -> None:
    env = sasl_ssl(
        pki,
        KAFKA_SASL_MECHANISM="scram-sha-256",
        KAFKA_SSL_CERTFILE=str(pki / "client.crt"),
        KAFKA_SSL_KEYFILE=str(pki / "client.key"),
    )
    s = KafkaSecurity.from_env(env)
    assert (s.protocol, s.mechanism, s.username, s.password) == (
        "SASL_SSL",
        "SCRAM-SHA-256",
        "engine",
        PASSWORD,
    )
    options = s.client_options()
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "engine",
        "sasl_plain_password": PASSWORD,
    }
    credentials = s.faust_credentials()
    from faust.auth import SASLCredentials
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    assert isinstance(credentials, SASLCredentials)
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("engine", PASSWORD)
    assert isinstance(auth["ssl_context"], ssl.SSLContext)


def test_ssl_only_and_sasl_plaintext(pki: Path) -> None:
    tls = KafkaSecurity.from_env(
        {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": str(pki / "client.pem")}
    )
    assert tls.cafile is None  # the system's CAs
    from faust.auth import SSLCredentials
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    credentials = tls.faust_credentials()
    assert isinstance(credentials, SSLCredentials)
    assert credentials_to_aiokafka_auth(credentials)["security_protocol"] == "SSL"
    plain = KafkaSecurity.from_env(
        {
            "KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": "u",
            "KAFKA_SASL_PASSWORD": PASSWORD,
        }
    )
    assert "ssl_context" not in plain.client_options()
    auth = credentials_to_aiokafka_auth(plain.faust_credentials())
    assert (auth["security_protocol"], auth["ssl_context"]) == ("SASL_PLAINTEXT", None)


def test_password_file(pki: Path, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    env = sasl_ssl(pki, KAFKA_SASL_PASSWORD="", KAFKA_SASL_PASSWORD_FILE=str(secret))
    assert KafkaSecurity.from_env(env).password == PASSWORD
    with pytest.raises(SecurityError, match=r"^KAFKA_SASL_PASSWORD_FILE: set together"):
        KafkaSecurity.from_env({**env, "KAFKA_SASL_PASSWORD": PASSWORD})
    secret.write_text("")
    with pytest.raises(SecurityError, match=r"^KAFKA_SASL_PASSWORD_FILE: .* is empty"):
        KafkaSecurity.from_env(env)


@pytest.mark.parametrize(
    ("change", "variable", "problem"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL", "is not one of"),
        ({"KAFKA_SASL_MECHANISM": ""}, "KAFKA_SASL_MECHANISM", "required with SASL_SSL"),
        ({"KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM", "is not one of"),
        ({"KAFKA_SASL_USERNAME": ""}, "KAFKA_SASL_USERNAME", "required with SASL_SSL"),
        ({"KAFKA_SASL_PASSWORD": ""}, "KAFKA_SASL_PASSWORD", "required with SASL_SSL"),
        ({"KAFKA_SASL_PASSWORD_FILE": "/nonexistent"}, "KAFKA_SASL_PASSWORD_FILE", "no such"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL"}, "KAFKA_SASL_MECHANISM", "SSL, which has no SASL"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"},
            "KAFKA_SSL_CAFILE",
            "SASL_PLAINTEXT, which has no TLS",
        ),
        ({"KAFKA_SSL_CAFILE": "/nonexistent"}, "KAFKA_SSL_CAFILE", "no such file"),
        ({"KAFKA_SSL_CAFILE": "{pki}/not-pem.txt"}, "KAFKA_SSL_CAFILE", "no PEM certificate"),
        ({"KAFKA_SSL_KEYFILE": "{pki}/client.key"}, "KAFKA_SSL_KEYFILE", "without"),
        (
            {"KAFKA_SSL_CERTFILE": "{pki}/client.crt", "KAFKA_SSL_KEYFILE": "{pki}/locked.key"},
            "KAFKA_SSL_KEYFILE",
            "not encrypted",
        ),
        ({"KAFKA_SSL_CERTFILE": "{pki}/client.crt"}, "KAFKA_SSL_CERTFILE", "cannot load"),
    ],
)
def test_bad_combinations_name_their_variable(
    pki: Path, change: dict[str, str], variable: str, problem: str
) -> None:
    env = {**sasl_ssl(pki), **{k: v.format(pki=pki) for k, v in change.items()}}
    env = {k: v for k, v in env.items() if v}
    with pytest.raises(SecurityError) as caught:
        KafkaSecurity.from_env(env)
    assert caught.value.variable == variable
    assert problem in caught.value.problem
    assert PASSWORD not in str(caught.value)
    # The worker's settings refuse it the same way.
    with pytest.raises(SettingsError, match=f"^{variable}: "):
        Settings.from_env(env)


def test_the_password_never_shows(pki: Path) -> None:
    settings = Settings.from_env(sasl_ssl(pki))
    assert settings.security.password == PASSWORD
    for text in (str(settings.security), repr(settings.security), repr(settings)):
        assert PASSWORD not in text
    described = settings.describe()
    assert PASSWORD not in str(described)
    assert described["security"] == (
        f"SASL_SSL, SCRAM-SHA-512 as 'engine' (password ***), CA {pki / 'ca.crt'}"
    )


def test_log_masking_covers_every_logger_and_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before, hook = logging.getLogRecordFactory(), sys.excepthook
    try:
        redact.install(env={}, extra=[PASSWORD])  # read from a file: not in the environment
        log = logging.getLogger("aiokafka.some.library")
        # The logger's own level: a command run in-process earlier (failover status quiets
        # aiokafka) must not hide the records this test reads.
        with caplog.at_level(logging.INFO, logger=log.name):
            log.info("connecting with %s", f"password={PASSWORD}")
            try:
                raise RuntimeError(f"auth failed for {PASSWORD}")
            except RuntimeError:
                log.exception("cannot connect")
        text = caplog.text
        assert "connecting with password=***" in text
        assert "auth failed for ***" in text
        assert PASSWORD not in text
    finally:
        logging.setLogRecordFactory(before)
        sys.excepthook = hook
