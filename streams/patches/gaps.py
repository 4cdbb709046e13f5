"""Offset gaps: committed offsets keep up across transaction markers.

Patches ``Consumer._add_gap`` of faust-streaming 0.15.3 (faust/transport/consumer.py). Its
one caller (``Consumer._drain_messages``, faust/transport/consumer.py:1215) passes the offset
of the record that *ends* the gap as ``offset_to``, and ``_add_gap`` includes it. That record
is then acked twice, ``_new_offset`` stops at the repeat, and on topics written in
transactions (their commit markers leave a gap before every batch) committed offsets fall
behind what was processed: by some 21,000 records in bench/kafka.py. After a crash those
inputs would be handled a second time. :func:`_add_gap_before` adds the offsets *between*
the two records only.

The engine's own topics take the batch path (:mod:`.batch_path`), which keeps no gaps; this
fixes faust's per-record path, which the batch path still takes for a topic with no handler
(:func:`streams.batches._one_by_one`), and any other faust app of the process.

Proved by tests/test_faust_gap.py (records at 0-2, 4-6, 8-9 commit 10). Upstream: clean, the
caller's off-by-one (docs/upstream/faust-gaps.diff). Related report, open:
https://github.com/faust-streaming/faust/issues/606 (wrong commit with gaps).
"""

from __future__ import annotations

from typing import Any

from streams.patches import _fence

__all__ = ["install"]

_original: Any = None


async def _add_gap_before(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
    """``Consumer._add_gap`` for the offsets *between* two records only."""
    await _original(self, tp, offset_from, offset_to - 1)


def install() -> None:
    """Put :func:`_add_gap_before` in place (idempotent)."""
    global _original
    from faust.transport.consumer import Consumer

    _original = _fence.replace(Consumer, "_add_gap", _add_gap_before, __name__)
