"""What the core emits: CloudEvents for the output topics, and dead letters for bad input."""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple

from workflows.timeutil import format_time

__all__ = [
    "AUDIT",
    "COMMANDS",
    "DEADLETTER",
    "STATE",
    "STATE_SCHEMA_VERSION",
    "STATE_TYPE",
    "TRANSITIONS",
    "DeadLetter",
    "Emitted",
    "Truncated",
    "cloudevent",
    "output_id",
]

# Logical topic names of the outputs; the Kafka wiring maps them to the configured topic
# names, whose defaults they are (streams/config.py: the one place the defaults are set).
TRANSITIONS = "service-transitions"
COMMANDS = "failover-commands"
DEADLETTER = "failover-deadletter"
#: The public read model: the current state of every service, one record per service and
#: change, on a compacted topic keyed by service id (the last record per key is the state).
STATE = "service-state"

#: The CloudEvent type of a read-model record, and the ``schema_version`` in its data.
STATE_TYPE = "failover.service.state.v1"
STATE_SCHEMA_VERSION = 1
AUDIT = "operator-audit"

# Output ids are UUIDv5 under this namespace (itself uuid5(NAMESPACE_URL, "urn:failover")),
# so the same decision always has the same id, whichever worker or replay made it.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:failover")


class Emitted(NamedTuple):
    """One output record: a CloudEvent for ``topic``, keyed by service id."""

    topic: str
    key: str
    event: dict[str, Any]


class DeadLetter(NamedTuple):
    """Input that could not be used, with why. ``origin`` says where it came from (a file
    line in replay, a topic-partition-offset on Kafka); ``raw`` is the input as received."""

    key: str | None
    reason: str
    raw: bytes
    origin: Any


class Truncated(bytes):
    """The first bytes of a line longer than the limit: all a dead letter keeps of it.

    ``length`` is the whole line's length in bytes (without its newline). It is at least one
    byte longer than the limit itself, so the engine refuses it ``too-large`` whatever those
    first bytes hold; the reason says how long the line was and how much of it is kept.
    """

    length: int

    def __new__(cls, prefix: bytes, length: int) -> Truncated:
        self = super().__new__(cls, prefix)
        self.length = length
        return self

    def reason(self, max_bytes: int) -> str:
        return (
            f"too-large: {self.length} bytes, the limit is {max_bytes}; the dead letter "
            f"keeps the first {len(self)} bytes (truncated)"
        )


def output_id(*parts: str) -> str:
    """A deterministic id for an output, from the parts that make it unique."""
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


def cloudevent(
    type_: str, id_: str, site: str, time: int, subject: str, data: dict[str, Any]
) -> dict[str, Any]:
    """A structured-mode CloudEvent 1.0 as the engine writes it."""
    return {
        "specversion": "1.0",
        "id": id_,
        "source": f"/failover/{site}",
        "type": type_,
        "time": format_time(time),
        "subject": subject,
        "datacontenttype": "application/json",
        "data": data,
    }
