"""The fence: the one way a patch replaces an attribute of faust or aiokafka, and the record
of every attribute replaced.

:func:`replace` puts a replacement in place once (a second call with the same replacement is
a no-op, a different one is refused: two patches of one attribute would hide each other) and
returns what was there before, for the replacement to call. :func:`add_filter` does the same
for a filter on one of their loggers. :func:`installed` lists both, so that a test can check
that every patch is in place exactly once (tests/test_patches.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

__all__ = ["Replaced", "add_filter", "installed", "replace"]


@dataclass(frozen=True)
class Replaced:
    """One attribute of faust or aiokafka replaced by a patch (or one filter added to a
    logger of theirs: ``name`` is then ``"filters"`` and ``original`` is ``None``)."""

    owner: Any
    name: str
    original: Any
    replacement: Any
    #: The module of :mod:`streams.patches` the patch belongs to.
    concern: str

    @property
    def where(self) -> str:
        """``module.Class.attribute`` (or ``module.attribute``, ``logger name: Filter``)."""
        owner = self.owner
        if isinstance(owner, logging.Logger):
            return f"logger {owner.name}: {type(self.replacement).__name__}"
        if isinstance(owner, type):
            return f"{owner.__module__}.{owner.__qualname__}.{self.name}"
        return f"{getattr(owner, '__name__', owner)!s}.{self.name}"


#: Every replacement made in this process, by (owner, attribute name).
_REPLACED: dict[tuple[Any, str], Replaced] = {}
#: Every filter added in this process, by (logger, filter).
_FILTERS: dict[tuple[logging.Logger, logging.Filter], Replaced] = {}


def replace(owner: Any, name: str, replacement: Any, concern: str) -> Any:
    """Put ``replacement`` at ``owner.name`` (a class or a module of faust or aiokafka), once;
    return the attribute it replaced.

    Raises:
        RuntimeError: another patch replaced that attribute already, or something outside
            the fence did (the attribute is not what the fence put there).
    """
    done = _REPLACED.get((owner, name))
    if done is not None:
        if done.replacement is not replacement:
            raise RuntimeError(f"{done.where} is patched by {done.concern} already")
        if getattr(owner, name) is not replacement:
            raise RuntimeError(f"{done.where} was replaced outside streams.patches")
        return done.original
    original = getattr(owner, name)
    if original is replacement:  # pragma: no cover - only the fence puts it there
        raise RuntimeError(f"{owner!r}.{name} is patched outside streams.patches")
    setattr(owner, name, replacement)
    _REPLACED[(owner, name)] = Replaced(owner, name, original, replacement, concern)
    return original


def add_filter(logger: logging.Logger, quiet: logging.Filter, concern: str) -> None:
    """Add ``quiet`` to ``logger`` (one of faust's or aiokafka's), once."""
    if (logger, quiet) not in _FILTERS:
        _FILTERS[(logger, quiet)] = Replaced(logger, "filters", None, quiet, concern)
    if quiet not in logger.filters:
        logger.addFilter(quiet)


def installed() -> list[Replaced]:
    """Every replacement and filter the fence made in this process, in order."""
    return [*_REPLACED.values(), *_FILTERS.values()]
