"""The progress line of a long replay: on stderr, only on a terminal or when asked."""

from __future__ import annotations

import io
from pathlib import Path

from typer.testing import CliRunner

from streams.cli import app
from streams.progress import Progress
from tests.kafka.workers import DEMO_EVENTS, DEMO_TOPOLOGY


def _lines(n: int) -> list[tuple[int, bytes]]:
    return [(i, b"x" * 99) for i in range(1, n + 1)]


def test_on_a_terminal_the_line_is_rewritten_then_wiped() -> None:
    out = io.StringIO()
    meter = Progress("replay f", 100 * 10_000, out, terminal=True)
    meter._next = 0.0  # due at once
    assert list(meter.watch(_lines(10_000))) == _lines(10_000)
    meter.done()
    text = out.getvalue()
    assert text.startswith("\r\x1b[2Kreplay f: 4,096 lines, 0 MB (41%), ")
    assert "\n" not in text
    assert text.endswith("\r\x1b[2K")  # wiped: the timeline follows


def test_piped_each_update_is_a_line_and_the_total_ends_it() -> None:
    out = io.StringIO()
    meter = Progress("replay f", 0, out, terminal=False)
    list(meter.watch(_lines(5000)))
    meter.done()
    (line,) = out.getvalue().splitlines()  # too quick for an update: the total alone
    assert line.startswith("replay f: 5,000 lines, 0 MB, ")
    assert line.endswith(" (done)")


def test_replay_says_nothing_unless_asked_when_not_on_a_terminal(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["replay", str(DEMO_TOPOLOGY), str(DEMO_EVENTS), "-q", "-o", str(tmp_path / "o")]
    quiet = runner.invoke(app, args)
    asked = runner.invoke(app, [*args, "--progress"])
    assert (quiet.exit_code, asked.exit_code) == (0, 0)
    assert quiet.stderr == ""
    assert "replay ambon-events.jsonl: 6,116 lines" in asked.stderr
    assert (tmp_path / "o").stat().st_size > 0
    what_if = runner.invoke(
        app, ["what-if", str(DEMO_TOPOLOGY), str(DEMO_EVENTS), "--set",
              "policy.restore_after=30m", "--progress"],
    )  # fmt: skip
    assert what_if.exit_code == 0
    assert "what-if A ambon-events.jsonl: 6,116 lines" in what_if.stderr
    assert "what-if B ambon-events.jsonl: 6,116 lines" in what_if.stderr
