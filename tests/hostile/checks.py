"""What every run over the hostile corpus must satisfy, shared by the replay and Kafka runners:
the documented reason codes, text safe for a terminal, a dead letter's original bytes."""

from __future__ import annotations

import base64
import re
import unicodedata
from functools import cache
from typing import Any, Final

import orjson

from tests.hostile.corpus import FORGED, ROOT
from workflows.engine import INPUT_TYPES

#: Reason codes the fixes under way add; accepted before the README lists them.
NEW_CODES: Final = frozenset({"future-time", "unauthenticated-tick", "internal-error"})
#: Codes the README has listed all along: a parse that misses one is a broken parse.
_KNOWN: Final = frozenset({"not-json", "schema", "unknown-type", "not-applicable", "too-old"})

#: Characters that must never reach a terminal raw: C0 controls but the newline, DEL, C1
#: controls, and the bidirectional controls that make text display other than it reads.
_BIDI: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

#: What a notice must never carry from an operator: a tag a mail or web client would read
#: (escaped, ``&lt;script&gt;`` is text; no notice template has a tag of its own).
HTML_TAG: Final = re.compile(rb"<[A-Za-z/!?][^\s>]*")


@cache
def reason_codes() -> frozenset[str]:
    """The reason codes the README documents (its "Replay output and dead letters" section:
    every code in backquotes), and :data:`NEW_CODES`."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^#+ Replay output and dead letters\n(.*?)(?=^#)", text, re.M | re.S)
    assert match, "README.md has no section 'Replay output and dead letters'"
    codes = set(re.findall(r"`([a-z]+(?:-[a-z]+)*)`", match.group(1)))
    missing = _KNOWN - codes
    assert not missing, f"the README's reason codes lack {sorted(missing)}: parse it anew"
    return frozenset(codes | NEW_CODES)


def unsafe_characters(text: str) -> list[str]:
    """The characters of ``text`` a terminal must not get raw, as escapes (``\\x1b``)."""
    bad = set()
    for char in text:
        if char == "\n":
            continue
        if char in _BIDI or unicodedata.category(char) == "Cc":
            bad.add(char)
    return sorted(ascii(char)[1:-1] for char in bad)


def terminal_problems(what: str, data: bytes) -> list[str]:
    """Why ``data`` (what a terminal would show) is unsafe: not UTF-8, a raw control or bidi
    character, a line that starts with the forged marker."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [f"{what}: not UTF-8 ({exc})"]
    problems = []
    if bad := unsafe_characters(text):
        problems.append(f"{what}: raw control characters {', '.join(bad)}")
    forged = [line for line in text.splitlines() if line.lstrip().startswith(FORGED)]
    if forged:
        problems.append(f"{what}: {len(forged)} line(s) forged by input: {forged[0][:80]!r}")
    return problems


def deadletter_bytes(record: dict[str, Any]) -> bytes:
    """The original bytes of a replay dead letter: ``value`` as UTF-8, or base64 where the
    record says the value is base64 (any key naming base64, or an ``encoding`` of it)."""
    for key, value in record.items():
        if "base64" in key and isinstance(value, str):
            return base64.b64decode(value, validate=True)
    for key in ("encoding", "value_encoding", "content_encoding"):
        if record.get(key) == "base64":
            return base64.b64decode(record["value"], validate=True)
    value = record["value"]
    assert isinstance(value, str), f"dead letter value is {type(value).__name__}"
    return value.encode("utf-8")


def is_input(raw: bytes) -> bool:
    """Could this line be an input at all: a JSON object of one of the input types? Lines
    that cannot must be dead-lettered whatever their role."""
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return isinstance(event, dict) and event.get("type") in INPUT_TYPES


def event_id(raw: bytes) -> str:
    event = orjson.loads(raw)
    assert isinstance(event, dict)
    return str(event["id"])


def code_of(reason: str) -> str:
    return reason.split(":", 1)[0]
