"""The commit's log table, built only if its line is written.

Patches ``faust.transport.consumer.terminal`` (faust-streaming 0.15.3). ``Consumer.
_commit_offsets`` (faust/transport/consumer.py:1039-1047) renders every commit's offsets as a
terminal table for a ``log.dev`` line that is almost never written: 3.7% of an idle worker's
busy samples at 6 partitions (py-spy; a commit per tick). The module's ``terminal`` becomes
:class:`_LazyTerminal`, whose ``logtable`` returns :class:`_LazyTable`: rendered by ``str``,
that is when a handler formats the line.

Proved by tests/test_faust_gap.py (``test_the_commit_log_table_is_built_only_when_written``).
Upstream: clean in spirit, though faust would rather not build the table unless the log level
is on (docs/upstream/faust-commit-log.diff does that, with no module swapped).
"""

from __future__ import annotations

from typing import Any

from streams.patches import _fence

__all__ = ["install"]


class _LazyTable:
    """What ``terminal.logtable`` returns, built only if the log line is written."""

    __slots__ = ("_args", "_kwargs")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args = args
        self._kwargs = kwargs

    def __str__(self) -> str:
        from faust.utils import terminal

        return str(terminal.logtable(*self._args, **self._kwargs))


class _LazyTerminal:
    """``faust.utils.terminal`` as ``faust.transport.consumer`` uses it (only ``logtable``)."""

    logtable = _LazyTable


def install() -> None:
    """Put :class:`_LazyTerminal` in place (idempotent)."""
    import faust.transport.consumer as consumer_module

    _fence.replace(consumer_module, "terminal", _LazyTerminal, __name__)
