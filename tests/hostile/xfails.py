"""The corpus cases that fail today, and what breaks: the one list to edit as fixes merge.

Each entry marks its case ``xfail(strict=True)``: the suite stays green while the fault is
there, and turns red the moment a fix makes the case pass, so the entry must be removed
with the fix. Keys are case names (the corpus file's name without its suffix).
"""

from __future__ import annotations

from typing import Final

#: tests/hostile/test_replay.py: event files (``events/NAME``) and topologies (``topology/NAME``).
REPLAY: Final[dict[str, str]] = {
    "events/tick-overflow-offset": "OverflowError in timeutil._utc: exit 1, no output",
    "events/times-at-year-edges": "OverflowError formatting a 9999 time for a notice: exit 1",
    "events/not-utf8": "dead letters of non-UTF-8 lines decoded with 'replace': bytes altered",
    "events/nul-bytes": "an escaped NUL in an operator's reason reaches the timeline raw",
    "events/rich-markup-in-fields": "rich MarkupError on '[/zzz]' in the timeline: exit 1",
    "events/ansi-escapes-in-fields": "ESC and C1 CSI from an operator's reason reach the timeline",
    "events/bidi-controls-in-fields": "bidi overrides from an operator's reason reach the timeline",
    "events/html-in-operator-reason": "an operator's HTML goes unescaped into the pin notice",
    "events/deep-nesting": "jsonschema-rs 'Recursion limit reached' (ValueError): exit 1",
    "topology/recursive-alias": "ValueError (Recursion limit reached) traceback, exit 1",
    "topology/alias-bomb": "unbounded aliases: killed at the 1 GiB limit (5.6 GB without it)",
    "topology/timezone-directory": "IsADirectoryError traceback, exit 1",
    "topology/flap-threshold-float": "flap_threshold: 2.0 accepted (exit 0)",
    "topology/duration-past-64-bits": "stale_after: 300000000d accepted (exit 0)",
    "topology/duplicate-service-keys": "the second 'ektp' silently replaces the first (exit 0)",
    "topology/duplicate-service-keys-json": "JSON: the second 'ektp' silently wins (exit 0)",
    "topology/huge-scalar-in-error": "OSError (file name too long) traceback of 2 MB, exit 1",
    "topology/markup-in-names": "rich MarkupError on '[/zzz]' in a site name: exit 1",
    "topology/not-utf8": "UnicodeDecodeError traceback, exit 1",
}

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
