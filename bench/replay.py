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


def peak(args: list[str], code: Path | None = None) -> tuple[float, float]:
    """Peak RSS (MB) and wall time (s) of ``failover ARGS`` in a child process (running the
    ``streams`` and ``workflows`` packages found in ``code``, if given)."""
    read, write = os.pipe()
    env = {**os.environ, "BENCH_RSS_FD": str(write)}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        stdout=subprocess.DEVNULL,
        pass_fds=(write,),
        env=env,
        cwd=tempfile.gettempdir(),  # not a directory with packages of the same names
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
    parser.add_argument(
        "--before",
        metavar="REF",
        help="also run the code of this git ref (e.g. main), side by side: its tree is "
        "extracted with git archive and put first on the child's PYTHONPATH",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        root = Path(tmp)
        text, links = topology_yaml(args.sites)
        topology = root / "topology.yaml"
        topology.write_text(text)
        # The same events against a topology of one site: nearly every reading is for a link
        # it does not know, so nearly every input becomes a dead letter (an output record).
        small = root / "one-site.yaml"
        small.write_text(topology_yaml(1)[0])
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
        # (label, topology, events, options, run the --before code too). The code before may
        # take minutes to render a timeline of millions of dead letters: not run there.
        cases = [
            (f"{args.events:,} events, with the timeline", topology, files["all"], [], True),
            (f"{args.events:,} events, --quiet", topology, files["all"], ["--quiet"], True),
            (f"{args.events // 4:,} events, with the timeline", topology, files["quarter"], [],
             True),
            (f"{args.events:,} events, ~all dead letters, --quiet", small, files["all"],
             ["--quiet"], True),
            (f"{args.events:,} events, ~all dead letters, timeline", small, files["all"], [],
             False),
            (f"one line of {args.line_mb} MB, with the timeline", topology, huge, [], True),
        ]  # fmt: skip
        before = None
        if args.before:
            before = root / "before"
            before.mkdir()
            archive = subprocess.run(
                ["git", "archive", args.before],
                check=True,
                capture_output=True,
                cwd=Path(__file__).resolve().parent.parent,  # the whole tree, not bench/ alone
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        print(f"failover replay peak memory ({args.sites} sites, {args.sites * 10} services)")
        head = f"{'case':<48} {'file MB':>8} {'peak RSS MB':>12} {'wall s':>7}"
        if before is not None:
            head += f" {f'{args.before}: RSS MB':>16} {'wall s':>7}"
        print(head)
        for label, topo, path, extra, compare in cases:
            cmd = ["replay", str(topo), str(path), "--out", "/dev/null", *extra]
            rss, wall = peak(cmd)
            size = path.stat().st_size / 1e6
            line = f"{label:<48} {size:>8,.0f} {rss:>12,.0f} {wall:>7.1f}"
            if before is not None and compare:
                old_rss, old_wall = peak(cmd, before)
                line += f" {old_rss:>16,.0f} {old_wall:>7.1f}"
            elif before is not None:
                line += f" {'(not run)':>16} {'':>7}"
            print(line, flush=True)
    print(f"command: .venv/bin/python bench/replay.py {shlex.join(argv or sys.argv[1:])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
