"""One bad input never stops the engine: per-key snapshots, and the reason it is refused with.

An input whose handling raises (a fault of the core that this input happens to reach) is
dead-lettered ``internal-error: <ExceptionType>: <message> (at <file>:<line> in <function>)``
(where it was raised: the same code gives the same reason), and the engine goes on. The
state it may have half-changed is put back as it was before the input, *per key* (a link in
stage 1, a service in stage 2):

- Before a key's state is changed, its slots are captured with :func:`snapshot` (one level
  deep: a ``dict``, ``list`` or ``set`` slot is copied; what such a container holds is
  immutable or never changed in place), or for a link, whose slots hold only immutable
  values, with a :func:`slot_getter` that copies nothing (readings are the hot path). If
  the handling raises, :func:`restore` puts every slot back, and the outputs the key
  produced since are dropped. Nothing half-done is kept:
  a ledger whose records were marked sent by a transition that then raised goes back to
  unsent, with no reconcile command out.
- Stage 1 snapshots the one link a reading touches, and each link a tick wakes. Stage 2
  snapshots a service before applying what is due for it at a tick (its queued inputs in
  order, then its timers). If a queued input raises, the service goes back to its snapshot,
  that input is dead-lettered and dropped from the queue, and the step runs again without
  it: the inputs before it are applied anew and give the same outputs (the core is
  deterministic). If the service's own timers raise (no input to blame), the service stays
  as its inputs left it, before its timers, and the tick is dead-lettered with the service
  as key; it is not armed again until its next input (a fault that repeats at every tick
  would otherwise dead-letter every tick).
- Isolation is per key: other keys of the same input go on. A health change that one
  service cannot take is dead-lettered for that service; the link and other services keep it.

Only an ``Exception`` is caught: ``MemoryError`` is a fault of the process, which stops it,
as do faults of the broker (outside the core).
"""

from __future__ import annotations

import traceback
from collections import OrderedDict
from collections.abc import Callable
from copy import copy
from typing import Any, Final

__all__ = ["MAX_ERROR_DETAIL", "fatal", "internal_error", "restore", "slot_getter", "snapshot"]

#: Characters of the exception's message kept in the reason.
MAX_ERROR_DETAIL: Final = 240

_MUTABLE: Final = frozenset((dict, list, set, bytearray, OrderedDict))
_GETTERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def _slots(cls: type) -> tuple[str, ...]:
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        slots = klass.__dict__.get("__slots__", ())
        names.extend((slots,) if isinstance(slots, str) else slots)
    return tuple(names)


def slot_getter(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    """A snapshot of a ``cls`` without the copies, for the hot path of readings: a
    :class:`~workflows.links.LinkState` holds only immutable values (ints, bools, tuples),
    which a test checks.

    Made as ``lambda s: (s.a, s.b, ...)`` from the slot names: about 0.1 us for nine slots,
    where ``attrgetter`` (a lookup by name per slot) takes three times as long.
    """
    names = _slots(cls)
    if not all(name.isidentifier() for name in names):  # pragma: no cover - slots are names
        raise ValueError(f"{cls.__name__} has a slot that is not an identifier")
    source = f"lambda s: ({''.join(f's.{name}, ' for name in names)})"
    getter: Callable[[Any], tuple[Any, ...]] = eval(source, {})  # noqa: S307 - from slot names
    return getter


def snapshot(state: Any) -> tuple[Any, ...]:
    """Every slot of ``state`` (a ``__slots__`` object), containers copied one level deep."""
    getter = _GETTERS.get(type(state))
    if getter is None:
        getter = _GETTERS[type(state)] = slot_getter(type(state))
    values = getter(state)
    if _MUTABLE.isdisjoint(map(type, values)):
        return values
    return tuple(copy(v) if type(v) in _MUTABLE else v for v in values)


def restore(state: Any, values: tuple[Any, ...]) -> None:
    """Put back what :func:`snapshot` took. The snapshot stays usable for another restore."""
    for name, value in zip(_slots(type(state)), values, strict=True):
        setattr(state, name, copy(value) if type(value) in _MUTABLE else value)


def fatal(exc: BaseException) -> bool:
    """A fault of the process, not of an input: let it stop the engine."""
    return isinstance(exc, MemoryError)


def internal_error(exc: BaseException) -> str:
    """The dead-letter reason for an input whose handling raised ``exc``: the exception's
    type and message (bounded), and where it was raised, for whoever fixes the fault:
    ``internal-error: KeyError: 'x' (at workflows/service.py:512 in _record)``."""
    detail = str(exc)
    if len(detail) > MAX_ERROR_DETAIL:
        detail = f"{detail[:MAX_ERROR_DETAIL]}... ({len(detail)} characters)"
    reason = f"internal-error: {type(exc).__name__}"
    if detail:
        reason = f"{reason}: {detail}"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        frame = frames[-1]
        path = frame.filename.replace("\\", "/")
        for package in ("/workflows/", "/streams/", "/schemas/"):
            if package in path:
                path = package[1:] + path.rsplit(package, 1)[1]
                break
        else:
            path = path.rsplit("/", 1)[-1]
        reason = f"{reason} (at {path}:{frame.lineno} in {frame.name})"
    return reason
