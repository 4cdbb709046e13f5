"""Benchmark of signed overrides: what verifying one costs, and what a flood of forged ones
does to the link events around it.

Not a test: a script that prints one table from one run::

    .venv/bin/python bench/operators.py [--readings N] [--ratio R] [--repeat N]

1. The cost of the verdict on one override (``judge_override``: signature, actor, role,
   grants), per case: signed by the demo's acting head; its key id with a stranger's
   signature (forged); an unknown key id; unsigned. And ``Engine.feed`` of a signed one.
2. ``--readings`` link readings of the demo topology's three links (decoded, judged and
   applied by ``Engine.feed``), alone and with a forged override every ``--ratio`` readings
   (10 by default: 10,000 forged overrides a second against the 100,000 events a second the
   worker handles, ``bench/kafka.py`` (b)). Reported: link readings per second in each run
   and how much the flood slows them. Best of ``--repeat`` runs, interleaved.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.signing
import orjson

from streams.demokeys import sign_as
from workflows.engine import Engine
from workflows.operators import judge_override, sign_override
from workflows.timeutil import SECOND, format_time, parse_time
from workflows.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = Topology.load(ROOT / "streams" / "demo" / "ambon.yaml")
ACTING = "Plt. Kepala Dinas"
START = parse_time("2019-02-04T20:00:00Z")


def _override(ident: str, at: int) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": ident,
        "source": "/operators/console",
        "type": "operator.override.v1",
        "time": format_time(at),
        "subject": "ektp",
        "data": {"action": "pin", "actor": ACTING, "role": "acting-head", "reason": "uji"},
    }


def _best(function: Callable[[], None], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def verdict_costs(repeat: int, count: int = 2000) -> list[tuple[str, float]]:
    stranger = nacl.signing.SigningKey(b"\x09" * 32)
    cases = {
        "signed, granted": sign_as(_override("o/1", START)),
        "forged (known key id, wrong key)": sign_override(
            _override("o/2", START), f"{ACTING}/demo", stranger
        ),
        "unknown key id": sign_override(_override("o/3", START), "Mallory/k1", stranger),
        "unsigned": _override("o/4", START),
    }
    site = TOPOLOGY.services["ektp"].site
    rows = []
    for name, event in cases.items():

        def judge(event: dict[str, Any] = event) -> None:
            for _ in range(count):
                judge_override(event, START, None, TOPOLOGY.operators, site, False, 900 * SECOND)

        rows.append((f"verdict: {name}", _best(judge, repeat) / count * 1e6))
    raws = [orjson.dumps(sign_as(_override(f"o/feed/{i}", START))) for i in range(count)]

    def feed() -> None:
        engine = Engine(TOPOLOGY)
        for raw in raws:
            engine.feed(raw)

    rows.append(("Engine.feed of a signed override (decode, verdict, queue)", _best(feed, repeat)
                 / count * 1e6))  # fmt: skip
    return rows


def flood(readings: int, ratio: int, repeat: int) -> tuple[float, float, int]:
    links = list(TOPOLOGY.links)
    alone: list[bytes] = []
    for i in range(readings):
        link = links[i % len(links)]
        at = START + (i // len(links)) * SECOND
        alone.append(
            orjson.dumps(
                {
                    "specversion": "1.0",
                    "id": f"probe/{link}/{i}",
                    "source": "/probes/bench",
                    "type": "link.status.v1",
                    "time": format_time(at),
                    "subject": link,
                    "data": {"status": "up", "latency_ms": 20.0, "loss_pct": 0.0},
                }
            )
        )
    stranger = nacl.signing.SigningKey(b"\x0a" * 32)
    mixed: list[bytes] = []
    forged = 0
    for i, raw in enumerate(alone):
        mixed.append(raw)
        if i % ratio == ratio - 1:
            event = _override(f"forged/{i}", START + (i // len(links)) * SECOND)
            mixed.append(orjson.dumps(sign_override(event, f"{ACTING}/demo", stranger)))
            forged += 1

    def run(lines: list[bytes]) -> Callable[[], None]:
        def go() -> None:
            engine = Engine(TOPOLOGY)
            for n, raw in enumerate(lines):
                engine.feed(raw)
                if n % 10_000 == 0:
                    engine.drain()

        return go

    best_alone = best_mixed = float("inf")
    for _ in range(repeat):  # interleaved: the machine's drift hits both alike
        best_alone = min(best_alone, _best(run(alone), 1))
        best_mixed = min(best_mixed, _best(run(mixed), 1))
    return readings / best_alone, readings / best_mixed, forged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--ratio", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rows = verdict_costs(args.repeat)
    alone, mixed, forged = flood(args.readings, args.ratio, args.repeat)
    print(f"$ {shlex.join(['bench/operators.py', *(argv or sys.argv[1:])])}")
    print(f"{'what':<62} {'measured':>20}")
    for name, micros in rows:
        print(f"{name:<62} {micros:>17.1f} us")
    print(f"{'link readings/s alone':<62} {alone:>20,.0f}")
    label = f"link readings/s with {forged:,} forged overrides (1 per {args.ratio})"
    print(f"{label:<62} {mixed:>20,.0f}")
    slower = (1 - mixed / alone) * 100
    print(f"{'link readings slowed by the flood (target <= 10%)':<62} {slower:>19.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
