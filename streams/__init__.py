"""The failover engine's wiring to the world: command line now; Kafka and telemetry next.

Start with :mod:`streams.cli` (``failover``), which runs the pure core in
:mod:`workflows` over a file (``replay``, ``demo``).
"""

__all__: list[str] = []
