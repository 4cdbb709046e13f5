"""The corpus cases that fail today, and what breaks: the one list to edit as fixes merge.

Each entry marks its case ``xfail(strict=True)``: the suite stays green while the fault is
there, and turns red the moment a fix makes the case pass, so the entry must be removed
with the fix. Keys are case names (the corpus file's name without its suffix).
"""

from __future__ import annotations

from typing import Final

#: tests/hostile/test_replay.py: event files (``events/NAME``) and topologies (``topology/NAME``).
REPLAY: Final[dict[str, str]] = {}

#: tests/hostile/test_kafka.py: event files published to a real broker, and ``wire-records``
#: (records only Kafka can carry: no value, no key, hostile headers, the wrong topic).
KAFKA: Final[dict[str, str]] = {
    "tick-far-future-utc": "a stranger's 9999 tick is applied: later inputs dead-lettered too-old",
    "tick-overflow-offset": "OverflowError on the -23:59 tick: the worker exits",
    "spoofed-up-reading-in-ambon": "a reading dated 2099 is applied and hides the outage",
    "flood-records-to-online-only": "a 5.3 MB record of remembered ids refused: the worker exits",
    "flood-paper-records-then-release": "a 7.1 MB record refused (8,500 ids): the worker exits",
    "newlines-in-fields": "a reason's newline starts a forged line of the worker's log",
    "html-in-operator-reason": "an operator's HTML goes unescaped into the pin notice",
    "deep-nesting": "jsonschema-rs 'Recursion limit reached' (ValueError): the worker exits",
    "duplicate-keys": "a reading whose second time key says 9999 is applied, not refused",
    "wire-records": "reason code wrong-topic is used on Kafka, but not in the README's list",
}
