"""Records of the ``service-state`` contract (docs/contracts.md), made by hand: what the board's
tests and bench/board.py feed the board."""

from __future__ import annotations

import uuid
from typing import Any

__all__ = ["state_event"]


def state_event(
    service: str,
    site: str,
    state: str,
    since: str,
    *,
    time: str | None = None,
    incident: str | None = None,
    held: bool = False,
    offline: bool = False,
    open_records: int = 0,
    reconciled: int = 0,
    health: str = "good",
    last_reason: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A ``failover.service.state.v1`` CloudEvent as the contract writes it."""
    data: dict[str, Any] = {
        "schema_version": 1,
        "service": service,
        "site": site,
        "offline": offline,
        "state": state,
        "since": since,
        "incident": incident,
        "health": health,
        "links": [{"link": "telkom-sto-pattimura", "health": health}],
        "queue": {"held": held},
        "manual": {"open": open_records, "reconciled": reconciled},
        "pin": None,
        "last_operator": None,
        "last_reason": last_reason,
        **extra,
    }
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": f"/failover/{site}",
        "type": "failover.service.state.v1",
        "time": time or since,
        "subject": service,
        "datacontenttype": "application/json",
        "data": data,
    }
