"""The failover engine's wiring to the world: Kafka (faust), telemetry and the command line.

A reading guide:

- :mod:`streams.cli` - ``failover``: ``replay``, ``demo``, ``validate``, ``what-if``,
  ``diagram``, ``worker``.
- :mod:`streams.validate`, :mod:`streams.whatif` - the reports of ``validate`` and ``what-if``.
- :mod:`streams.config` - every worker setting, from the environment.
- :mod:`streams.app` - the faust app: stage 1 by link, stage 2 by service, a batch each.
- :mod:`streams.batches` - how a topic-partition's records reach the app one fetch at a time.
- :mod:`streams.partitions` - one partition's stage, its table, its watermarks.
- :mod:`streams.eos` - exactly-once: every record an input causes, in its transaction.
- :mod:`streams.outage` - what carries a running worker through a broker outage.
- :mod:`streams.patches` - every patch of faust and aiokafka: one install, one version gate.
- :mod:`streams.topics` - the topics, their partitions and configs, created at start.
- :mod:`streams.telemetry`, :mod:`streams.tracing` - OpenTelemetry providers and spans.

The decisions themselves are made by the pure core, :mod:`workflows`.
"""

__all__: list[str] = []
