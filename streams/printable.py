"""Text from an input, made safe to show a person: nothing in it is obeyed.

An event's subject, an operator's reason, a dead letter's reason (which quotes the input)
can hold anything: a newline that starts a forged log line, a carriage return that
overwrites one, an escape sequence the terminal obeys, a right-to-left override that shows
``exe.txt`` for ``txt.exe``. :func:`printable` shows each such character as its Python
escape (``\\n``, ``\\x1b``, ``\\u202e``) and bounds the length. Rich markup is a separate
matter: the timeline hands rich :class:`~rich.text.Text` objects, never markup strings.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

__all__ = ["printable"]

#: Characters shown escaped: C0 and C1 controls, DEL, and the Unicode format characters
#: (category Cf: bidirectional overrides and isolates, zero-width joiners, BOM, ...).
_UNSAFE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f"
    + "".join(
        re.escape(chr(c)) for c in range(0xA0, 0x110000) if unicodedata.category(chr(c)) == "Cf"
    )
    + "\u2028\u2029]"
)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return repr(char)[1:-1] if char != "'" else char


def printable(text: object, limit: int | None = 1000) -> str:
    """``text`` with every control and format character escaped, at most ``limit``
    characters of it (then ``...`` and how many there were)."""
    value = str(text)
    if limit is not None and len(value) > limit:
        value = f"{value[:limit]}... ({len(value)} characters)"
    return _UNSAFE.sub(_escape, value)
