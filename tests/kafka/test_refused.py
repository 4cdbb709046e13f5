"""A record the broker refuses commits nothing of the input that caused it; a worker whose
records a topic would refuse does not start.

The commands topic's ``max.message.bytes`` is lowered while the worker runs (at start it
would refuse to run: streams/topics.py checks every limit), so that every command is refused
(``MESSAGE_TOO_LARGE``). The worker must stop with an error that names the topic, having
committed no offset past an input whose command was refused, and nothing of that input may
be visible to a read_committed consumer (the transition it caused included). Once the limit
is back, a new worker handles those inputs again from the last commit: every service's
transitions and commands are then exactly replay's, none missing and none twice.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.kafka.kafkatools import topics, wait_for
from tests.kafka.test_engine import assert_parity, demo_messages, finish
from tests.kafka.workers import (
    Engine,
    Outputs,
    engine_env,
    engine_topics,
    group_lag,
    publish,
    running_worker,
    start_worker,
    stop_worker,
)

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]


async def set_max_message_bytes(bootstrap: str, topic: str, limit: int | None) -> None:
    """Set a topic's ``max.message.bytes`` (``None``: back to the broker's default), and
    wait until the broker reports it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        configs = {} if limit is None else {"max.message.bytes": str(limit)}
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs)
        await admin.alter_configs([resource])

        async def applied() -> bool:
            query = ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})
            (response,) = await admin.describe_configs([query])
            ((_code, _message, _type, _name, entries),) = response.resources
            value = entries[0][1]
            return value == str(limit) if limit is not None else int(value) > 1000

        await wait_for(applied, timeout=30, what=f"max.message.bytes of {topic} to apply")
    finally:
        await admin.close()


async def ready(engine: Engine, worker: subprocess.Popen[bytes]) -> bool:
    """Has the worker passed its checks, joined the group and recovered its tables?"""
    assert worker.poll() is None, f"worker exited\n{engine.log_tail()}"
    return "Worker ready" in engine.log_tail(400)


@pytest.mark.slow
async def test_a_refused_command_commits_nothing_of_its_input(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=2)
    s = engine.settings
    async with engine_topics(engine):
        worker = start_worker(engine)
        try:
            await wait_for(lambda: ready(engine, worker), timeout=60, what="the worker ready")
            # Every command is larger than this, so each batch of the topic is refused, but
            # a transaction marker (a 78-byte batch) is not: the broker's coordinator takes a
            # refused marker for a fatal error, and the transaction would never end.
            await set_max_message_bytes(kafka_bootstrap, s.topic_commands, 300)
            await publish(kafka_bootstrap, demo_messages(s))

            async def stopped() -> bool:
                return worker.poll() is not None

            await wait_for(stopped, timeout=120, what="the worker to stop on the refusal")
        finally:
            if worker.poll() is None:
                await stop_worker(worker)
        assert worker.returncode != 0
        log = engine.log_tail(400)
        assert "the broker refused a record of " in log, log
        assert f"for topic {s.topic_commands!r}" in log, log
        assert "MessageSizeTooLargeError" in log, log

        # Nothing of an input whose command was refused is visible: no command at all, and
        # (shown by the parity below) no transition such an input caused either.
        topics = [s.topic_commands, s.topic_transitions, s.topic_audit, s.topic_deadletter]
        async with Outputs(kafka_bootstrap, topics) as seen:
            await wait_for(seen.at_end, timeout=30, what="the committed outputs")
            assert seen.of(s.topic_commands) == []
        assert await group_lag(engine), "every input committed although commands were refused"

        await set_max_message_bytes(kafka_bootstrap, s.topic_commands, None)
        outputs = Outputs(kafka_bootstrap, topics)
        async with outputs, running_worker(engine) as again:
            await finish(engine, outputs, again)
        # Exactly replay's: what the first worker committed plus what the second made of
        # the inputs handled again, with nothing of the refused transactions twice.
        assert_parity(engine, outputs)


async def test_a_topic_that_would_refuse_the_engines_records_stops_the_worker_at_start(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    engine = engine_env(kafka_bootstrap, unique_name, tmp_path, partitions=1)
    s = engine.settings
    small = {"max.message.bytes": "100000"}
    async with topics(kafka_bootstrap, s.topic_commands, config=small), engine_topics(engine):
        worker = start_worker(engine)

        async def stopped() -> bool:
            return worker.poll() is not None

        try:
            await wait_for(stopped, timeout=60, what="the worker to refuse to run")
        finally:
            if worker.poll() is None:
                await stop_worker(worker)
        assert worker.returncode != 0
        log = engine.log_tail(200)
        assert f"topic {s.topic_commands!r} accepts records (batches) of 100000 bytes" in log, log
        assert "raise the topic's max.message.bytes to 983040 or more" in log, log
        assert "Worker ready" not in log
