"""``-`` reads a file from standard input, in every command that reads one."""

from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from streams.cli import app
from tests.kafka.workers import DEMO_EVENTS, DEMO_TOPOLOGY

RUNNER = CliRunner()


def test_replay_reads_events_from_stdin_as_from_the_file(tmp_path: Path) -> None:
    by_file, by_stdin = tmp_path / "file.jsonl", tmp_path / "stdin.jsonl"
    args = ["replay", str(DEMO_TOPOLOGY)]
    one = RUNNER.invoke(app, [*args, str(DEMO_EVENTS), "--quiet", "--out", str(by_file)])
    two = RUNNER.invoke(
        app, [*args, "-", "--quiet", "--out", str(by_stdin)], input=DEMO_EVENTS.read_bytes()
    )
    assert (one.exit_code, two.exit_code) == (0, 0)
    expected = by_file.read_bytes().replace(b'"file":"ambon-events.jsonl"', b'"file":"<stdin>"')
    assert by_stdin.read_bytes() == expected
    assert b'"file":"<stdin>"' in expected  # the demo has dead letters: they name stdin


def test_replay_reads_the_topology_from_stdin(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = RUNNER.invoke(
        app,
        ["replay", "-", str(DEMO_EVENTS), "--quiet", "--out", str(out)],
        input=DEMO_TOPOLOGY.read_bytes(),
    )
    assert result.exit_code == 0, result.output
    lines = out.read_bytes().splitlines()
    assert any(orjson.loads(line)["topic"] == "service-transitions" for line in lines)


def test_what_if_reads_events_from_stdin() -> None:
    result = RUNNER.invoke(
        app,
        ["what-if", str(DEMO_TOPOLOGY), "-", "--set", "policy.restore_after=30m", "--json"],
        input=DEMO_EVENTS.read_bytes(),
    )
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.stdout)
    assert data["services"]  # the later restoration changes something
    itself = RUNNER.invoke(
        app, ["what-if", str(DEMO_TOPOLOGY), str(DEMO_TOPOLOGY), "-"],
        input=DEMO_EVENTS.read_bytes(),
    )  # fmt: skip
    assert itself.exit_code == 0
    assert "no change" in itself.stdout


def test_only_one_file_can_be_stdin() -> None:
    result = RUNNER.invoke(app, ["replay", "-", "-"], input=b"")
    assert result.exit_code == 2
    assert "only one file can be - (standard input)" in result.output
