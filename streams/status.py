"""``failover status``: every service's current state, read from the public read model.

The read model is the compacted ``service-state`` topic (``failover.service.state.v1``, the
last record of each service id is its state). :func:`read_topic` reads it to its end as a
read_committed consumer with manual assignment: no group, nothing committed, so it disturbs
no one and sees only what the engine committed. :func:`read_board` asks the status board's
``GET /api/services`` for the same data instead. :func:`table` lays the services out for a
terminal; every value from the topic is shown inert (no markup, no terminal escape).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import orjson
from rich.table import Table
from rich.text import Text

from streams.committed import read_committed
from streams.printable import printable
from streams.security import KafkaSecurity
from workflows.records import STATE_TYPE
from workflows.service import STATES

__all__ = [
    "STATES",
    "StatusError",
    "matching",
    "read_board",
    "read_topic",
    "table",
]

#: How long a read may take, by default, before it is given up (seconds).
TIMEOUT: Final = 30.0


class StatusError(RuntimeError):
    """The read model cannot be read: the message says what and where."""


def _record_data(value: bytes | None) -> dict[str, Any] | None:
    """The ``data`` of one record of the topic; None for anything that is not a state
    record (a tombstone, another type, bytes that are not JSON)."""
    if value is None:
        return None
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict) or event.get("type") != STATE_TYPE:
        return None
    data = event.get("data")
    return data if isinstance(data, dict) else None


def read_topic(
    bootstrap: Sequence[str],
    topic: str,
    timeout: float = TIMEOUT,
    security: KafkaSecurity | None = None,
) -> list[dict[str, Any]]:
    """The ``data`` of the last record of every service on ``topic``, read to its end,
    connecting as ``security`` says (TLS, SASL: the worker's ``KAFKA_*`` settings).

    Raises:
        StatusError: no broker, no such topic, or not done within ``timeout`` seconds.
    """
    records = read_committed(
        bootstrap, [topic], timeout, security, StatusError,
        what=f"topic {topic!r}", missing="FAILOVER_TOPIC_STATE; the worker creates it at start",
    )  # fmt: skip
    latest: dict[bytes, dict[str, Any]] = {}
    for record in records:
        if record.key is None:
            continue
        data = _record_data(record.value)
        if data is None:
            latest.pop(record.key, None)  # a tombstone: the service is gone
        else:
            latest[record.key] = data
    return list(latest.values())


async def _read_board(
    url: str, site: str | None, state: str | None, timeout: float
) -> list[dict[str, Any]]:
    import aiohttp
    from yarl import URL

    params = {k: v for k, v in (("site", site), ("state", state)) if v is not None}
    address = url.rstrip("/") + "/api/services"
    try:
        # Shown in errors without any user or password the URL may carry.
        shown = inert(str(URL(address).with_user(None)))
    except ValueError as exc:
        raise StatusError(f"--board: not a URL: {inert(exc)}") from exc
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(address, params=params) as response,
        ):
            body = await response.read()
            if response.status != 200:
                excerpt = inert(body[:200].decode("utf-8", "replace"))
                raise StatusError(f"{shown}: HTTP {response.status}: {excerpt}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise StatusError(f"cannot reach the status board at {shown}: {inert(exc)}") from exc
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise StatusError(f"{shown}: the answer is not JSON: {exc}") from exc
    services = answer.get("services") if isinstance(answer, dict) else None
    if not isinstance(services, list) or not all(isinstance(s, dict) for s in services):
        raise StatusError(f"{shown}: the answer has no list of services")
    return services


def read_board(
    url: str, site: str | None = None, state: str | None = None, timeout: float = TIMEOUT
) -> list[dict[str, Any]]:
    """The services the status board at ``url`` shows (``GET URL/api/services``, filtered by
    the board on ``site`` and ``state``).

    Raises:
        StatusError: the board cannot be reached, or its answer is not the expected shape.
    """
    return asyncio.run(_read_board(url, site, state, timeout))


def matching(
    services: Iterable[dict[str, Any]], site: str | None, state: str | None
) -> list[dict[str, Any]]:
    """``services`` of ``site`` in ``state`` (either None: any), by site then service id."""
    chosen = [
        s
        for s in services
        if (site is None or s.get("site") == site) and (state is None or s.get("state") == state)
    ]
    return sorted(chosen, key=lambda s: (str(s.get("site")), str(s.get("service"))))


# -- the table ---------------------------------------------------------------------------------


def inert(value: Any) -> str:
    """``value`` as text that a terminal shows as it is (:func:`streams.printable.printable`:
    controls, escape, bidi overrides as their Python escapes); ``-`` for None."""
    return "-" if value is None else printable(value, None)


def _since(value: Any, now: datetime) -> tuple[str, str]:
    """The local time (as the record gives it, with the site's offset) and how long ago."""
    if not isinstance(value, str):
        return "-", "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return inert(value), "-"
    if moment.tzinfo is None:
        return inert(value), "-"
    shown = moment.strftime("%Y-%m-%d %H:%M%z")
    return f"{shown[:-2]}:{shown[-2:]}", _duration(now - moment)


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "-"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"


_STYLE: Final = {"online": "green", "degraded": "yellow", "manual": "red", "restored": "cyan"}


def table(services: Sequence[dict[str, Any]], now: datetime) -> Table:
    """One row per service. Columns fold (wrap) when space is short, never cut, so a narrow
    terminal gets every character and a pipe gets every line whole."""
    grid = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    short = {"STATE", "FOR", "HELD", "OPEN"}  # never folded: a few characters each
    for name in ("SITE", "SERVICE", "STATE", "SINCE", "FOR", "INCIDENT", "HELD", "OPEN"):
        grid.add_column(name, overflow="fold", no_wrap=name in short)
    grid.add_column("LAST REASON", overflow="fold")
    for s in services:
        since, for_ = _since(s.get("since"), now)
        queue = s.get("queue")
        held = queue.get("held") if isinstance(queue, dict) else None
        manual = s.get("manual")
        open_ = manual.get("open") if isinstance(manual, dict) else None
        state = inert(s.get("state"))
        grid.add_row(
            Text(inert(s.get("site"))),
            Text(inert(s.get("service"))),
            Text(state, style=_STYLE.get(state, "")),
            Text(since),
            Text(for_),
            Text(inert(s.get("incident"))),
            Text("held" if held else "-"),
            Text(inert(open_)),
            Text(inert(s.get("last_reason"))),
        )
    return grid
