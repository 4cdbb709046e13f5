"""The hostile corpus through ``failover replay``, run as a user runs it (a subprocess, stdout
not a terminal), each file twice: once with ``--out`` (the timeline on stdout), once without
(the JSONL on stdout, the timeline on stderr). Both runs must agree byte for byte.

For every event file: exit 0, no traceback, no raw control or bidi character and no forged
line in what the terminal shows, the JSONL parses, every dead letter has a documented reason
code and the line's original bytes (or, for a line too long to read whole, its first
bytes, if the reason says it is cut), every line that cannot be an input and every line its
case calls hostile is dead-lettered (once), the normal lines are not, the overrides that must
take effect cause a transition, and no notice carries HTML. For every topology file: the
exit its case expects; when refused, a short error naming the file and the place in it (a
``$`` path, or a line for a file that is not valid YAML) and no traceback (one run is
enough); when accepted, the same checks as an event file over the baseline events.

The cases that fail today are listed in ``tests/hostile/xfails.py``. All runs go in parallel
(a thread per core) before the first check, each under a 1 GiB address-space limit (a
replay takes some 50 MB), so an alias bomb fails fast instead of eating the machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from tests.hostile import xfails
from tests.hostile.checks import (
    HTML_TAG,
    code_of,
    deadletter_bytes,
    event_id,
    is_input,
    reason_codes,
    terminal_problems,
)
from tests.hostile.corpus import (
    BASELINE,
    CORPUS_TOPOLOGY,
    EVENT_CASES,
    TOPOLOGY_CASES,
    EventCase,
    Line,
    TopologyCase,
    corpus_files,
    file_bytes,
)
from workflows.engine import MAX_EVENT_BYTES

MEMORY_LIMIT = 1024**3
TIMEOUT = 120.0
# The CLI as the console script runs it, under an address-space limit.
LAUNCH = (
    "import resource, sys; "
    f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT})); "
    "from streams.cli import main; main()"
)


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: bytes
    stderr: bytes
    out: bytes | None  # the --out file
    seconds: float


@dataclass(frozen=True)
class Result:
    topology: Path
    events: Path
    with_out: Run  # --out out.jsonl: timeline on stdout
    to_stdout: Run  # JSONL on stdout, timeline on stderr (a refused topology: with_out again)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env.update(COLUMNS="120", LINES="50", PYTHONUNBUFFERED="1")
    env.pop("OTEL_SDK_DISABLED", None)
    return {k: v for k, v in env.items() if not k.startswith("OTEL_")}


def _replay(topology: Path, events: Path, cwd: Path, out: bool) -> Run:
    cwd.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-c", LAUNCH, "replay", str(topology), str(events)]
    if out:
        args += ["--out", "out.jsonl"]
    start = time.monotonic()
    done = subprocess.run(
        args, cwd=cwd, env=_env(), capture_output=True, stdin=subprocess.DEVNULL,
        timeout=TIMEOUT, check=False,
    )  # fmt: skip
    written = cwd / "out.jsonl"
    return Run(
        done.returncode,
        done.stdout,
        done.stderr,
        written.read_bytes() if out and written.exists() else None,
        time.monotonic() - start,
    )


def _both(topology: Path, events: Path, work: Path, twice: bool) -> Result:
    first = _replay(topology, events, work / "with-out", out=True)
    second = _replay(topology, events, work / "to-stdout", out=False) if twice else first
    return Result(topology, events, first, second)


@dataclass(frozen=True)
class Job:
    key: str
    topology: Path
    events: Path
    twice: bool = True  # False: a topology to be refused; its one run is enough


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result | BaseException]:
    """Every case replayed twice, all in parallel, before any check runs."""
    base = tmp_path_factory.mktemp("hostile")
    jobs = []
    for case in EVENT_CASES:
        path = case.path
        if not case.committed:
            path = base / "generated" / path.name
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(file_bytes(case.build()))
        jobs.append(Job(f"events/{case.name}", CORPUS_TOPOLOGY, path))
    for topo in TOPOLOGY_CASES:
        path = topo.path
        if not topo.committed:
            path = base / "generated" / path.name
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(topo.build())
        jobs.append(Job(f"topology/{topo.name}", path, BASELINE, twice=topo.exit != (2,)))

    def run(job: Job) -> Result | BaseException:
        try:
            return _both(job.topology, job.events, base / job.key, job.twice)
        except BaseException as exc:  # reported by the case's own test
            return exc

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return dict(zip((j.key for j in jobs), pool.map(run, jobs), strict=True))


def _result(results: dict[str, Result | BaseException], key: str) -> Result:
    result = results[key]
    if isinstance(result, BaseException):
        raise result
    return result


def _params(kind: str, names: list[str]) -> Iterator[object]:
    for name in names:
        reason = xfails.REPLAY.get(f"{kind}/{name}")
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(name, marks=marks, id=name)


# ------------------------------------------------------------------------- the checks


def _run_problems(result: Result) -> list[str]:
    """Exit 0, no traceback, a safe terminal, and the two runs agreeing."""
    problems = []
    a, b = result.with_out, result.to_stdout
    for label, run in (("--out", a), ("stdout", b)):
        if run.returncode != 0:
            tail = run.stderr.decode("utf-8", "replace")[-600:]
            problems.append(f"replay {label}: exit {run.returncode}: {tail}")
        if b"Traceback" in run.stderr or b"Traceback" in run.stdout[-4096:]:
            problems.append(f"replay {label}: a traceback")
    problems += terminal_problems("timeline (stdout, with --out)", a.stdout)
    problems += terminal_problems("stderr (with --out)", a.stderr)
    problems += terminal_problems("timeline (stderr, JSONL on stdout)", b.stderr)
    if a.out is None:
        problems.append("--out wrote no file")
    elif a.out != b.stdout:
        problems.append("the JSONL differs between --out and stdout (not deterministic)")
    # Warnings go to stderr as they are found, the timeline after them: with --out it goes to
    # stdout instead, so the second run's stderr is the first's stderr, then its timeline.
    shown = a.stdout.rsplit(b"output records:", 1)[0]
    if not problems and a.stderr + shown != b.stderr:
        problems.append("the timeline differs between the two runs (not deterministic)")
    return problems


def _declared_prefix(reason: str, kept: bytes, original: bytes) -> bool:
    """A line too long to read whole may be dead-lettered with its first bytes (more than
    the limit), if its reason says the dead letter is cut."""
    return (
        code_of(reason) == "too-large"
        and "truncated" in reason
        and len(kept) > MAX_EVENT_BYTES
        and original.startswith(kept)
    )


def _output_problems(lines: list[Line] | None, result: Result) -> list[str]:
    """The JSONL against the file: dead letters, roles, effects, notices."""
    problems: list[str] = []
    out = result.with_out.out
    if out is None:
        return problems
    raw_lines = result.events.read_bytes().split(b"\n")
    codes = reason_codes()
    dead_at: dict[int, int] = defaultdict(int)
    causes: set[str] = set()
    for n, text in enumerate(out.splitlines(), start=1):
        try:
            record = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            problems.append(f"output line {n} is not JSON: {exc}")
            continue
        if record["topic"] == "failover-deadletter":
            line = record["source"]["line"]
            dead_at[line] += 1
            if record["source"]["file"] != result.events.name:
                problems.append(f"dead letter of line {line}: file {record['source']['file']!r}")
            if code_of(record["reason"]) not in codes:
                problems.append(f"line {line}: undocumented reason {record['reason'][:120]!r}")
            try:
                original = raw_lines[line - 1].removesuffix(b"\r")
                kept = deadletter_bytes(record)
                if kept != original and not _declared_prefix(record["reason"], kept, original):
                    problems.append(f"line {line}: dead letter bytes differ from the line")
            except (ValueError, AssertionError, IndexError) as exc:
                problems.append(f"line {line}: dead letter bytes unreadable: {exc}")
            continue
        event = record["value"]
        if event["type"] == "failover.transition.v1":
            causes.add(event["data"]["cause"])
        if event["type"] == "failover.notice.v1":
            blob = orjson.dumps(event["data"])
            if tag := HTML_TAG.search(blob):
                problems.append(f"notice {event['id']} carries HTML: {tag.group()!r}")
    for number, raw in enumerate(raw_lines, start=1):
        content = raw.removesuffix(b"\r")
        if content.strip() and not is_input(content) and dead_at[number] == 0:
            problems.append(f"line {number} cannot be an input, yet is not dead-lettered")
    for line, count in dead_at.items():
        if count > 1:
            problems.append(f"line {line} dead-lettered {count} times")
    for number, line in enumerate(lines or [], start=1):
        if line.replay == "dead" and not dead_at[number]:
            problems.append(f"hostile line {number} was not dead-lettered")
        if line.replay in ("ok", "effect") and dead_at[number]:
            problems.append(f"normal line {number} was dead-lettered")
        if line.replay == "effect" and event_id(line.raw) not in causes:
            problems.append(f"line {number} ({event_id(line.raw)}) caused no transition")
    return problems


def _case_lines(case: EventCase) -> list[Line]:
    return case.build()


@pytest.mark.parametrize("name", list(_params("events", [c.name for c in EVENT_CASES])))
def test_event_file(results: dict[str, Result | BaseException], name: str) -> None:
    case = next(c for c in EVENT_CASES if c.name == name)
    result = _result(results, f"events/{name}")
    problems = _run_problems(result) + _output_problems(_case_lines(case), result)
    assert not problems, "\n".join(problems)


def _topology_problems(case: TopologyCase, result: Result) -> list[str]:
    runs = (result.with_out, result.to_stdout)
    problems = []
    for run in runs:
        if run.returncode not in case.exit:
            tail = run.stderr.decode("utf-8", "replace")[-600:]
            problems.append(f"exit {run.returncode}, expected {case.exit}: {tail}")
            break
    if runs[0].returncode != runs[1].returncode:
        problems.append("the two runs exit differently")
    if problems:
        return problems
    if runs[0].returncode == 0:
        return _run_problems(result) + _output_problems(None, result)
    for run in runs:
        err = run.stderr
        if b"Traceback" in err:
            problems.append("a traceback")
        if len(err) > 4096:
            problems.append(f"an error of {len(err)} bytes")
        if case.path.name.encode() not in err:
            problems.append(f"the error does not name the file: {err[:300]!r}")
        if b"$" not in err and not re.search(rb"\bline [0-9]+", err):
            problems.append(f"the error names no place in the file: {err[:300]!r}")
        problems += terminal_problems("stderr", err[:4096])
    return problems


@pytest.mark.parametrize("name", list(_params("topology", [c.name for c in TOPOLOGY_CASES])))
def test_topology_file(results: dict[str, Result | BaseException], name: str) -> None:
    case = next(c for c in TOPOLOGY_CASES if c.name == name)
    problems = _topology_problems(case, _result(results, f"topology/{name}"))
    assert not problems, "\n".join(problems)


def test_committed_corpus_is_what_the_generator_builds() -> None:
    """The committed files are exactly corpus.py's output (``python -m tests.hostile.corpus``
    rewrites them), and nothing else is in the corpus directories."""
    files = corpus_files()
    for path, data in files.items():
        assert path.exists(), f"{path.name} missing: run python -m tests.hostile.corpus"
        assert path.read_bytes() == data, f"{path.name} stale: run python -m tests.hostile.corpus"
    on_disk = {p for d in {p.parent for p in files} for p in d.iterdir() if p.is_file()}
    assert on_disk == set(files), f"not made by corpus.py: {sorted(on_disk - set(files))}"
    for path in files:
        if path.suffix == ".toml":
            sidecar = tomllib.loads(path.read_text())
            assert sidecar["attack"], path.name
            assert sidecar["expect"], path.name


def test_xfails_name_real_cases() -> None:
    names = {f"events/{c.name}" for c in EVENT_CASES} | {
        f"topology/{c.name}" for c in TOPOLOGY_CASES
    }
    assert set(xfails.REPLAY) <= names, sorted(set(xfails.REPLAY) - names)
    kafka = {c.name for c in EVENT_CASES if c.kafka} | {"wire-records"}
    assert set(xfails.KAFKA) <= kafka, sorted(set(xfails.KAFKA) - kafka)
