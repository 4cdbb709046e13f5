"""Piped (not a terminal), nothing the command line prints is cut or wrapped at 80 columns:
the timeline's rows and every error are whole lines."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from streams.cli import app
from tests.helpers import failover

RUNNER = CliRunner()


def test_a_piped_timeline_keeps_each_row_whole(tmp_path: Path) -> None:
    result = RUNNER.invoke(app, ["demo", "--out", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0
    why = (
        "operator-force-manual: forced to manual by Plt. Kepala Dinas (acting-head): Jaringan "
        "lambat lalu putus; jangan dipaksakan. Network slow then dropping."
    )
    rows = [line for line in result.stdout.splitlines() if why in line]
    assert rows  # whole, on one line
    assert all("…" not in row for row in rows)
    assert any(len(line) > 80 for line in result.stdout.splitlines())


def test_a_long_error_is_one_line(tmp_path: Path) -> None:
    long_id = "a-service-whose-name-goes-on-" + "and-on-" * 12
    topology = tmp_path / "t.yaml"
    topology.write_text(f"sites: {{}}\nlinks: {{}}\nservices:\n  {long_id}:\n    site: x\n")
    events = tmp_path / "e.jsonl"
    events.write_text("")
    result = RUNNER.invoke(app, ["replay", str(topology), str(events)])
    assert result.exit_code == 2
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert long_id in line
    assert len(line) > 80


def test_a_piped_usage_error_is_one_plain_line() -> None:
    value = "a-value-much-longer-than-eighty-columns-" * 3
    done = failover("replay", "--clock", value, "t.yaml", "e.jsonl", columns=80)
    assert done.returncode == 2
    lines = done.stderr.decode().splitlines()
    (error,) = [line for line in lines if value in line]
    assert error.startswith("Error: Invalid value for '--clock'")
    assert "╭" not in done.stderr.decode()
