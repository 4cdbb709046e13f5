"""faust's offset gaps, patched by streams.patches.gaps: committed offsets keep up across the commit
markers of transactional topics. No broker needed: the consumer's bookkeeping alone."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer
from intervaltree import IntervalTree

from streams import patches


def committable(offsets: list[int]) -> list[int | None]:
    """Ack ``offsets`` as faust's drain loop does (a gap before every jump); the offset a
    commit would write after each acked record."""
    tp = ("changes", 0)
    consumer = SimpleNamespace(
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None),
    )
    consumer._committed_offset[tp] = 0
    seen: list[int | None] = []

    async def run() -> None:
        last = None
        for offset in offsets:
            if last is not None and offset - last > 1:
                await Consumer._add_gap(consumer, tp, last + 1, offset)  # as faust calls it
            last = offset
            consumer._acked[tp].append(offset)
            consumer._acked_index[tp].add(offset)
        seen.append(Consumer._new_offset(consumer, tp))

    asyncio.run(run())
    return seen


def test_commit_covers_every_record_after_transaction_markers() -> None:
    patches.install()
    # Records at 0-2, 4-6, 8-9: offsets 3 and 7 are commit markers.
    assert committable([0, 1, 2, 4, 5, 6, 8, 9]) == [10]


def test_the_commit_log_table_is_built_only_when_written(monkeypatch: Any) -> None:
    import faust.transport.consumer as consumer_module
    from faust.utils import terminal

    patches.install()
    rows = [("changes-0", "12")]
    headers = ["TP", "Offset"]
    expected = terminal.logtable(rows, title="Commit Offsets", headers=headers)
    built: list[int] = []
    real = terminal.logtable

    def counting(*args: Any, **kwargs: Any) -> str:
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(terminal, "logtable", counting)
    table = consumer_module.terminal.logtable(rows, title="Commit Offsets", headers=headers)
    assert built == []  # faust's commit computes it for a log.dev line nobody writes
    assert logging.LogRecord("x", logging.INFO, "", 0, "%s", (table,), None).getMessage() == (
        expected
    )
    assert built == [1]
