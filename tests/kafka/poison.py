"""A fault put into the core of a worker under test: imported by the worker subprocess of
tests/kafka/test_poison.py before it starts (never by the product).

Applying any input whose id starts with ``FAILOVER_TEST_POISON`` raises, in stage 1 (a
reading) or stage 2 (an override or feedback input, when a tick applies it): as a bug of
the core that this input happens to reach would.
"""

from __future__ import annotations

import os
from typing import Any

from workflows.links import LinkStage
from workflows.service import ServiceStage

PREFIX = os.environ["FAILOVER_TEST_POISON"]


class PoisonError(RuntimeError):
    """The injected fault."""


_on_status = LinkStage.on_status
_apply = ServiceStage._apply


def on_status(self: LinkStage, link: str, event_id: str, *rest: Any) -> Any:
    if event_id.startswith(PREFIX):
        raise PoisonError(f"injected fault for {event_id}")
    return _on_status(self, link, event_id, *rest)


def apply(self: ServiceStage, service: str, state: Any, item: Any) -> None:
    if item.id.startswith(PREFIX):
        raise PoisonError(f"injected fault for {item.id}")
    _apply(self, service, state, item)


LinkStage.on_status = on_status  # type: ignore[method-assign]
ServiceStage._apply = apply  # type: ignore[method-assign]
