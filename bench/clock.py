"""Benchmark of the clock guards: what they cost the paths they sit on.

Not a test: a script that prints one table from one run::

    .venv/bin/python bench/clock.py [--events N] [--sites N] [--repeat N]

Over the same stream as bench/core.py (``--events`` readings of ``--sites`` sites, a tick
every 10 s of event time), each pair timed interleaved (in alternating order), best of ``--repeat``:

- ``read_input`` (the fast path and decode behind it) without a bound, as replay calls it,
  and with a ``not_after`` bound and a tick key, as the worker does;
- replay (``workflows.replay.replay``, no timeline) over the numbered lines, and over the
  same lines through ``clock_jumps``, the jump report ``failover replay`` adds;
- ``decode`` of the stream's ticks, untagged without a key, and tagged and checked (HMAC).
"""

from __future__ import annotations

import argparse
import gc
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is not a package: make bench.core importable
    sys.path.insert(0, str(ROOT))

from bench.core import make_stream, topology_yaml  # noqa: E402
from streams.codec import tick_event  # noqa: E402
from workflows.inputs import MAX_EVENT_BYTES, decode, read_input  # noqa: E402
from workflows.recording import clock_jumps  # noqa: E402
from workflows.replay import replay  # noqa: E402
from workflows.timeutil import SECOND, parse_time  # noqa: E402
from workflows.topology import Topology  # noqa: E402

KEY = b"bench-tick-key-" + b"x" * 32


def timed(run: Callable[[], object]) -> float:
    gc.collect()
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=300_000, help="link.status.v1 events")
    parser.add_argument("--sites", type=int, default=200, help="sites (10 services each)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each (best kept)")
    args = parser.parse_args(argv)
    print("$ " + shlex.join(sys.orig_argv))
    text, links = topology_yaml(args.sites)
    topology = Topology.parse(text, "<bench>")
    stream = make_stream(links, args.events, 1)
    inputs = stream.inputs
    lines = list(enumerate(inputs, start=1))
    ticks = [raw for raw in inputs if b"clock.tick.v1" in raw]
    tagged = [
        tick_event(decoded[1], KEY)[1] for raw in ticks if isinstance(decoded := decode(raw), tuple)
    ]
    bound = max(parse_time(t) for t in ("2100-01-01T00:00:00Z",)) + 300 * SECOND
    print(
        f"{stream.probes:,} readings + {stream.ticks:,} ticks, {len(topology.services):,} "
        f"services; best of {args.repeat}"
    )

    def read_all(not_after: int | None, key: bytes | None) -> Callable[[], object]:
        def run() -> None:
            for raw in inputs:
                read_input(raw, None, MAX_EVENT_BYTES, not_after, key)

        return run

    def replayed(watch: bool) -> Callable[[], object]:
        def run() -> None:
            source = clock_jumps(lines, 86400 * SECOND, lambda jump: None) if watch else lines
            for _ in replay(topology, source, "bench"):
                pass

        return run

    def ticked(batch: list[bytes], key: bytes | None) -> Callable[[], object]:
        def run() -> None:
            for raw in batch:
                decode(raw, "__tick__", MAX_EVENT_BYTES, None, key)

        return run

    pairs = [
        ("read_input, every input", len(inputs), read_all(None, None), read_all(bound, KEY)),
        ("replay, every input", len(lines), replayed(False), replayed(True)),
        ("decode, ticks", len(ticks), ticked(ticks, None), ticked(tagged, KEY)),
    ]
    print(f"{'path':<26} {'messages':>10} {'without':>12} {'with guard':>12} {'ratio':>7}")
    for name, count, plain, guarded in pairs:
        best_plain = best_guarded = float("inf")
        for round_ in range(args.repeat):  # alternate which goes first: no order bias
            if round_ % 2:
                best_guarded = min(best_guarded, timed(guarded))
            best_plain = min(best_plain, timed(plain))
            if not round_ % 2:
                best_guarded = min(best_guarded, timed(guarded))
        per = [1e6 * t / count for t in (best_plain, best_guarded)]
        print(
            f"{name:<26} {count:>10,} {per[0]:>9.3f} us {per[1]:>9.3f} us "
            f"{best_guarded / best_plain:>7.3f}"
        )
    print("without: as replay runs (no bound, no key); with guard: as the worker runs the core")
    print("(read_input and decode), or as failover replay runs (clock_jumps before replay)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
