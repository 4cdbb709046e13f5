"""streams.patches: one version gate, every patch installed exactly once, install idempotent,
the pins in pyproject.toml and constraints.txt what the gate accepts, and only the patches
import what they patch."""

from __future__ import annotations

import logging
import pkgutil
import subprocess
import sys
import tomllib
from importlib import import_module
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from packaging.requirements import Requirement

from streams import batches, patches
from streams.patches import _fence, fetch_wait
from tests.importlinter_patches import forbidden_imports

ROOT = Path(__file__).resolve().parent.parent

#: Every attribute replaced and every filter added, by the module of its concern.
EXPECTED = {
    "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._highwaters": "recovery",
    "faust.tables.recovery.Recovery.on_recovery_completed": "recovery",
    "faust.tables.recovery.asyncio": "recovery",
    "faust.transport.consumer.Consumer._drain_messages": "batch_path",
    "faust.transport.consumer.Consumer._new_offset": "batch_path",
    "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._create_worker_consumer": (
        "fetch_wait"
    ),
    "faust.transport.consumer.Consumer._add_gap": "gaps",
    "faust.transport.drivers.aiokafka.Producer.commit_transactions": "commit",
    "faust.transport.consumer.terminal": "commit_log",
    "aiokafka.producer.sender.InitPIDHandler.handle_response": "markers",
    "aiokafka.producer.sender.AddPartitionsToTxnHandler.handle_response": "markers",
    "aiokafka.producer.sender.AddOffsetsToTxnHandler.handle_response": "markers",
    "aiokafka.producer.sender.TxnOffsetCommitHandler.handle_response": "markers",
    "aiokafka.producer.sender.EndTxnHandler.handle_response": "markers",
    "aiokafka.producer.sender.SendProduceReqHandler.handle_response": "markers",
    "logger aiokafka.producer.sender: _PendingMarkersFilter": "markers",
    "logger aiokafka.producer.sender: _NewCoordinatorFilter": "markers",
    "aiokafka.client.AIOKafkaClient._metadata_update": "outage",
    "faust.transport.drivers.aiokafka.Producer._settings_extra": "transaction_timeout",
}

CONCERNS = sorted(
    m.name for m in pkgutil.iter_modules(patches.__path__) if not m.name.startswith("_")
)


def in_place(record: _fence.Replaced) -> int:
    """How many times ``record``'s replacement is in place (0 or 1 for an attribute)."""
    if isinstance(record.owner, logging.Logger):
        return record.owner.filters.count(record.replacement)
    return int(getattr(record.owner, record.name) is record.replacement)


def test_the_installed_releases_are_the_ones_the_gate_accepts() -> None:
    for name, version in patches.ACCEPTED.items():
        assert patches.installed_version(name) == version, name
    patches.check_versions()


def test_pyproject_and_constraints_pin_exactly_what_the_gate_accepts() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in project["dependencies"]:
        requirement = Requirement(line)
        if requirement.name in patches.ACCEPTED:
            pins[requirement.name] = str(requirement.specifier)
    assert pins == {name: f"=={version}" for name, version in patches.ACCEPTED.items()}
    constraints = (ROOT / "constraints.txt").read_text().splitlines()
    for name, version in patches.ACCEPTED.items():
        assert f"{name}=={version}" in constraints


def test_another_release_is_refused_and_nothing_is_patched() -> None:
    """In a fresh process (this one is patched already): the gate names the release, and
    faust and aiokafka are left as they are."""
    script = """
import faust.transport.consumer as consumer
from streams import patches
from streams.patches import _fence
before = consumer.Consumer._add_gap
versions = {"faust-streaming": "0.15.4", "aiokafka": "0.14.0"}
patches.installed_version = versions.__getitem__
try:
    patches.install()
except patches.PatchVersionError as exc:
    print(exc)
else:
    raise SystemExit("installed on faust-streaming 0.15.4")
assert _fence.installed() == [], _fence.installed()
assert consumer.Consumer._add_gap is before
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "faust-streaming 0.15.4 (the patches are checked against 0.15.3)" in done.stdout


def test_the_gate_refuses_in_this_process_too(monkeypatch: pytest.MonkeyPatch) -> None:
    versions = {"faust-streaming": "0.15.3", "aiokafka": "0.15.0"}
    monkeypatch.setattr(patches, "installed_version", versions.__getitem__)
    with pytest.raises(patches.PatchVersionError, match=r"aiokafka 0\.15\.0 \(the patches"):
        patches.install()


def test_every_patch_is_installed_exactly_once() -> None:
    patches.install()
    records = _fence.installed()
    wheres = [record.where for record in records]
    assert len(wheres) == len(set(wheres))  # no attribute replaced twice
    assert {r.where: r.concern.removeprefix("streams.patches.") for r in records} == EXPECTED
    for record in records:
        assert in_place(record) == 1, record.where
    # No replacement wraps another one (a patch installed twice over would).
    replacements = {id(record.replacement) for record in records}
    assert not any(id(record.original) in replacements for record in records)
    # Every concern module patches something, and install() installs every one.
    assert sorted(set(EXPECTED.values())) == CONCERNS


def test_install_twice_is_a_no_op() -> None:
    patches.install()

    def state() -> list[Any]:
        return [
            (r.where, r.original, r.replacement, in_place(r), list(getattr(r.owner, "filters", [])))
            for r in _fence.installed()
        ]

    before = state()
    patches.install()
    assert state() == before


def test_the_fence_refuses_a_second_patch_of_one_attribute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_fence, "_REPLACED", {})

    class Owner:
        def method(self) -> str:
            return "original"

    def first(self: Any) -> str:
        return "first"

    def second(self: Any) -> str:
        return "second"

    original = Owner.method
    assert _fence.replace(Owner, "method", first, "one") is original
    assert _fence.replace(Owner, "method", first, "one") is original  # a no-op
    with pytest.raises(RuntimeError, match=r"Owner\.method is patched by one already"):
        _fence.replace(Owner, "method", second, "two")
    Owner.method = second  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match=r"replaced outside streams\.patches"):
        _fence.replace(Owner, "method", first, "one")


def test_each_concern_says_what_why_which_test_and_upstream() -> None:
    docs = (ROOT / "docs" / "patches.md").read_text()
    for name in CONCERNS:
        module = import_module(f"streams.patches.{name}")
        doc = module.__doc__ or ""
        assert "Proved by" in doc, name
        assert "Upstream:" in doc, name
        assert f"streams/patches/{name}.py" in docs, name
    for where in EXPECTED:
        assert f"`{where}`" in docs, where


def test_the_batch_path_names_fausts_fetching_flag() -> None:
    from faust.transport.consumer import CONSUMER_FETCHING

    assert batches.CONSUMER_FETCHING == CONSUMER_FETCHING


def test_the_consumer_faust_creates_waits_the_apps_fetch_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        fetch_wait, "_original", lambda self, t: SimpleNamespace(_fetch_max_wait_ms=1500)
    )
    thread = SimpleNamespace(app=SimpleNamespace(fetch_max_wait_ms=25))
    assert fetch_wait._create_worker_consumer(thread, None)._fetch_max_wait_ms == 25
    other = SimpleNamespace(app=SimpleNamespace())  # another faust app: faust's wait
    assert fetch_wait._create_worker_consumer(other, None)._fetch_max_wait_ms == 1500


def test_only_the_patches_import_what_they_patch() -> None:
    """The import-linter contract's reading of imports (tests/importlinter_patches.py) finds
    every form, and holds for the code as it is."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
    [patched] = [c["patched"] for c in contracts if c["type"] == "only_patches_import"]
    owners = {
        r.owner.name if isinstance(r.owner, logging.Logger)
        else getattr(r.owner, "__module__", None) if isinstance(r.owner, type)
        else r.owner.__name__
        for r in _fence.installed()
    }  # fmt: skip
    assert set(patched) == owners
    source = """
import faust
from faust.transport import consumer
from faust.transport.drivers.aiokafka import Producer
import aiokafka.client as client
from aiokafka import errors
"""
    assert forbidden_imports(source, patched) == [
        (3, "faust.transport.consumer"),
        (4, "faust.transport.drivers.aiokafka"),
        (5, "aiokafka.client"),
    ]
    for path in (ROOT / "streams").rglob("*.py"):
        if "patches" not in path.parts:
            assert forbidden_imports(path.read_text(), patched) == [], path
