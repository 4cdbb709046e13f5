"""A fuzzer over topology files (hypothesis): whatever a file holds, the loader either returns
a topology that is whole, or raises ``TopologyError`` naming the file, a path in it and what is
wrong, in one short, printable line. Never another exception, never unbounded time or memory.

Four sources of files: the valid example with structural mutations (a value replaced by any
JSON value, a key dropped or renamed, written as YAML or JSON), its YAML text with hostile
fragments spliced in (anchors, aliases, merges, tags, flow brackets, directives, controls),
nested aliases of random shape (bombs and cycles), and raw bytes.
"""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from workflows.topology import (
    MAX_DURATION,
    MAX_FILE_BYTES,
    Topology,
    TopologyError,
)

DESIGN_EXAMPLE = (Path(__file__).parent / "data" / "design-topology.yaml").read_text()
FILE = "fuzzed.yaml"

FUZZ = settings(
    max_examples=150,
    # A deadline per example is the "never unbounded time" check; generous for a busy CI box.
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def outcome(text: str, file: str = FILE) -> Topology | TopologyError:
    """Load ``text``; anything but a topology or a ``TopologyError`` fails the test."""
    try:
        topology = Topology.parse(text, file)
    except TopologyError as error:
        check_error(error, file)
        event(f"refused: {error.message[:24]}")
        return error
    check_topology(topology)
    event("loaded")
    return topology


def check_error(error: TopologyError, file: str) -> None:
    assert error.file == file
    assert error.path.startswith(("$", "line ")), error.path
    assert error.message
    line = str(error)
    assert line == f"{file}: {error.path}: {error.message}"
    assert line.isprintable(), repr(line)
    assert len(error.path) <= 1000
    assert len(error.message) <= 1000


def check_topology(topology: Topology) -> None:
    """What a loaded topology guarantees the engine."""
    for service in topology.services.values():
        assert service.site in topology.sites
        assert service.requires
        for link in service.links:
            assert service.id in topology.services_by_link[link]
        if not service.offline:
            assert service.queue
        check_policy(service.policy)
    for link in topology.links.values():
        check_link_policy(link.policy)
        assert link.id in topology.links_by_provider[link.provider]
    for provider, links in topology.links_by_provider.items():
        assert list(links) == sorted(links)
        assert all(topology.links[link].provider == provider for link in links)


def check_policy(policy: Any) -> None:
    for name in policy.__slots__:
        value = getattr(policy, name)
        if name == "link":
            check_link_policy(value)
        else:
            assert type(value) is int
            assert 0 < value <= MAX_DURATION


def check_link_policy(policy: Any) -> None:
    for name in ("stale_after", "flap_window", "flap_quiet"):
        value = getattr(policy, name)
        assert type(value) is int
        assert 0 < value <= MAX_DURATION
    assert type(policy.flap_threshold) is int
    for name in ("latency_degraded_ms", "loss_degraded_pct"):
        assert math.isfinite(getattr(policy, name))


def design_document() -> dict[str, Any]:
    document = yaml.safe_load(DESIGN_EXAMPLE)
    assert isinstance(document, dict)
    return document


# ------------------------------------------------------------ structural mutations

#: Text with what a hostile file holds: controls, escapes, bidi, markup, long runs.
hostile_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "Asia",
            "Asia/Jayapura",
            "UTC",
            "../etc/passwd",
            "[/x]",
            "<b>x</b>",
            "\x1b[31m",
            "a\nb",
            "\u202e",
            "0s",
            "366d",
            "367d",
            "300000000d",
            "9" * 30 + "ms",
            "2.0",
            "",
        ]
    ),
    st.integers(min_value=1, max_value=400).map(lambda n: "x" * n),
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    hostile_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(hostile_text, inner, max_size=4),
    ),
    max_leaves=12,
)


def paths(document: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every path into the document, the root excluded."""
    found: list[tuple[str | int, ...]] = []
    if isinstance(document, dict):
        for key, value in document.items():
            found.append((*prefix, key))
            found.extend(paths(value, (*prefix, key)))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found.append((*prefix, index))
            found.extend(paths(value, (*prefix, index)))
    return found


@st.composite
def mutated_documents(draw: st.DrawFn) -> Any:
    document = design_document()
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        where = paths(document)
        if not where:
            break
        path = draw(st.sampled_from(where))
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        action = draw(st.sampled_from(["replace", "delete", "rename", "float"]))
        if action == "replace":
            parent[last] = draw(json_values)
        elif action == "delete":
            del parent[last]
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(hostile_text)] = parent.pop(last)
        elif action == "float" and isinstance(parent[last], int | str):
            parent[last] = 2.0
    return document


def dump(document: Any, form: str) -> str:
    if form == "yaml":
        return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    if form == "flow":
        return yaml.safe_dump(document, default_flow_style=True, allow_unicode=True)
    try:
        return orjson.dumps(document).decode()
    except (TypeError, orjson.JSONEncodeError):  # NaN, huge integers: as Python writes them
        return json.dumps(document)


@FUZZ
@given(mutated_documents(), st.sampled_from(["yaml", "flow", "json"]))
def test_mutated_documents(document: Any, form: str) -> None:
    outcome(dump(document, form))


@FUZZ
@given(json_values)
def test_any_json_value_as_the_whole_document(document: Any) -> None:
    outcome(dump(document, "json"))
    outcome(dump(document, "yaml"))


# ---------------------------------------------------------------- text mutations

FRAGMENTS = [
    "&a ",
    "*a",
    "&b [*a, *a, *a]",
    "<<: *a\n",
    "<<: [*a, *b]\n",
    "!!binary aGk=",
    "!!set {x}",
    "!!python/object:os.system ",
    "!x ",
    "!!timestamp ",
    "2019-02-05",
    "? [a]\n: b\n",
    "[",
    "]",
    "{",
    "}",
    ", ",
    ": ",
    "- ",
    "\n",
    "\t",
    "\n---\n",
    "%YAML 1.1\n---\n",
    "...\n",
    "# ",
    '"',
    "'",
    "|\n",
    "\x00",
    "\ufeff",
    "\u202e",
    "\x85",
    "\U0001f525",
    ".inf",
    ".nan",
    "9" * 40,
    "2.0",
    "367d",
    "Asia",
    "ektp: {}\n",
    "  ektp:\n",
]


@st.composite
def mutated_texts(draw: st.DrawFn) -> str:
    text = DESIGN_EXAMPLE
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        action = draw(st.sampled_from(["insert", "insert", "delete", "duplicate-line"]))
        if action == "insert":
            fragment = draw(
                st.sampled_from(FRAGMENTS) | st.sampled_from(FRAGMENTS) | st.text(max_size=3)
            )
            text = text[:at] + fragment + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + draw(st.integers(min_value=1, max_value=20)) :]
        else:
            lines = text.splitlines(keepends=True)
            index = draw(st.integers(min_value=0, max_value=len(lines) - 1))
            lines.insert(index, lines[index])
            text = "".join(lines)
    return text


@FUZZ
@given(mutated_texts())
def test_mutated_yaml_text(text: str) -> None:
    outcome(text)


# ----------------------------------------------------------- aliases of any shape


@st.composite
def alias_graphs(draw: st.DrawFn) -> str:
    """Anchored lists or mappings, each made of aliases of earlier ones (a bomb when wide
    and deep), sometimes one that names itself (a cycle), under a valid topology's keys."""
    levels = draw(st.integers(min_value=1, max_value=12))
    width = draw(st.integers(min_value=1, max_value=12))
    lines = ["x0: &x0 [lol, lol]"]
    for level in range(1, levels):
        names = [f"*x{draw(st.integers(min_value=0, max_value=level - 1))}" for _ in range(width)]
        if draw(st.integers(min_value=0, max_value=20)) == 0:
            lines.append(f"x{level}: &x{level} [*x{level}]")  # names itself: undefined or a cycle
        elif draw(st.booleans()):
            lines.append(f"x{level}: &x{level} [{', '.join(names)}]")
        else:
            items = ", ".join(f"k{i}: {name}" for i, name in enumerate(names))
            lines.append(f"x{level}: &x{level} {{{items}}}")
    where = draw(st.sampled_from(["top", "policy", "description"]))
    if where == "top":
        return "\n".join(lines) + "\n" + DESIGN_EXAMPLE
    if where == "policy":
        nested = "\n".join("  " + line for line in lines)
        return DESIGN_EXAMPLE.replace("policy:                                   # defaults\n",
                                      f"policy:\n{nested}\n")  # fmt: skip
    deeper = "\n".join("      " + line for line in lines)
    return DESIGN_EXAMPLE.replace(
        "backup-4g: {provider: other}",
        f"backup-4g:\n    provider: other\n    description:\n{deeper}",
    )


@settings(FUZZ, max_examples=60)
@given(alias_graphs())
def test_aliases_never_expand_without_bound(text: str) -> None:
    tracemalloc.start()
    try:
        outcome(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The file is a few hundred bytes; the loader's whole work stays within a few MB.
    assert peak < 64 * 1024 * 1024, f"{peak:,} bytes"


# ------------------------------------------------------------------------ raw bytes


@FUZZ
@given(st.binary(max_size=300) | st.sampled_from([b"\xff\xfe", b"\xef\xbb\xbf{", b"{\x00"]))
def test_any_bytes_as_a_file(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    file = tmp_path_factory.mktemp("fuzz") / "topology.yaml"
    file.write_bytes(data)
    try:
        topology = Topology.load(file)
    except TopologyError as error:
        check_error(error, str(file))
    else:
        check_topology(topology)


@FUZZ
@given(st.binary(max_size=40))
def test_bytes_spliced_into_a_valid_file(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    raw = DESIGN_EXAMPLE.encode()
    at = len(data) * 7 % len(raw)
    file = tmp_path_factory.mktemp("fuzz") / "topology.yaml"
    file.write_bytes(raw[:at] + data + raw[at:])
    try:
        Topology.load(file)
    except TopologyError as error:
        check_error(error, str(file))


def test_the_size_bound_is_the_files_not_the_texts() -> None:
    """``parse`` (text in hand) holds the same bound as ``load``."""
    with pytest.raises(TopologyError, match="larger than"):
        Topology.parse(" " * (MAX_FILE_BYTES + 1), FILE)
