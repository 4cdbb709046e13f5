"""Replay's JSONL output keeps a dead letter's original bytes exactly: as ``value`` when the
line is UTF-8 text, as ``value_base64`` when it is not; never altered by a lossy decode."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import load_schema
from workflows.records import DEADLETTER, DeadLetter
from workflows.replay import Origin, encode, read_lines, replay
from workflows.topology import Topology

TOPOLOGY = Path(__file__).parent / "data" / "design-topology.yaml"
SCHEMA = jsonschema_rs.validator_for(load_schema("deadletter"))


def original(line: dict[str, Any]) -> bytes:
    """The bytes a dead-letter line says the input was."""
    if "value" in line:
        assert "value_base64" not in line
        text = line["value"]
        assert isinstance(text, str)
        return text.encode("utf-8")
    return base64.b64decode(line["value_base64"], validate=True)


@settings(max_examples=300)
@given(st.binary(max_size=200) | st.text(max_size=60).map(lambda t: t.encode("utf-8")))
def test_any_bytes_round_trip_through_a_dead_letter_line(raw: bytes) -> None:
    line = orjson.loads(encode(DeadLetter(None, "not-json: x", raw, Origin("in.jsonl", 3))))
    SCHEMA.validate(line)
    assert original(line) == raw
    # Valid UTF-8 stays readable text (what consumers of the old format read).
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        assert "value" not in line
    else:
        assert line["value"] == text


def test_a_line_that_is_not_utf8_is_dead_lettered_with_its_bytes(tmp_path: Path) -> None:
    """End to end: a replayed file with a Latin-1 line, a lone surrogate encoded in UTF-8
    (CESU) and a truncated sequence: each dead letter gives back its line byte for byte."""
    lines = [
        b'{"specversion": "1.0", "id": "caf\xe9"}',
        b'{"note": "\xed\xa0\x80"}',
        b"\xe2\x82",
        b'{"ok": "\xe2\x82\xac but not an event"}',
    ]
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    records = list(replay(Topology.load(TOPOLOGY), read_lines(events), events.name))
    dead = [orjson.loads(encode(r)) for r in records if isinstance(r, DeadLetter)]
    assert [d["source"]["line"] for d in dead] == [1, 2, 3, 4]
    for line, raw in zip(dead, lines, strict=True):
        assert line["topic"] == DEADLETTER
        SCHEMA.validate(line)
        assert original(line) == raw
    assert "value_base64" in dead[0]
    assert dead[3]["value"] == '{"ok": "\u20ac but not an event"}'
