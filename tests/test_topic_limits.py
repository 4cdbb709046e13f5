"""The start-up check of the topics' limits (streams/topics.py ``check_limits``): a worker
whose records a topic or the producer would refuse does not run, and says what to change."""

from __future__ import annotations

import pytest

from streams.config import INPUT_MAX_MESSAGE_BYTES, Settings
from streams.topics import (
    DEADLETTER_MAX_MESSAGE_BYTES,
    OUTPUT_RECORD_BYTES,
    TopicsError,
    changelog_specs,
    check_limits,
    topic_specs,
)

BROKER_DEFAULT = 1_048_588
REQUEST = INPUT_MAX_MESSAGE_BYTES + 64 * 1024
BATCH = 16_384


def created(settings: Settings) -> dict[str, int]:
    """The limits of the topics as the engine creates them on a broker with defaults."""
    limits = {}
    for spec in topic_specs(settings) + changelog_specs(settings):
        config = dict(spec.config)
        limits[spec.name] = int(config.get("max.message.bytes", BROKER_DEFAULT))
    return limits


def test_the_topics_the_engine_creates_pass() -> None:
    s = Settings.from_env({"FAILOVER_TOPOLOGY": "t.yaml"})
    limits = created(s)
    assert limits[s.topic_deadletter] == DEADLETTER_MAX_MESSAGE_BYTES
    check_limits(s, limits, max_request_size=REQUEST, max_batch_size=BATCH)


def test_an_output_topic_below_the_largest_record_is_refused_by_name() -> None:
    s = Settings.from_env({"FAILOVER_TOPOLOGY": "t.yaml"})
    limits = created(s) | {s.topic_commands: 100_000}
    with pytest.raises(TopicsError) as error:
        check_limits(s, limits, max_request_size=REQUEST, max_batch_size=BATCH)
    text = str(error.value)
    assert f"topic {s.topic_commands!r} accepts records (batches) of 100000 bytes" in text
    assert f"raise the topic's max.message.bytes to {OUTPUT_RECORD_BYTES}" in text
    assert s.topic_transitions not in text


def test_a_dead_letter_topic_must_hold_the_largest_input_and_its_headers() -> None:
    s = Settings.from_env({"FAILOVER_TOPOLOGY": "t.yaml"})
    limits = created(s) | {s.topic_deadletter: INPUT_MAX_MESSAGE_BYTES}  # the old default
    with pytest.raises(TopicsError, match=repr(s.topic_deadletter)):
        check_limits(s, limits, max_request_size=REQUEST, max_batch_size=BATCH)
    # An input topic raised above the producer's request size: the producer is named too.
    limits = created(s) | {s.topic_link_status: 8 * 1024 * 1024}
    with pytest.raises(TopicsError) as error:
        check_limits(s, limits, max_request_size=REQUEST, max_batch_size=BATCH)
    assert "FAILOVER_FAUST_PRODUCER_MAX_REQUEST_SIZE" in str(error.value)


def test_a_producer_batch_larger_than_a_topic_accepts_is_refused() -> None:
    s = Settings.from_env({"FAILOVER_TOPOLOGY": "t.yaml"})
    changelog = changelog_specs(s)[0].name
    limits = created(s) | {changelog: 20_000}
    check_limits(s, limits, max_request_size=REQUEST, max_batch_size=BATCH)  # paged: fine
    with pytest.raises(TopicsError, match=f"{changelog!r} accepts records .* of 20000"):
        check_limits(s, limits, max_request_size=REQUEST, max_batch_size=64 * 1024)
    with pytest.raises(TopicsError, match="max_request_size is 1000000 bytes"):
        check_limits(s, created(s), max_request_size=1_000_000, max_batch_size=BATCH)


def test_the_read_model_topic_is_compacted_partitioned_like_transitions_and_checked() -> None:
    s = Settings.from_env({"FAILOVER_TOPOLOGY": "t.yaml", "FAILOVER_TOPIC_STATE": "st"})
    specs = {spec.name: spec for spec in topic_specs(s)}
    state, transitions = specs["st"], specs[s.topic_transitions]
    assert dict(state.config)["cleanup.policy"] == "compact"
    assert (state.partitions, state.exact) == (transitions.partitions, transitions.exact)
    limits = created(s) | {"st": 100_000}
    with pytest.raises(TopicsError) as error:
        check_limits(s, limits, max_request_size=REQUEST, max_batch_size=BATCH)
    assert "topic 'st' accepts records (batches) of 100000 bytes" in str(error.value)
