"""The causal chain in traces: probe reading → processing → transition → each command sent.

The pure core knows nothing of this; what it emits (:class:`~workflows.records.Emitted`,
:class:`~workflows.records.DeadLetter`) and the link health changes of stage 1 are all it
needs. The package, one room per part:

- :mod:`~streams.tracing.propagation`: W3C trace context in and out of headers and events;
- :mod:`~streams.tracing.scopes`: the processing of one input as a context manager;
- :mod:`~streams.tracing.tracer`: :class:`Tracing`, the spans, metrics and incident story;
- :mod:`~streams.tracing.kafka`: the Kafka worker's batch path (:class:`KafkaTracing`);
- :mod:`~streams.tracing.replay`: :func:`traced_replay` (``failover replay --trace``).

All but the Kafka batch path are independent of the transport: they import none of the Kafka
wiring (an import-linter contract in ``pyproject.toml`` keeps it so; docs/architecture.md).

How to call it, per input message::

    tracing = Tracing(telemetry, topology)
    with tracing.input(event, raw, headers, destination="link-status", partition=3,
                       offset=1234, group="failover") as scope:
        ...                                   # run the stages
        scope.health(link, health, reason)    # for each link health change (stage 1)
        headers = scope.outputs(records)      # per record, the headers to send it with

On Kafka, per consumed batch of one topic partition (:meth:`KafkaTracing.process`)::

    with tracing.process(topic, partition, group, records) as batch:
        for record in records:
            out = batch.handled(record, handle(record))  # the records it caused, traced

The spans (names and attributes follow OpenTelemetry's messaging conventions):

- ``process {destination}`` (CONSUMER), one per input message: the W3C ``traceparent``
  (and ``tracestate``) the producer put in the Kafka headers, or else in the CloudEvent's
  ``traceparent`` extension attribute, is its **parent** (single-message processing); with
  none, it is a root. ``messaging.system=kafka``, destination, partition, offset, consumer
  group, message id and key, ``failover.event.id``, ``.event.type``, ``.event.time`` (the event
  time, as sent), ``failover.subject``. A link health change is an event on it
  (``failover.link.health``); so is a dead letter. :meth:`Tracing.batch` is the batch form:
  one span, a **link** to each message's context, as the conventions prescribe for batches.
  :meth:`KafkaTracing.process` is that form for consumed Kafka records (:class:`Batch`): what a
  record causes hangs from the record's own context (the probe's span it came with, else
  the batch's span), with a ``batch`` link to the batch's span; a change it sends to the
  internal topic carries that context to stage 2, so the probe's trace goes on there.
- ``transition {from}→{to}`` (INTERNAL), one per transition: ``failover.service``,
  ``.site``, ``.incident``, ``.from``, ``.to``, ``.reason``, ``.cause``, ``.event.time``.
- ``send {topic}`` (PRODUCER), one per record sent (commands, the transition record itself,
  dead letters): ``messaging.operation.type=send``, ``messaging.message.id`` (the CloudEvent
  id), the key, ``failover.command.type``. Its context is what the returned headers carry, so
  a consumer of the command continues the same trace. A command that follows a transition of
  the same service, at the same event time, in the same incident, is a child of that
  transition's span; the others (escalations, pin notices, a late record's reconcile) are
  children of the processing span.
- Replay (:func:`traced_replay`) reads a file, not Kafka: ``replay {type}`` (INTERNAL) per
  line instead of ``process``, ``emit {topic}`` (INTERNAL) per record instead of ``send``,
  with ``failover.topic`` and ``failover.key`` and no ``messaging.*`` attribute; the rest of
  the story is the same.

The incident story ("one place to start per incident"):

- The transition that **opens** an incident (leaving ``online`` on the service's health) is
  a child of the processing span of the reading that made the service's health bad: the
  first bad reading. Its trace is the incident's trace: the probe's span, the reading's
  processing, the transition, its commands. (The processing span of whatever completed the
  condition, usually a clock tick, is a link: ``failover.link.role=trigger``.) An operator's
  ``force_manual`` from ``online`` is a child of the override's processing span instead.
- **Later** transitions of the incident are children of the processing span of their own
  cause (the ``cause`` field: an override, a reconcile report, the tick that completed a
  condition), and carry a link to the opening transition's span
  (``failover.link.role=incident``): the incident is a set of traces linked to one root,
  and each operator or office that traced its own message sees what it caused. A
  health-driven transition also links to the reading that last changed the service's
  health (``health``); commands outside a transition (escalations) link to the incident too.
- Every span of the story carries ``failover.incident``: searching for it finds them all.

What the first bad reading was is worked out here, from the link health changes reported to
:meth:`Scope.health` and the topology's requirements (a service's health is the worst over its
requirements, a group of redundant links counting its best): the same rule as stage 2, kept
in memory of this object. So are the recent inputs' contexts (to find a ``cause``) and the
open incidents' roots. That memory is best effort: a worker that restarts, or takes over a
partition, starts without it, and a transition then falls back to its processing span.

Metrics are recorded alongside: inputs by type, dead letters by reason code, transitions by
from and to, commands by type, and the time each processing scope took (``stage``).

When telemetry is off (:attr:`streams.telemetry.Telemetry.enabled` false), every method
returns at once and the headers are empty.
"""

from streams.tracing.kafka import (
    MAX_BATCH_LINKS,
    Batch,
    KafkaTopics,
    KafkaTracing,
    Produced,
    Received,
    kafka_autoinstrumentation,
)
from streams.tracing.propagation import Headers, HeadersIn, extract, inject
from streams.tracing.replay import traced_replay
from streams.tracing.scopes import Message, Scope, Send
from streams.tracing.tracer import Tracing

__all__ = [
    "MAX_BATCH_LINKS",
    "Batch",
    "Headers",
    "HeadersIn",
    "KafkaTopics",
    "KafkaTracing",
    "Message",
    "Produced",
    "Received",
    "Scope",
    "Send",
    "Tracing",
    "extract",
    "inject",
    "kafka_autoinstrumentation",
    "traced_replay",
]
