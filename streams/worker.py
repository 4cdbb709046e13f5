"""``failover worker``: run the faust app until SIGTERM or SIGINT (mode's worker handles both
by stopping the app cleanly: the agents finish their input, the last commit is made)."""

from __future__ import annotations

import logging

import faust

from streams.app import build_app
from streams.config import Settings
from workflows.topology import Topology

__all__ = ["run"]


def run(settings: Settings, topology: Topology) -> int:
    """Run the worker in this process; return its exit status (non-zero after a crash)."""
    app = build_app(settings, topology)
    # ``transitions`` logs every callback at INFO: one line per state change, per service.
    logging.getLogger("transitions").setLevel(logging.WARNING)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.upper(),
        redirect_stdouts=False,
        override_logging=True,
    )
    try:
        worker.execute_from_commandline()  # always ends with SystemExit
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
