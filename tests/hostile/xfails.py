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
KAFKA: Final[dict[str, str]] = {}
