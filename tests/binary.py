"""Binary-mode CloudEvents as a producer following its ecosystem's default makes them: the
official CloudEvents Python SDK's Kafka binding (``cloudevents.core.bindings.kafka``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from cloudevents.core.bindings.kafka import to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

Headers = list[tuple[str, bytes]]


def binary(raw: bytes) -> tuple[bytes, Headers] | None:
    """The binary-mode record (value, headers) the SDK makes of the structured event ``raw``,
    or ``None`` when the SDK will not make an event of it (not JSON, a required attribute
    missing or of the wrong type: the demo's bad lines)."""
    try:
        event: Any = orjson.loads(raw)
        attributes = {k: v for k, v in event.items() if k != "data"}
        attributes["time"] = datetime.fromisoformat(attributes["time"])
        message = to_binary(CloudEvent(attributes=attributes, data=event.get("data")), JSONFormat())
    except Exception:
        return None
    return message.value, list(message.headers.items())
