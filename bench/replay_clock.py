"""Benchmark of a recording's clock: replay by ticks, by event time, and what-if.

Not a test: a script that prints one table from one run::

    .venv/bin/python bench/replay_clock.py [--events N] [--sites N]

Writes a topology (``--sites`` sites of 10 services: 10,000 services by default) and the
readings of bench/core.py's generator, twice: with its tick every 10 s, and with every tick
taken out (a recording of probes alone). Then, each in a child process with its peak
resident set (bench/replay.py's ``peak``), ``failover replay --quiet --out /dev/null`` over
each file (the tick-less one replayed by event time, its first pass that looks for a tick
included), and ``failover what-if --set policy.restore_after=30m`` over the tick-less file
(two replays). Beside them, in this process, bench/core.py's ceiling over the same readings
(``orjson.loads`` and the schema's ``is_valid`` per event: what any engine that reads and
validates JSON must pay) and the first pass alone (``has_ticks`` over the tick-less file).
Rates are readings per second of wall time.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from core import Stream, stream_lines, topology_yaml
from replay import peak

from workflows.inputs import _VALIDATORS, MAX_EVENT_BYTES
from workflows.recording import has_ticks
from workflows.replay import read_lines


def ceiling(path: Path) -> float:
    """Wall seconds of orjson.loads and is_valid over every line of ``path``."""
    validators = _VALIDATORS
    loads = orjson.loads
    start = time.perf_counter()
    for _, raw in read_lines(path, MAX_EVENT_BYTES):
        event = loads(raw)
        if not validators[event["type"]].is_valid(event):
            raise SystemExit("a generated event is invalid")
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="link.status.v1 events")
    parser.add_argument("--sites", type=int, default=1000, help="sites (10 services each)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-replay-clock-") as tmp:
        root = Path(tmp)
        text, links = topology_yaml(args.sites)
        topology = root / "topology.yaml"
        topology.write_text(text)
        stream = Stream([], 0, 0, 0, {})  # the counts, when the last line is made
        ticked, bare = root / "ticks.jsonl", root / "no-ticks.jsonl"
        with ticked.open("wb") as with_ticks, bare.open("wb") as without:
            for raw in stream_lines(links, args.events, 1, stream):
                with_ticks.write(raw + b"\n")
                if b'"clock.tick.v1"' not in raw:
                    without.write(raw + b"\n")
        readings, ticks = stream.probes, stream.ticks
        del stream
        services = args.sites * 10
        print(
            f"failover replay by its clock: {readings:,} readings over {services:,} services, "
            f"{len(links):,} links ({ticks:,} ticks in the file that has them)"
        )
        print(f"{'case':<58} {'wall s':>7} {'readings/s':>11} {'peak RSS MB':>12}")

        def row(label: str, wall: float, rss: float | None) -> None:
            shown = f"{rss:>12,.0f}" if rss is not None else f"{'-':>12}"
            print(f"{label:<58} {wall:>7.1f} {readings / wall:>11,.0f} {shown}", flush=True)

        row("ceiling: orjson.loads + is_valid (bench/core.py), ticks file", ceiling(ticked), None)
        start = time.perf_counter()
        assert not has_ticks(bare, MAX_EVENT_BYTES)
        row("first pass alone: has_ticks over the tick-less file", time.perf_counter() - start,
            None)  # fmt: skip
        quiet = ["--quiet", "--out", "/dev/null"]
        rss, wall = peak(["replay", str(topology), str(ticked), *quiet])
        row("replay, file with ticks (clock: ticks)", wall, rss)
        rss, wall = peak(["replay", str(topology), str(bare), *quiet])
        row("replay, no tick (clock: events, auto, first pass incl.)", wall, rss)
        rss, wall = peak(["replay", str(topology), str(bare), "--clock", "ticks", *quiet])
        row("replay, no tick, --clock ticks (the clock never moves)", wall, rss)
        whatif = ["what-if", str(topology), str(bare), "--set", "policy.restore_after=30m"]
        rss, wall = peak([*whatif, "--json"])
        row("what-if --set policy.restore_after=30m, no tick (2 replays)", wall, rss)
    print(f"command: .venv/bin/python bench/replay_clock.py {shlex.join(argv or sys.argv[1:])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
