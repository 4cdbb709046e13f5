"""The pure core of the failover engine: no Kafka, no faust, no wall clock.

A reading guide, in the order data flows:

- :mod:`workflows.topology` - the operator's file: sites, links, services, policy.
- :mod:`workflows.inputs` - every input's one entry point: decode, judge, route to a stage.
- :mod:`workflows.engine` - the whole core in one process (replay), fed by the entry point.
- :mod:`workflows.links` - stage 1, keyed by link: probe readings to health changes.
- :mod:`workflows.health` - health levels, and the order stage 2 applies its inputs in.
- :mod:`workflows.service` - stage 2, keyed by service: the state machines, the commands.
- :mod:`workflows.grants` - the topology's operators: their keys and grants.
- :mod:`workflows.operators` - who may steer the engine: signed overrides, verified.
- :mod:`workflows.maintenance` - planned outages: windows announced, started, quiet, ended.
- :mod:`workflows.notices` - what people are told, in Indonesian and English.
- :mod:`workflows.replay` - the whole core over a file: ``failover replay``.
- :mod:`workflows.clock` - who may move the clock: tick tags, the bound on future times.
- :mod:`workflows.recording` - a replayed file's clock: its ticks, or its inputs' times.

Time comes only from events; the same input gives the same output, byte for byte.
"""

from workflows.engine import Engine
from workflows.replay import replay
from workflows.topology import Topology, TopologyError

__all__ = ["Engine", "Topology", "TopologyError", "replay"]
