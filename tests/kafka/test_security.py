"""The engine on a secured broker (``infra/kafka/up --secure``: SASL_SSL with SCRAM, TLS,
ACLs that deny what they do not allow), and the strangers that broker turns away.

The rest of the Kafka suite runs against the secured broker too when its client settings are
in the environment: .ci/run runs the parity, SIGKILL and examples tests that way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from streams.security import VARIABLES, KafkaSecurity
from tests.conftest import SecureKafka
from tests.kafka.test_engine import assert_parity, demo_messages, finish
from tests.kafka.workers import Outputs, engine_env, engine_topics, publish, running_worker

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]

#: A topic the probe user may write (the only one), and one it may not.
PROBE_TOPIC = "link-status"
FORBIDDEN_TOPIC = "operator-overrides"


@pytest.fixture
def as_engine(secure_kafka: SecureKafka, monkeypatch: pytest.MonkeyPatch) -> None:
    """This test's clients and workers connect to the secured broker as its ``engine``
    user, whatever broker the session's environment names."""
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    for variable, value in secure_kafka.engine_env.items():
        monkeypatch.setenv(variable, value)


async def refused(address: str, what: str, **options: Any) -> None:
    """A producer with ``options`` cannot even start: the broker closes its connections."""
    producer = AIOKafkaProducer(bootstrap_servers=address, request_timeout_ms=5000, **options)
    try:
        await producer.start()
    except KafkaConnectionError:
        return
    else:
        pytest.fail(f"the broker let a client with {what} in")
    finally:
        await producer.stop()


async def test_strangers_are_refused_while_the_engine_works(
    secure_kafka: SecureKafka,
    as_engine: None,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While a worker (user ``engine``) works through the demo, a client without credentials,
    one with a wrong password, and the ``probe`` user writing to the overrides topic are
    refused by the broker; the probe may write its readings. The worker's output is still
    exactly replay's."""
    address = secure_kafka.address
    engine = engine_env(address, unique_name, tmp_path, partitions=3)
    s = engine.settings
    assert s.security.protocol == "SASL_SSL"
    probe = KafkaSecurity.from_env(secure_kafka.probe_env)
    ca_only = KafkaSecurity.from_env(
        {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(s.security.cafile)}
    )
    async with engine_topics(engine):
        await publish(address, demo_messages(s))
        outputs = Outputs(
            address, [s.topic_commands, s.topic_transitions, s.topic_audit, s.topic_deadletter]
        )
        async with outputs, running_worker(engine) as worker:
            with caplog.at_level(logging.ERROR, logger="aiokafka"):
                # No TLS, no SASL; then TLS that trusts the broker, but no SASL.
                await refused(address, "plaintext")
                await refused(address, "no credentials", **ca_only.client_options())
                caplog.clear()
                wrong = {**s.security.client_options(), "sasl_plain_password": "not-it"}
                await refused(address, "wrong password", **wrong)
                assert "SaslAuthenticationFailed" in caplog.text
                assert "invalid credentials" in caplog.text
            await probe_may_write_readings_only(address, probe)
            await finish(engine, outputs, worker)
        assert_parity(engine, outputs)


async def probe_may_write_readings_only(address: str, probe: KafkaSecurity) -> None:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=address, **KafkaSecurity.from_env().client_options()
    )
    await admin.start()
    try:
        missing = [t for t in (PROBE_TOPIC, FORBIDDEN_TOPIC) if t not in await admin.list_topics()]
        if missing:
            await admin.create_topics([NewTopic(t, 1, 1) for t in missing])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=address, enable_idempotence=True, **probe.client_options()
    )
    await producer.start()
    try:
        sent = await producer.send_and_wait(PROBE_TOPIC, b"{}", key=b"a-link")
        assert sent.topic == PROBE_TOPIC
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(FORBIDDEN_TOPIC, b"{}", key=b"a-service")
    finally:
        await producer.stop()
