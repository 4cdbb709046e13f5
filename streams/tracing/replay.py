"""Traced replay (``failover replay --trace``): the core's :class:`~workflows.engine.Engine`
over numbered lines, each line in a ``replay`` span of its own, its outputs in ``emit`` spans.

Nothing here claims Kafka: replay reads a file and writes records, so its spans carry no
``messaging.*`` attributes (:meth:`~streams.tracing.tracer.Tracing.line`). Each line is parsed
once: its span reads the event :func:`workflows.inputs.decode` gave the engine (a line the
core refuses is read again, for what its span can tell). Stage 1's health changes come from
the engine's public ``on_health`` hook.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from streams.tracing.propagation import NO_HEADERS, Headers, HeadersIn
from streams.tracing.scopes import Scope
from streams.tracing.tracer import Tracing
from workflows.engine import Engine
from workflows.inputs import Decoded, decode
from workflows.isolation import fatal
from workflows.links import HealthChange
from workflows.records import DeadLetter, Emitted
from workflows.replay import Origin, replay
from workflows.topology import Topology

__all__ = ["traced_replay"]


def traced_replay(
    topology: Topology,
    lines: Iterable[tuple[int, bytes] | tuple[int, bytes, HeadersIn]],
    file: str,
    tracing: Tracing,
    *,
    state: bool = False,
    on_health: Callable[[HealthChange], None] | None = None,
) -> Iterator[tuple[Emitted | DeadLetter, Headers]]:
    """:func:`workflows.replay.replay`, traced: the same records in the same order, each with
    the headers its ``emit`` span injected (for a consumer that continues the trace).
    ``state``: the read model's records too; ``on_health``: told each link health change.

    ``lines`` are numbered lines, optionally with the headers the message came with (to
    replay a capture of a topic, or to test propagation). Each line is processed in a
    ``replay {type}`` span (``replay {file}`` for a line that is not an input event); the end
    of input in a ``replay finish`` span.
    """
    if not tracing.enabled:
        plain = ((item[0], item[1]) for item in lines)
        for record in replay(topology, plain, file, state=state, on_health=on_health):
            yield record, NO_HEADERS
        return
    scope: Scope | None = None  # the scope stage 1's health changes are reported to

    def observed(change: HealthChange) -> None:
        if on_health is not None:
            on_health(change)
        if scope is not None:
            scope.health(change.link, change.health, change.reason)

    engine = Engine(topology, state_records=state, on_health=observed)
    for item in lines:
        number, raw, *rest = item
        headers = rest[0] if rest else None
        decoded: Decoded | str | None
        try:
            decoded = decode(raw, None, engine.max_event_bytes)
        except Exception as exc:  # the engine decodes it again, and dead-letters it
            if fatal(exc):
                raise
            decoded = None
        event = decoded[0] if isinstance(decoded, tuple) else None
        with tracing.line(event, raw, headers, file=file, number=number) as line:
            scope = line
            try:
                engine.feed(raw, None, Origin(file, number), decoded)
            finally:
                scope = None
            if not engine.out:
                continue
            records = engine.drain()
            traced = list(zip(records, line.outputs(records), strict=True))
        yield from traced
    with tracing.scope(
        "replay finish", attributes={"failover.origin": file}, messaging=False
    ) as finish:
        scope = finish
        try:
            engine.finish()
        finally:
            scope = None
        records = engine.drain()
        traced = list(zip(records, finish.outputs(records), strict=True))
    yield from traced
