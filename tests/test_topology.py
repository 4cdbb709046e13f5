"""The topology file (docs/topology.md): what loads, what the policy becomes, and how every mistake
an operator can make is reported: ``file: path: problem``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from workflows.topology import LinkPolicy, Policy, Topology, TopologyError

S = 1_000_000  # microseconds in a second

DESIGN_EXAMPLE = (Path(__file__).parent / "data" / "design-topology.yaml").read_text()


def design_document() -> dict[str, Any]:
    document = yaml.safe_load(DESIGN_EXAMPLE)
    assert isinstance(document, dict)
    return document


def write(tmp_path: Path, document: dict[str, Any] | str, name: str = "topology.yaml") -> Path:
    file = tmp_path / name
    text = document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False)
    file.write_text(text, encoding="utf-8")
    return file


def load_error(file: Path) -> TopologyError:
    with pytest.raises(TopologyError) as caught:
        Topology.load(file)
    error = caught.value
    assert str(error).startswith(str(file)), str(error)
    assert error.file == str(file)
    return error


# ---------------------------------------------------------------------------- loads


def test_design_example_loads(tmp_path: Path) -> None:
    topology = Topology.load(write(tmp_path, DESIGN_EXAMPLE))

    assert set(topology.sites) == {"disdukcapil-ambon"}
    site = topology.sites["disdukcapil-ambon"]
    assert site.name == "Disdukcapil Kota Ambon"
    assert site.timezone.key == "Asia/Jayapura"
    assert set(topology.links) == {"telkom-sto-pattimura", "backup-4g"}
    assert topology.links["telkom-sto-pattimura"].provider == "telkom"

    ektp = topology.services["ektp"]
    assert ektp.requires == (("telkom-sto-pattimura",),)
    assert not ektp.offline
    assert ektp.queue == "ektp-counter"
    assert (ektp.name_id, ektp.name_en) == ("KTP elektronik", "Electronic ID card")

    pindah = topology.services["surat-pindah"]
    assert pindah.requires == (("telkom-sto-pattimura", "backup-4g"),)
    assert pindah.offline
    assert pindah.queue is None

    assert topology.services_by_link == {
        "telkom-sto-pattimura": ("ektp", "surat-pindah"),
        "backup-4g": ("surat-pindah",),
    }


def test_policy_defaults_in_microseconds(tmp_path: Path) -> None:
    topology = Topology.load(write(tmp_path, DESIGN_EXAMPLE))
    policy = topology.services["ektp"].policy
    assert policy.degrade_after == 60 * S
    assert policy.manual_after == 300 * S
    assert policy.degraded_max == 1800 * S
    assert policy.recover_after == 300 * S
    assert policy.restore_after == 900 * S
    assert policy.relapse_after == 60 * S
    assert policy.escalate_after == 4 * 3600 * S
    assert topology.policy == policy
    for link in topology.links.values():
        assert link.policy.stale_after == 120 * S
        assert link.policy.latency_degraded_ms == 800
        assert link.policy.loss_degraded_pct == 5


def test_per_service_override_changes_only_that_key_of_that_service(tmp_path: Path) -> None:
    topology = Topology.load(write(tmp_path, DESIGN_EXAMPLE))
    pindah = topology.services["surat-pindah"].policy
    ektp = topology.services["ektp"].policy
    assert pindah.manual_after == 120 * S
    assert ektp.manual_after == 300 * S
    # Every other key is the file's default.
    assert pindah.degrade_after == ektp.degrade_after == 60 * S
    assert pindah.restore_after == ektp.restore_after == 900 * S
    assert pindah.escalate_after == ektp.escalate_after == 4 * 3600 * S


def test_policy_omitted_gives_built_in_defaults(tmp_path: Path) -> None:
    document = design_document()
    del document["policy"]
    del document["services"]["surat-pindah"]["policy"]
    topology = Topology.load(write(tmp_path, document))
    assert topology.policy == Policy()
    assert topology.services["surat-pindah"].policy == Policy()
    assert topology.links["backup-4g"].policy == LinkPolicy()


def test_millisecond_and_day_durations(tmp_path: Path) -> None:
    document = design_document()
    document["policy"]["degrade_after"] = "1500ms"
    document["policy"]["escalate_after"] = "1d"
    topology = Topology.load(write(tmp_path, document))
    assert topology.policy.degrade_after == 1_500_000
    assert topology.policy.escalate_after == 86_400 * S


def test_link_policy_override(tmp_path: Path) -> None:
    document = design_document()
    document["links"]["backup-4g"]["policy"] = {"stale_after": "5m", "latency_degraded_ms": 2000}
    topology = Topology.load(write(tmp_path, document))
    backup = topology.links["backup-4g"].policy
    assert backup.stale_after == 300 * S
    assert backup.latency_degraded_ms == 2000
    assert backup.loss_degraded_pct == 5  # from $.policy
    assert topology.links["telkom-sto-pattimura"].policy.stale_after == 120 * S


# --------------------------------------------------------------------------- errors


def test_unknown_link_in_requires(tmp_path: Path) -> None:
    document = design_document()
    document["services"]["ektp"]["requires"] = ["telkom-sto-pattimura", "fibre-x"]
    error = load_error(write(tmp_path, document))
    assert error.path == "$.services.ektp.requires[1]"
    assert "fibre-x" in error.message
    assert str(error) == f"{tmp_path / 'topology.yaml'}: $.services.ektp.requires[1]: " + (
        error.message
    )


def test_unknown_link_inside_redundant_group(tmp_path: Path) -> None:
    document = design_document()
    document["services"]["surat-pindah"]["requires"] = [["backup-4g", "fibre-x"]]
    error = load_error(write(tmp_path, document))
    assert error.path == "$.services.surat-pindah.requires[0][1]"
    assert "fibre-x" in error.message
    assert "$.services.surat-pindah.requires[0][1]" in str(error)


def test_service_with_unknown_site(tmp_path: Path) -> None:
    document = design_document()
    document["services"]["ektp"]["site"] = "kecamatan-nusaniwe"
    error = load_error(write(tmp_path, document))
    assert error.path == "$.services.ektp.site"
    assert "kecamatan-nusaniwe" in error.message


@pytest.mark.parametrize(
    ("where", "path"),
    [
        (("policy",), "$.policy.manual_after"),
        (("services", "surat-pindah", "policy"), "$.services.surat-pindah.policy.manual_after"),
    ],
)
def test_bad_duration(tmp_path: Path, where: tuple[str, ...], path: str) -> None:
    document = design_document()
    node = document
    for key in where:
        node = node[key]
    node["manual_after"] = "5 minutes"
    error = load_error(write(tmp_path, document))
    assert error.path == path
    assert "5 minutes" in error.message


def test_zero_duration(tmp_path: Path) -> None:
    document = design_document()
    document["policy"]["restore_after"] = "0s"
    error = load_error(write(tmp_path, document))
    assert error.path == "$.policy.restore_after"
    assert "zero" in error.message


def test_online_only_service_without_queue(tmp_path: Path) -> None:
    document = design_document()
    del document["services"]["ektp"]["queue"]
    error = load_error(write(tmp_path, document))
    assert error.path == "$.services.ektp.queue"
    assert "queue" in error.message
    assert "online-only" in error.message


def test_unknown_timezone(tmp_path: Path) -> None:
    document = design_document()
    document["sites"]["disdukcapil-ambon"]["timezone"] = "Asia/Atlantis"
    error = load_error(write(tmp_path, document))
    assert error.path == "$.sites.disdukcapil-ambon.timezone"
    assert "Asia/Atlantis" in error.message


def test_invalid_yaml_names_line_and_column(tmp_path: Path) -> None:
    text = DESIGN_EXAMPLE.replace("backup-4g: {provider: other}", "backup-4g: {provider: other")
    error = load_error(write(tmp_path, text))
    assert error.path.startswith("line ")
    assert "column" in error.path
    line = int(error.path.split()[1].rstrip(","))
    assert 4 <= line <= 6  # at or just after the unclosed brace on line 4
    assert "YAML" in error.message


def test_link_level_key_in_service_policy(tmp_path: Path) -> None:
    document = design_document()
    document["services"]["surat-pindah"]["policy"] = {"stale_after": "60s"}
    error = load_error(write(tmp_path, document))
    assert error.path == "$.services.surat-pindah.policy.stale_after"
    assert "per link" in error.message


def test_schema_violation_names_the_path(tmp_path: Path) -> None:
    document = design_document()
    document["services"]["ektp"]["offline"] = "no"
    error = load_error(write(tmp_path, document))
    assert error.path == "$.services.ektp.offline"


def test_file_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    error = load_error(missing)
    assert error.path == "$"
    assert "cannot read" in error.message


def test_parse_names_the_given_file() -> None:
    with pytest.raises(TopologyError) as caught:
        Topology.parse("sites: [", "operator.yaml")
    assert str(caught.value).startswith("operator.yaml: line ")


# ---------------------------------------------------------------------------- JSON


def test_a_json_topology_is_the_same_topology(tmp_path: Path) -> None:
    """JSON is YAML: the same document as JSON (read by orjson, the fast path for large
    topologies) gives exactly the topology the YAML gives."""
    import orjson

    from_yaml = Topology.load(write(tmp_path, DESIGN_EXAMPLE))
    json_file = tmp_path / "topology.json"
    json_file.write_bytes(orjson.dumps(design_document()))
    assert Topology.load(json_file) == from_yaml


def test_a_json_topology_names_the_path_of_what_is_wrong(tmp_path: Path) -> None:
    import orjson

    document = design_document()
    document["services"]["ektp"]["requires"] = ["no-such-link"]
    json_file = tmp_path / "topology.json"
    json_file.write_bytes(orjson.dumps(document))
    error = load_error(json_file)
    assert error.path == "$.services.ektp.requires[0]"
    assert "no-such-link" in error.message


def test_flow_style_yaml_is_not_mistaken_for_json(tmp_path: Path) -> None:
    """A YAML document in flow style starts with ``{`` too: orjson refuses it, YAML reads it;
    broken, it is reported by the YAML parser with its line."""
    flow = yaml.safe_dump(design_document(), default_flow_style=True)
    assert flow.startswith("{")
    assert Topology.load(write(tmp_path, flow)) == Topology.load(write(tmp_path, DESIGN_EXAMPLE))
    error = load_error(write(tmp_path, "{sites: [", "broken.yaml"))
    assert error.path.startswith("line ")
