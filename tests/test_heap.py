"""``streams.app.settle_heap``: the heap is frozen out of the cyclic collector's walks, and
what a later rebalance dropped is collected then, not kept for ever."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streams.app import settle_heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_frozen_state_is_not_walked_and_dropped_state_is_freed_at_the_next_settle() -> None:
    state = Node()
    alive = weakref.ref(state)
    settle_heap()
    assert gc.get_freeze_count() > 0
    del state  # the partition was revoked: its stage is garbage now
    gc.collect()
    assert alive() is not None  # frozen: a full collection does not even look at it
    settle_heap()  # the next rebalance
    assert alive() is None
