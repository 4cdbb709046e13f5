"""The core is deterministic: no wall clock, no randomness, no I/O beyond what it is given.

import-linter keeps Kafka and faust out of ``workflows/`` (see pyproject.toml); this test
keeps out the calls that would make the same input give a different output.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "workflows"

FORBIDDEN_CALLS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("time", "perf_counter"),
    ("uuid", "uuid1"),
    ("uuid", "uuid4"),
}
FORBIDDEN_MODULES = {"random", "secrets", "socket", "asyncio", "threading"}


def _violations(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in FORBIDDEN_CALLS:
                found.append(f"{node.value.id}.{node.attr} (line {node.lineno})")
        elif isinstance(node, ast.Import):
            found.extend(
                f"import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES
            )
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] in FORBIDDEN_MODULES
        ):
            found.append(f"from {node.module} import ...")
    return found


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: p.name)
def test_core_reads_no_clock_and_draws_no_randomness(path: Path) -> None:
    assert _violations(path.read_text(encoding="utf-8")) == []


def test_the_check_itself_catches_a_wall_clock() -> None:
    assert _violations("import random\nfrom datetime import datetime\ndatetime.now()\n") == [
        "import random",
        "datetime.now (line 3)",
    ]
