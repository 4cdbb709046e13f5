"""Benchmark of ``failover replay``'s memory: peak RSS over a long run and a huge line.

Not a test: a script that prints one table from one run::

    .venv/bin/python bench/replay.py [--events N] [--sites N] [--line-mb N]

Writes a topology and a JSONL file of ``--events`` readings and ticks (the generator of
bench/core.py), then runs ``failover replay TOPOLOGY EVENTS --out /dev/null`` in a child
process for each case, and reads the child's peak resident set (``VmHWM`` in
``/proc/self/status``, taken as the child exits; Linux only): with the timeline, without it
(``--quiet``), over a quarter of the events (memory must not grow with the run), and over a
file holding one line of ``--line-mb`` MB (it must not be read whole).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from core import make_stream, topology_yaml

# The child: run the CLI, and write its own peak RSS (VmHWM, KiB) to the pipe it was given
# (FD in BENCH_RSS_FD) as it exits. Not ru_maxrss: Linux keeps that across exec, so a child
# would report the parent's peak (which holds the generated events) if that was higher.
CHILD = """
import atexit, os, sys
def report():
    with open("/proc/self/status") as status:
        rss = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    os.write(int(os.environ["BENCH_RSS_FD"]), rss.encode())
atexit.register(report)
sys.argv = ["failover", *sys.argv[1:]]
from streams.cli import main
main()
"""


def peak(args: list[str]) -> tuple[float, float]:
    """Peak RSS (MB) and wall time (s) of ``failover ARGS`` in a child process."""
    read, write = os.pipe()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        stdout=subprocess.DEVNULL,
        pass_fds=(write,),
        env={**os.environ, "BENCH_RSS_FD": str(write)},
    )
    os.close(write)
    proc.wait()
    wall = time.perf_counter() - start
    data = os.read(read, 64)
    os.close(read)
    if proc.returncode != 0 or not data:
        raise SystemExit(f"failover {shlex.join(args)} failed (rc={proc.returncode})")
    return int(data) / 1024, wall


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=2_000_000, help="link.status.v1 events")
    parser.add_argument("--sites", type=int, default=500, help="sites (10 services each)")
    parser.add_argument("--line-mb", type=int, default=200, help="size of the huge line (MB)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        root = Path(tmp)
        text, links = topology_yaml(args.sites)
        topology = root / "topology.yaml"
        topology.write_text(text)
        files: dict[str, Path] = {}
        for name, count in (("all", args.events), ("quarter", args.events // 4)):
            stream = make_stream(links, count, seed=1)
            path = files[name] = root / f"{name}.jsonl"
            with path.open("wb") as out:
                for raw in stream.inputs:
                    out.write(raw + b"\n")
            del stream
        huge = root / "huge.jsonl"
        with huge.open("wb") as out:
            out.write(b'{"type":"clock.tick.v1","pad":"')
            chunk = b"x" * (1 << 20)
            for _ in range(args.line_mb):
                out.write(chunk)
            out.write(b'"}\n')
        cases = [
            (f"{args.events:,} events, with the timeline", files["all"], []),
            (f"{args.events:,} events, --quiet", files["all"], ["--quiet"]),
            (f"{args.events // 4:,} events, with the timeline", files["quarter"], []),
            (f"one line of {args.line_mb} MB, with the timeline", huge, []),
        ]
        print(f"failover replay peak memory ({args.sites} sites, {args.sites * 10} services)")
        print(f"{'case':<44} {'file MB':>9} {'peak RSS MB':>12} {'wall s':>8}")
        for label, path, extra in cases:
            cmd = ["replay", str(topology), str(path), "--out", "/dev/null", *extra]
            rss, wall = peak(cmd)
            size = path.stat().st_size / 1e6
            print(f"{label:<44} {size:>9,.0f} {rss:>12,.0f} {wall:>8.1f}")
    print(f"command: .venv/bin/python bench/replay.py {shlex.join(argv or sys.argv[1:])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
