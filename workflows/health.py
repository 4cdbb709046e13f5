"""Health levels and the ordering of stage-2 inputs.

Health is an ``int`` so that "worst of" is ``max`` and "best of" is ``min``.

Every input of a service carries an order key ``(time, rank, id)``. The stage that owns the
service applies its inputs in that order, never in arrival order, so the Kafka path (where a
service's inputs come through several partitions at their own pace) and replay (one file, one
order) give the same result. Ticks are the watermark: at tick ``T`` every input whose key is
below ``(T, TICK)`` is applied, then time-based conditions are evaluated at ``T``. An input
that arrives after the watermark has passed its time is *late*: it takes the key
``(W, LATE, id)``, where ``W`` is the last tick seen where it entered the engine, and so is
applied right after that tick on every path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

__all__ = [
    "DOWN",
    "FEEDBACK",
    "HEALTH",
    "HEALTHY",
    "HEALTH_NAMES",
    "IMPAIRED",
    "LATE",
    "OVERRIDE",
    "TICK",
    "order_key",
    "service_health",
]

HEALTHY: Final = 0
IMPAIRED: Final = 1
DOWN: Final = 2
HEALTH_NAMES: Final = ("healthy", "impaired", "down")

# Ranks: at one instant a link's change is applied before an operator's word about the same
# instant, and both before the tick that evaluates what they add up to.
HEALTH: Final = 0
OVERRIDE: Final = 1
FEEDBACK: Final = 2
TICK: Final = 5
LATE: Final = 6


def order_key(time: int, rank: int, watermark: int | None) -> tuple[int, int]:
    """The ``(time, rank)`` an input is ordered by, given the watermark where it entered."""
    if watermark is not None and time <= watermark:
        return watermark, LATE
    return time, rank


def service_health(requires: Iterable[tuple[str, ...]], bad: Mapping[str, int] | None) -> int:
    """The worst over the requirements, each group of redundant links counting its best.

    ``bad`` holds only the links that are not healthy; a link it lacks is healthy.
    """
    if not bad:
        return HEALTHY
    return max(min(bad.get(link, HEALTHY) for link in group) for group in requires)
