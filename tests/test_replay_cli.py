"""``failover replay`` streams in bounded memory, and shows nothing of an input as anything
but text: long lines are never read whole, the timeline is a bounded summary, and markup,
escape sequences, control and bidirectional characters from an input are shown inert."""

from __future__ import annotations

import logging
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from streams.app import FailoverApp
from streams.cli import app
from streams.codec import Origin as KafkaOrigin
from streams.config import Settings
from streams.partitions import Routing
from streams.printable import printable
from streams.timeline import KEEP, Timeline
from workflows.records import DeadLetter, Emitted, Truncated, cloudevent
from workflows.replay import Origin, encode, read_lines, replay
from workflows.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY_PATH = ROOT / "streams" / "demo" / "ambon.yaml"
TOPOLOGY = Topology.load(TOPOLOGY_PATH)

HOSTILE = "x[/zzz] [bold]b[/] \x1b[31mred\x1b]0;title\x07 \r\nforged: line \u202etxt.exe \x00"


def event(type_: str, subject: str, data: dict[str, Any], ident: str = "e1") -> bytes:
    return orjson.dumps({"specversion": "1.0", "id": ident, "source": "/test", "type": type_,
                         "time": "2019-02-05T00:00:00Z", "subject": subject,
                         "data": data})  # fmt: skip


# -- reading lines -------------------------------------------------------------------------


def test_a_line_longer_than_the_limit_comes_truncated_with_its_length(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    long = b"{" + b"x" * 9_998 + b"}"
    path.write_bytes(b"a\n" + long + b"\r\n  \n" + b" " * 5_000 + b"\n" + b"b" * 100 + b"\nc")
    lines = list(read_lines(path, max_bytes=100))
    assert [n for n, _ in lines] == [1, 2, 5, 6]
    assert lines[0][1] == b"a"
    cut = lines[1][1]
    assert isinstance(cut, Truncated)
    assert (cut.length, bytes(cut)) == (10_000, long[:101])
    assert lines[2][1] == b"b" * 100  # exactly the limit: whole
    assert not isinstance(lines[2][1], Truncated)
    assert lines[3][1] == b"c"  # the last line, without a newline


@given(st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")), max_size=8))
def test_read_lines_gives_every_short_line_whole_and_every_long_one_cut(
    lines: list[bytes],
) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "e.jsonl"
        path.write_bytes(b"\n".join(lines))
        got = list(read_lines(path, max_bytes=64))
    want = [
        (n, line.rstrip(b"\r")) for n, line in enumerate(lines, 1) if line.rstrip(b"\r").strip()
    ]
    assert [n for n, _ in got] == [n for n, _ in want]
    for (_, raw), (_, line) in zip(got, want, strict=True):
        if len(line) > 64:
            assert isinstance(raw, Truncated)
            assert raw.length == len(line)
            assert bytes(raw) == line[:65]
        else:
            assert raw == line


def test_a_huge_line_is_read_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as f:
        f.write(event("clock.tick.v1", "x", {})[:-1] + b',"pad":"')
        for _ in range(40):
            f.write(b"y" * (1 << 20))
        f.write(b'"}\n')
    tracemalloc.start()
    try:
        out = list(replay(TOPOLOGY, read_lines(path), path.name))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (dead,) = out
    assert isinstance(dead, DeadLetter)
    assert dead.reason.startswith("too-large: 41943")
    assert "truncated" in dead.reason
    assert len(dead.raw) == 64 * 1024 + 1
    assert peak < 8 << 20, peak  # a 40 MB line, a few MB at most


def test_a_long_line_that_starts_with_a_valid_event_is_not_applied(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    valid = event("operator.override.v1", "ektp",
                  {"action": "pin", "actor": "a", "role": "r", "reason": "x"})  # fmt: skip
    path.write_bytes(valid + b" " * 70_000 + b"\n")
    (dead,) = list(replay(TOPOLOGY, read_lines(path), path.name))
    assert isinstance(dead, DeadLetter)
    assert dead.reason.startswith(f"too-large: {len(valid) + 70_000} bytes")


# -- the timeline --------------------------------------------------------------------------


def _transition(service: str, n: int, detail: str = "d") -> Emitted:
    data = {"service": service, "site": "s", "incident": "i", "from": "online",
            "to": "degraded", "reason": "r", "detail": detail, "cause": "c"}  # fmt: skip
    return Emitted("service-transitions", service, cloudevent(
        "failover.transition.v1", f"t{n}", "s", n * 1_000_000, service, data))  # fmt: skip


def _notice(service: str, n: int) -> Emitted:
    data = {"service": service, "site": "s", "incident": "i", "audience": "staff",
            "template": "degraded-staff", "text": {}}  # fmt: skip
    return Emitted("failover-commands", service, cloudevent(
        "failover.notice.v1", f"n{n}", "s", n * 1_000_000, service, data))  # fmt: skip


def _render(timeline: Timeline) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    timeline.print(console)
    console.file.close()
    return console.export_text()


def test_the_timeline_keeps_both_ends_of_a_long_run() -> None:
    timeline = Timeline(TOPOLOGY)
    n = 20_000
    for i in range(n):
        timeline.add(_transition("ektp", i))
        for _ in range(30):
            timeline.add(_notice("ektp", i))
        timeline.add(DeadLetter("k", f"schema: {i}", b"x" * 1000, Origin("f", i)))
    rows = timeline._rows["ektp"]
    assert len(rows.head) == KEEP
    assert len(rows.tail) == KEEP
    assert rows.skipped == n - 2 * KEEP
    assert all(len(r.commands) <= 12 for r in [*rows.head, *rows.tail])
    assert len(timeline.dead.head) + len(timeline.dead.tail) == 2 * KEEP
    assert all(d.raw == b"" for d in timeline.dead.head)
    text = _render(timeline)
    assert f"{n - 2 * KEEP} rows not shown" in text
    assert f"{(n - 2 * KEEP) * 31} transitions and commands" in text
    assert "… 18 more" in text
    assert f"{n} transitions" in text
    assert f"{n - 2 * KEEP} not shown" in text


def test_the_timeline_shows_input_text_inert() -> None:
    timeline = Timeline(TOPOLOGY)
    timeline.add(_transition("ektp", 1, detail=HOSTILE))
    timeline.add(DeadLetter("k", f"unknown-service: {HOSTILE}", b"", Origin("f[/x]", 3)))
    text = _render(timeline)
    assert "x[/zzz] [bold]b[/]" in text
    for bad in ("\x1b", "\r", "\u202e", "\x00", "\x07"):
        assert bad not in text
    assert "\\x1b[31mred" in text
    assert "\\u202etxt.exe" in text
    assert "forged: line" not in text.split("\n")[0]


@given(st.text(max_size=60))
def test_any_subject_or_reason_prints_without_raising(value: str) -> None:
    timeline = Timeline(TOPOLOGY)
    timeline.add(_transition("ektp", 1, detail=value))
    timeline.add(DeadLetter(value, value, b"", Origin(value, 1)))
    text = _render(timeline)
    assert "\x1b" not in text


def test_replay_cli_with_a_hostile_file(tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    lines = [
        event("operator.override.v1", HOSTILE,
              {"action": "pin", "actor": "a", "role": "r", "reason": "x"}),
        event("reconcile.completed.v1", "surat-pindah",
              {"record_ids": ["r"], "incident": HOSTILE}, "e2"),
        b"{\"type\": \"" + HOSTILE.encode() + b"\"}",
    ]  # fmt: skip
    events.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["replay", str(TOPOLOGY_PATH), str(events), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    assert "\u202e" not in result.output
    assert "x[/zzz]" in result.output
    records = [orjson.loads(line) for line in out.read_bytes().split(b"\n")[:-1]]
    codes = {r["reason"].split(":")[0] for r in records if r["topic"] == "failover-deadletter"}
    assert codes == {"unknown-service", "not-json", "not-applicable"}


def test_quiet_builds_no_timeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Timeline, record: Any) -> None:
        raise AssertionError("the timeline was built")

    monkeypatch.setattr(Timeline, "add", refuse)
    out = tmp_path / "out.jsonl"
    demo = ROOT / "streams" / "demo" / "ambon-events.jsonl"
    result = CliRunner().invoke(
        app, ["replay", str(TOPOLOGY_PATH), str(demo), "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    want = b"".join(encode(r) + b"\n" for r in replay(TOPOLOGY, read_lines(demo), demo.name))
    assert out.read_bytes() == want


# -- logs ----------------------------------------------------------------------------------


def test_a_dead_letter_reason_cannot_forge_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings()
    record = Routing(settings).dead(b"k", f"not-applicable: incident {HOSTILE}", b"v",
                                    KafkaOrigin("t", 0, 1))  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="streams.app"):
        FailoverApp._log_dead(SimpleNamespace(settings=settings), [record])  # type: ignore[arg-type]
    (message,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in message
    assert "\r" not in message
    assert "\x1b" not in message
    assert "\\r\\nforged: line" in message


def test_printable_escapes_controls_and_bidi_and_bounds_length() -> None:
    assert printable("a\nb\x1b\u202e\u2066c\x85") == "a\\nb\\x1b\\u202e\\u2066c\\x85"
    assert printable("é 中 ok") == "é 中 ok"
    assert printable("x" * 20, 5) == "xxxxx... (20 characters)"


def test_trace_lines_show_input_text_inert(tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    pin = {"action": "pin", "actor": "a", "role": "r", "reason": "x"}
    events.write_bytes(event("operator.override.v1", HOSTILE, pin) + b"\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        app, ["replay", str(TOPOLOGY_PATH), str(events), "--out", str(out), "--trace", "-q"]
    )
    assert result.exit_code == 0, result.output
    assert "x[/zzz]" in result.output  # the span line is there
    assert "\x1b" not in result.output
    assert "\u202e" not in result.output
    assert not any(line.startswith("forged") for line in result.output.splitlines())
