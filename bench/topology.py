"""Benchmark of the topology loader: what its checks cost, and what a hostile file costs.

Not a test: a script that prints one table from one run::

    .venv/bin/python bench/topology.py [--sites N] [--repeat N]

1. Generates bench/core.py's topology of ``--sites`` sites (10 services and 3 links each) as
   YAML and as JSON text.
2. Times, best of ``--repeat``, side by side: the bare parser (libyaml's ``CSafeLoader``;
   ``orjson.loads``) against :meth:`Topology.parse` (parser, node checks or duplicate-key
   hook, schema, build): the ratio is what reading a file defensively costs.
3. Times and traces (``tracemalloc`` peak) hostile files, each refused: the 594-byte alias
   bomb (nine levels of nine aliases: 387 million nodes once expanded), a recursive alias,
   a 50 MB scalar in an error, and a duplicate service in the large JSON file.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core import topology_yaml

from workflows.topology import Topology, TopologyError

BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]"
            for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


def best(action: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def refused(text: str) -> tuple[float, int, str]:
    """Seconds, peak bytes traced, and the error, of loading a file that must be refused."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        Topology.parse(text, "hostile")
    except TopologyError as error:
        message = error.message
    else:
        raise AssertionError("a hostile file was accepted")
    finally:
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return seconds, peak, message


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"$ .venv/bin/python bench/topology.py {shlex.join(sys.argv[1:])}".rstrip())

    yaml_text, _ = topology_yaml(args.sites)
    document = yaml.load(yaml_text, Loader=yaml.CSafeLoader)
    json_text = orjson.dumps(document).decode()
    services = len(document["services"])
    print(
        f"topology: {args.sites:,} sites, {services:,} services; YAML {len(yaml_text):,} "
        f"bytes, JSON {len(json_text):,} bytes; best of {args.repeat}\n"
    )

    def bare_json() -> Any:
        return orjson.loads(json_text)

    def bare_yaml() -> Any:
        return yaml.load(yaml_text, Loader=yaml.CSafeLoader)

    rows = []
    for form, text, bare, name in (
        ("JSON", json_text, bare_json, "orjson.loads"),
        ("YAML", yaml_text, bare_yaml, "CSafeLoader"),
    ):
        parse = best(bare, args.repeat)
        load = best(lambda text=text: Topology.parse(text, "bench"), args.repeat)  # type: ignore[misc]
        rows.append((form, name, parse, load, load / parse))
    print("| form | bare parser | parser s | Topology.parse s | ratio |")
    print("| --- | --- | ---: | ---: | ---: |")
    for form, name, parse, load, ratio in rows:
        print(f"| {form} | {name} | {parse:.2f} | {load:.2f} | {ratio:.1f} |")

    small, _ = topology_yaml(1)
    first = next(iter(document["services"]))
    duplicate = json_text.replace('"services":{', f'"services":{{"{first}":{{}},', 1)
    assert duplicate != json_text
    hostile = [
        ("alias bomb (594 bytes)", BOMB),
        ("recursive alias", "a: &a [*a]\n"),
        ("50 MB scalar", small.replace("timezone: ", "timezone: " + "A" * 50_000_000, 1)),
        (f"duplicate key, {len(json_text) // 1_000_000} MB JSON", duplicate),
    ]
    print("\n| hostile file (refused) | s | peak MB traced | error |")
    print("| --- | ---: | ---: | --- |")
    for label, text in hostile:
        seconds, peak, message = refused(text)
        print(f"| {label} | {seconds:.2f} | {peak / 1e6:.1f} | {message[:60]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
