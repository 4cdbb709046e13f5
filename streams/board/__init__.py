"""``failover board``: the on-call engineer's live view of every service.

Reads the engine's compacted ``service-state`` topic (and ``service-transitions`` and
``failover-commands`` for incident timelines and notices as sent) into memory, and serves it
over HTTP: the status page, incident pages, a JSON API, server-sent events, Prometheus
metrics and health checks. See :mod:`streams.board.model` for what is kept and its bounds,
:mod:`streams.board.reader` for how Kafka is read, :mod:`streams.board.web` for the routes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import tzinfo

from aiohttp import web as aioweb

from streams.board.model import Board
from streams.board.reader import Reader, Topics
from streams.board.web import BoardWeb, make_app
from streams.config import Settings
from streams.redact import install as mask_secrets

__all__ = ["serve"]

log = logging.getLogger("failover.board")


def _zones(settings: Settings) -> tuple[dict[str, tzinfo], dict[str, str]]:
    """Site time zones and names from the topology, when ``FAILOVER_TOPOLOGY`` is set;
    otherwise the board shows times in the offset the state records carry."""
    if settings.topology is None:
        return {}, {}
    from workflows.topology import Topology

    topology = Topology.load(settings.topology_path())
    return (
        {site.id: site.timezone for site in topology.sites.values()},
        {site.id: site.name for site in topology.sites.values()},
    )


async def serve(settings: Settings, host: str, port: int) -> int:
    """Run the board until SIGTERM or SIGINT."""
    # As the worker: the Kafka password and the environment's secrets never reach a log line.
    mask_secrets(extra=settings.security.secrets())
    zones, names = _zones(settings)
    board = Board(zones)
    reader = Reader(
        board,
        list(settings.bootstrap_servers),
        Topics(settings.topic_state, settings.topic_transitions, settings.topic_commands),
        settings.app_id,
        security=settings.security,
    )
    handlers = BoardWeb(board, reader.ready.is_set, lambda: reader.lag, site_names=names)
    runner = aioweb.AppRunner(make_app(handlers), access_log=None)
    await runner.setup()
    await aioweb.TCPSite(runner, host, port).start()
    log.info("board: serving on http://%s:%d/", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await reader.start()
    try:
        await stop.wait()
    finally:
        await reader.stop()
        await runner.cleanup()
    return 0
