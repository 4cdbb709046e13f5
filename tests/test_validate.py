"""``failover validate``: every error of a topology at once with its path, and for a valid
file the effective policy (where each value comes from) and each link's and provider's
blast radius."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.validate import blast_radius
from tests.helpers import POLICY, make_topology, service, topology_yaml
from tests.helpers import failover as run_failover
from workflows.topology import Topology, TopologyError, parse_document

ROOT = Path(__file__).resolve().parent.parent

THREE_MISTAKES = """\
sites:
  kantor: {name: Kantor, timezone: Asia/Jayapura}
links:
  a: {provider: isp, policy: {stale_afer: 60s}}
services:
  s1:
    site: kantr
    name: {id: Satu, en: One}
    requires: [a, b]
    offline: true
"""


def failover(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return run_failover(*args, columns=80)  # validate's report fits an 80-column terminal


def check(text: str) -> list[TopologyError]:
    _, errors = Topology.check(parse_document(text, "t.yaml"), "t.yaml")
    return errors


def test_three_mistakes_are_all_reported_with_their_paths(tmp_path: Path) -> None:
    errors = check(THREE_MISTAKES)
    assert [e.path for e in errors] == [
        "$.links.a.policy",
        "$.services.s1.site",
        "$.services.s1.requires[1]",
    ]
    assert "'stale_afer' was unexpected" in errors[0].message
    assert "no site 'kantr'" in errors[1].message
    assert "no link 'b'" in errors[2].message
    file = tmp_path / "t.yaml"
    file.write_text(THREE_MISTAKES)
    done = failover("validate", file)
    assert done.returncode == 2
    lines = done.stderr.decode().splitlines()
    assert lines == [f"error: {file}: {e.path}: {e.message}" for e in errors] + [
        f"{file}: 3 errors"
    ]
    as_json = failover("validate", file, "--json")
    assert as_json.returncode == 2
    report = orjson.loads(as_json.stdout)
    assert report["valid"] is False
    assert [e["path"] for e in report["errors"]] == [e.path for e in errors]
    # The loader still stops at the first; where the schema counts more, it says who lists
    # them.
    with pytest.raises(TopologyError, match="stale_afer"):
        Topology.parse(THREE_MISTAKES, "t.yaml")
    two = THREE_MISTAKES.replace("offline: true", "offline: maybe")
    with pytest.raises(TopologyError, match=r"and 1 more: `failover validate` lists them"):
        Topology.parse(two, "t.yaml")


def test_errors_of_every_kind_come_in_the_order_of_the_file() -> None:
    text = """\
sites:
  x: {name: X, timezone: Mars/Olympus}
  y: {name: Y, timezone: Asia/Jayapura, colour: red}
links:
  a: {provider: isp, policy: {stale_after: 0s, flap_threshold: 2.5}}
services:
  one:
    site: x
    name: {id: Satu, en: One}
    requires: [[a, nowhere]]
    offline: false
    policy: {stale_after: 60s, max_future: 1m, manual_after: 10 minutes}
  two:
    site: y
    name: {id: Dua}
    requires: [a]
    offline: true
policy: {restore_after: forever}
"""
    errors = check(text)
    paths = [e.path for e in errors]
    assert paths == [
        "$.sites.x.timezone",
        "$.sites.y",
        "$.links.a.policy.stale_after",
        "$.links.a.policy.flap_threshold",
        "$.services.one.requires[0][1]",
        "$.services.one.policy.stale_after",
        "$.services.one.policy.max_future",
        "$.services.one.policy.manual_after",
        "$.services.one.queue",  # missing: after the keys there are
        "$.services.two.name",
        "$.policy.restore_after",
    ]
    # A service at a site whose own error was reported is not told the site is missing.
    assert not any(e.path == "$.services.one.site" for e in errors)


def test_a_file_that_cannot_be_read_is_one_error(tmp_path: Path) -> None:
    file = tmp_path / "t.yaml"
    file.write_text("a: &a [*a]\n")
    done = failover("validate", file)
    assert done.returncode == 2
    assert b"$.a" in done.stderr
    assert done.stderr.decode().splitlines()[-1] == f"{file}: 1 error"
    assert failover("validate", tmp_path / "missing.yaml").returncode == 2


def test_a_valid_file_shows_effective_policy_and_blast_radius(tmp_path: Path) -> None:
    policy = dict(POLICY)
    del policy["escalate_after"]
    text = topology_yaml(
        {
            "alone": service(["a"], offline=False, policy={"manual_after": "2m"}),
            "redundant": service([["a", "b"]]),
            "both": service(["a", "c"]),
        },
        {
            "a": {"provider": "telkom"},
            "b": {"provider": "telkom", "policy": {"flap_quiet": "1m"}},
            "c": {"provider": "other"},
        },
        policy=policy,
    )
    file = tmp_path / "t.yaml"
    file.write_text(text)
    done = failover("validate", file, "--json")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = orjson.loads(done.stdout)
    alone = report["services"]["alone"]["policy"]
    assert alone["manual_after"] == {"value": "2m", "from": "service"}
    assert alone["degrade_after"] == {"value": "1m", "from": "policy"}
    assert alone["escalate_after"] == {"value": "4h", "from": "default"}
    assert report["links"]["b"]["policy"]["flap_quiet"] == {"value": "1m", "from": "link"}
    assert report["links"]["b"]["policy"]["stale_after"] == {"value": "2m", "from": "policy"}
    assert report["links"]["a"]["carries"] == ["alone", "redundant", "both"]
    assert report["links"]["a"]["takes_down"] == ["alone", "both"]
    assert report["links"]["b"]["takes_down"] == []
    assert report["providers"]["telkom"] == {
        "links": ["a", "b"],
        "carries": ["alone", "redundant", "both"],
        "takes_down": ["alone", "redundant", "both"],
    }
    assert report["providers"]["other"]["takes_down"] == ["both"]
    text_report = failover("validate", file)
    assert text_report.returncode == 0
    out = text_report.stdout.decode()
    assert "manual_after=2m (service)" in out
    assert "escalate_after=4h (default)" in out
    assert "takes down 3: alone, redundant, both" in out
    # Piped output is never cut at the terminal's width.
    assert max(len(line) for line in out.splitlines()) > 80


def test_blast_radius_agrees_with_the_engine_on_who_goes_down() -> None:
    topology = make_topology(
        {"s": service([["a", "b"], "c"]), "t": service([["a", "b"]])}, ("a", "b", "c")
    )
    radius = blast_radius(topology)
    assert radius["links"]["c"]["takes_down"] == ["s"]
    assert radius["links"]["a"]["takes_down"] == []
    assert yaml.safe_dump(radius)  # plain data


_DEMO = yaml.safe_load((ROOT / "streams" / "demo" / "ambon.yaml").read_text())
_VALUES = st.sampled_from(
    [
        "",
        "nowhere",
        "5 minutes",
        "0s",
        "90s",
        2.5,
        -1,
        True,
        None,
        [],
        {},
        ["a"],
        {"x": 1},
        "Asia/Jayapur",
        "telkom-sto-pattimura",
    ]
)


def _paths(value: Any, trail: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [trail] if trail else []
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*trail, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*trail, index))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    # Each drawn value is copied: the lists and dicts among _VALUES are shared
    # objects, and a later mutation of one would change the strategy itself
    # (hypothesis then rejects the draw as flaky).
    document = copy.deepcopy(_DEMO)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(document)
        where = draw(st.sampled_from(paths))
        parent = document
        for step in where[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and draw(st.booleans()) and len(where) > 1:
            if draw(st.booleans()):
                del parent[where[-1]]
            else:
                parent[f"{where[-1]}_x"] = copy.deepcopy(draw(_VALUES))
        else:
            parent[where[-1]] = copy.deepcopy(draw(_VALUES))
    return document


@settings(max_examples=200, deadline=None)
@given(mutated())
def test_check_agrees_with_the_loader(document: Any) -> None:
    topology, errors = Topology.check(document, "t.yaml")
    loaded: Topology | TopologyError
    try:
        loaded = Topology.from_document(document, "t.yaml")
    except TopologyError as exc:
        loaded = exc
    if isinstance(loaded, TopologyError):
        assert topology is None
        assert loaded.path in {e.path for e in errors}
    else:
        assert errors == []
        assert topology == loaded


def test_the_cli_says_its_version() -> None:
    done = failover("--version")
    assert done.returncode == 0
    assert done.stdout.startswith(b"failover 0.")


def test_validate_reads_standard_input() -> None:
    done = run_failover("validate", "-", stdin=THREE_MISTAKES.encode())
    assert done.returncode == 2
    assert done.stderr.decode().splitlines()[-1] == "<stdin>: 3 errors"
    assert b"error: <stdin>: $.services.s1.site: no site 'kantr'" in done.stderr


def test_a_provider_that_is_no_text_is_an_error_not_a_crash() -> None:
    """Found by the property above: a link whose provider is a list is reported at its path,
    and the rest of the file is still checked."""
    document = copy.deepcopy(_DEMO)
    document["links"]["backup-4g"]["provider"] = []
    topology, errors = Topology.check(document, "t.yaml")
    assert topology is None
    assert "$.links.backup-4g.provider" in {e.path for e in errors}
    with pytest.raises(TopologyError):
        Topology.from_document(document, "t.yaml")
