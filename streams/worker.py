"""``failover worker``: run the faust app until SIGTERM or SIGINT (mode's worker handles both
by stopping the app cleanly: the batch in hand is finished, the last commit is made).
Telemetry comes from the standard ``OTEL_*`` variables (streams/telemetry.py), and is
flushed and shut down when the worker stops."""

from __future__ import annotations

import logging

import faust

from streams.app import build_app
from streams.config import Settings
from streams.redact import install as mask_secrets
from streams.telemetry import configure, install_globals
from streams.tracing import KafkaTopics, KafkaTracing, kafka_autoinstrumentation
from workflows.topology import Topology

__all__ = ["run"]


def run(settings: Settings, topology: Topology) -> int:
    """Run the worker in this process; return its exit status (non-zero after a crash).

    Every log record and a fatal traceback have the environment's secrets masked
    (:mod:`streams.redact`), whatever library makes them, and so is the Kafka password, also when it
    came from a file.
    """
    mask_secrets(extra=settings.security.secrets())
    telemetry = configure("failover-engine")
    install_globals(telemetry)
    unwatch_gc = telemetry.watch_gc()
    # The aiokafka auto-instrumentation would add a second traceparent to every record.
    kafka_autoinstrumentation()
    tracing = KafkaTracing(telemetry, topology, kafka=KafkaTopics.of(settings))
    app = build_app(settings, topology, tracing)
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
    finally:
        unwatch_gc()
        telemetry.shutdown()
