"""The attacks on the clock, replayed through ``failover replay`` on the Ambon demo.

A replay file is trusted: a reading dated 2030 in it is read (on Kafka it is dead-lettered
``future-time``: tests/kafka/test_clock.py), but the jump of the clock is reported with its
line, on stderr and at the end of the timeline, and the outputs are what they would be
without the report. Times the engine cannot handle are dead-lettered, and the run goes on.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson

from tests.helpers import failover
from workflows.records import DeadLetter, Emitted
from workflows.replay import encode, read_lines, replay
from workflows.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "streams" / "demo" / "ambon.yaml"
EVENTS = ROOT / "streams" / "demo" / "ambon-events.jsonl"

#: One ``up`` reading of the Ambon exchange's link, from a probe whose clock says 2030.
SPOOF = orjson.dumps(
    {
        "specversion": "1.0",
        "id": "probe/evil/1",
        "source": "/probe/evil",
        "type": "link.status.v1",
        "time": "2030-01-01T00:00:00Z",
        "subject": "telkom-sto-pattimura",
        "data": {"status": "up", "latency_ms": 1.0, "loss_pct": 0.0},
    }
)
#: The demo's line after which the spoof is inserted: before the outage begins.
AFTER = 100


def with_line(path: Path, line: bytes, after: int = AFTER) -> None:
    lines = [raw for _, raw in read_lines(EVENTS)]
    lines.insert(after, line)
    path.write_bytes(b"".join(raw + b"\n" for raw in lines))


def counted(path: Path) -> Counter[str]:
    kinds: Counter[str] = Counter()
    for record in replay(Topology.load(TOPOLOGY), read_lines(path), path.name):
        if isinstance(record, Emitted):
            kinds[record.event["type"]] += 1
        else:
            assert isinstance(record, DeadLetter)
            kinds[record.reason.split(":", 1)[0]] += 1
    return kinds


def test_a_spoofed_reading_in_a_file_is_read_but_the_jump_is_reported(tmp_path: Path) -> None:
    events = tmp_path / "spoofed.jsonl"
    with_line(events, SPOOF)
    out = tmp_path / "out.jsonl"
    result = failover("replay", TOPOLOGY, events, "--out", out)
    assert result.returncode == 0, result.stderr
    stderr = result.stderr.decode()
    warning = (
        f"warning: spoofed.jsonl:{AFTER + 1}: the clock jumps 3983 days 1 h ahead, to "
        "2030-01-01T00:00:00Z from 2019-02-04T22:55:00Z (more than max_clock_jump)"
    )
    assert warning in stderr, stderr
    assert stderr.count("warning:") == 1
    # ... and at the end of the timeline (printed to stdout when --out is given).
    timeline = result.stdout.decode()
    assert "clock jumps (reported, not refused: a file is trusted)" in timeline
    assert f"spoofed.jsonl:{AFTER + 1}: the clock jumps" in timeline
    # The file is trusted: the spoof hides the outage (what max_future prevents on Kafka),
    # and the report changes no output.
    expected = b"".join(
        encode(r) + b"\n" for r in replay(Topology.load(TOPOLOGY), read_lines(events), events.name)
    )
    assert out.read_bytes() == expected
    assert counted(events)["failover.transition.v1"] == 3
    assert counted(EVENTS)["failover.transition.v1"] == 20


def test_the_demo_has_no_jump_and_quiet_still_warns(tmp_path: Path) -> None:
    result = failover("replay", TOPOLOGY, EVENTS, "--out", tmp_path / "out.jsonl", "--quiet")
    assert result.returncode == 0
    assert b"warning" not in result.stderr
    events = tmp_path / "spoofed.jsonl"
    with_line(events, SPOOF)
    result = failover("replay", TOPOLOGY, events, "--out", tmp_path / "out.jsonl", "--quiet")
    assert result.returncode == 0
    assert result.stderr.count(b"warning: spoofed.jsonl:") == 1
    assert result.stdout == b""


def test_a_tick_in_year_10000_is_dead_lettered_and_the_run_ends_well(tmp_path: Path) -> None:
    """It ended the run with rc=1 and no output (OverflowError when written out)."""
    tick = orjson.dumps(
        {
            "specversion": "1.0",
            "id": "tick/forged",
            "source": "/evil",
            "type": "clock.tick.v1",
            "time": "9999-12-31T23:59:59-23:59",
        }
    )
    events = tmp_path / "overflow.jsonl"
    with_line(events, tick)
    out = tmp_path / "out.jsonl"
    result = failover("replay", TOPOLOGY, events, "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    [dead] = [line for line in lines if str(line.get("reason")).startswith("bad-time")]
    assert dead["reason"].startswith("bad-time: '9999-12-31T23:59:59-23:59' is outside")
    assert dead["source"]["line"] == AFTER + 1
    kinds = counted(events)
    assert kinds["failover.transition.v1"] == 20
    assert kinds["bad-time"] == 1
