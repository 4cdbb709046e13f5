"""faust reads only ``FAILOVER_FAUST_*`` (``streams.app.faust_environment``): its own variables
in the process's environment no longer override what the worker's settings say."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.app import build_app, faust_environment
from streams.config import Settings, SettingsError
from workflows.topology import Topology

TOPOLOGY = Topology.load(Path(__file__).parent / "data" / "design-topology.yaml")


def test_faust_own_variables_are_ignored_and_the_prefixed_ones_applied(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Both would have changed the app before: faust read them from os.environ.
    monkeypatch.setenv("PROCESSING_GUARANTEE", "at_least_once")
    monkeypatch.setenv("BROKER_COMMIT_INTERVAL", "9")
    settings = Settings.from_env({
        "FAILOVER_DATA_DIR": str(tmp_path),
        "FAILOVER_STORE": "memory://",
        "FAILOVER_FAUST_PRODUCER_LINGER": "0.005",
        "FAILOVER_UNSIGNED_TICKS": "accept",
    })  # fmt: skip
    app = build_app(settings, TOPOLOGY)
    assert app.conf.processing_guarantee.value == "exactly_once"
    assert app.conf.broker_commit_interval == settings.commit_interval
    assert app.conf.producer_linger == 0.005


def test_a_name_faust_does_not_read_is_refused() -> None:
    settings = Settings.from_env({"FAILOVER_FAUST_PRODUCER_LINGERING": "1"})
    with pytest.raises(SettingsError) as caught:
        faust_environment(settings)
    assert caught.value.variable == "FAILOVER_FAUST_PRODUCER_LINGERING"
    assert "faust reads no setting from PRODUCER_LINGERING" in str(caught.value)


def test_the_app_is_not_built_without_a_tick_key(tmp_path: Path) -> None:
    """Deny by default: with no tick key, and no FAILOVER_UNSIGNED_TICKS=accept, any producer
    could move the engine's clock; the app refuses to be built."""
    settings = Settings.from_env(
        {"FAILOVER_DATA_DIR": str(tmp_path), "FAILOVER_STORE": "memory://"}
    )
    with pytest.raises(SettingsError) as caught:
        build_app(settings, TOPOLOGY)
    assert caught.value.variable == "FAILOVER_TICK_SECRET"
