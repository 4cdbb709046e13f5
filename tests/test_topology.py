"""The topology file (docs/topology.md): what loads, what the policy becomes, and how every mistake
an operator can make is reported: ``file: path: problem``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from workflows.topology import (
    MAX_ALIAS_NODES,
    MAX_DEPTH,
    MAX_DURATION,
    MAX_FILE_BYTES,
    LinkPolicy,
    Policy,
    Topology,
    TopologyError,
)

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
    assert topology.links_by_provider == {
        "other": ("backup-4g",),
        "telkom": ("telkom-sto-pattimura",),
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


# ---------------------------------------------------------------- hostile files

BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]"
            for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


def test_the_alias_bomb_is_refused_without_expanding_it(tmp_path: Path) -> None:
    """Nine levels of nine aliases: 387 million nodes once expanded (5.6 GB when it was
    expanded); refused from the composed nodes, which share every alias."""
    assert len(BOMB) < 600
    error = load_error(write(tmp_path, BOMB))
    assert error.path == "$"
    assert "aliases" in error.message
    assert f"{MAX_ALIAS_NODES:,}" in error.message


def test_aliases_within_the_bound_are_allowed(tmp_path: Path) -> None:
    """Sharing a policy block or a list of redundant links is what anchors are for."""
    text = DESIGN_EXAMPLE.replace(
        "    queue: ektp-counter", "    queue: ektp-counter\n    policy: &fast {manual_after: 2m}"
    ).replace("policy: {manual_after: 120s}", "policy: *fast")
    topology = Topology.load(write(tmp_path, text))
    assert topology.services["ektp"].policy.manual_after == 120 * S


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("a: &a [*a]\n", "$.a[0]"),
        ("a: &a {b: *a}\n", "$.a.b"),
        ("a: &a {<<: *a}\n", "$.a['<<']"),
    ],
)
def test_an_alias_that_contains_itself_is_refused(tmp_path: Path, text: str, path: str) -> None:
    error = load_error(write(tmp_path, text))
    assert error.path == path
    assert "alias that contains itself" in error.message


def test_nesting_too_deep_is_refused(tmp_path: Path) -> None:
    text = "a: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n"
    error = load_error(write(tmp_path, text))
    assert "nested deeper" in error.message


@pytest.mark.parametrize(
    ("old", "new", "path", "lines"),
    [
        # Two services with the same key: YAML alone keeps the second without a word.
        (
            "  surat-pindah:\n",
            "  ektp:\n    site: x\n  surat-pindah:\n",
            "$.services.ektp",
            "lines 7 and 13",
        ),
        ("backup-4g: {provider: other}", "backup-4g: {provider: other, provider: x}", None, None),
        ("  degrade_after: 60s", "  degrade_after: 60s\n  degrade_after: 1s", None, None),
    ],
)
def test_a_key_given_twice_is_refused_at_any_level(
    tmp_path: Path, old: str, new: str, path: str | None, lines: str | None
) -> None:
    assert old in DESIGN_EXAMPLE
    error = load_error(write(tmp_path, DESIGN_EXAMPLE.replace(old, new, 1)))
    assert "given twice" in error.message
    if path is not None:
        assert error.path == path
        assert str(lines) in error.message


def test_a_key_given_twice_in_json_is_refused(tmp_path: Path) -> None:
    """orjson and the standard parser both keep the last of two keys without a word."""
    import orjson

    text = orjson.dumps(design_document()).decode()
    ektp = text[text.index('"ektp":') : text.index(',"surat-pindah"')]
    json_file = tmp_path / "topology.json"
    json_file.write_text(text.replace(ektp, f"{ektp},{ektp}"))
    error = load_error(json_file)
    assert error.path == "$.services.ektp"
    assert "given twice" in error.message


@pytest.mark.parametrize("value", ["2.0", "2.5", "true", "'3'"])
def test_a_count_must_be_a_whole_number(tmp_path: Path, value: str) -> None:
    """``2.0`` is an integer to JSON Schema; the engine would count with a float."""
    text = DESIGN_EXAMPLE + f"  flap_threshold: {value}\n"
    error = load_error(write(tmp_path, text))
    assert error.path == "$.policy.flap_threshold"


@pytest.mark.parametrize("value", ["367d", "300000000d", "9" * 5000 + "ms", "8785h"])
def test_a_duration_past_the_maximum_is_refused(tmp_path: Path, value: str) -> None:
    text = DESIGN_EXAMPLE.replace("stale_after: 120s", f"stale_after: {value}")
    error = load_error(write(tmp_path, text))
    assert error.path == "$.policy.stale_after"
    assert "longer than 366d" in error.message
    assert len(str(error)) < 300


def test_the_longest_duration_loads(tmp_path: Path) -> None:
    text = DESIGN_EXAMPLE.replace("stale_after: 120s", "stale_after: 366d")
    topology = Topology.load(write(tmp_path, text))
    assert topology.policy.link.stale_after == MAX_DURATION == 366 * 86_400 * S


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1.0e+400"])
def test_a_threshold_must_be_finite(tmp_path: Path, value: str) -> None:
    text = DESIGN_EXAMPLE.replace("latency_degraded_ms: 800", f"latency_degraded_ms: {value}")
    error = load_error(write(tmp_path, text))
    assert error.path == "$.policy.latency_degraded_ms"
    assert "finite" in error.message


@pytest.mark.parametrize("zone", ["Asia", "America/Argentina", "Etc", "posixrules/x", "Asia/"])
def test_a_region_is_not_a_time_zone(tmp_path: Path, zone: str) -> None:
    """``Asia`` is a directory of the zone database: opening it raised IsADirectoryError."""
    text = DESIGN_EXAMPLE.replace("Asia/Jayapura", zone)
    error = load_error(write(tmp_path, text))
    assert error.path == "$.sites.disdukcapil-ambon.timezone"


def test_an_error_never_repeats_a_huge_value(tmp_path: Path) -> None:
    huge = "A" * 20_000_000
    error = load_error(write(tmp_path, DESIGN_EXAMPLE.replace("Asia/Jayapura", huge)))
    assert error.path == "$.sites.disdukcapil-ambon.timezone"
    assert "20,000,000 characters" in error.message
    assert len(str(error)) < 500


def test_an_error_never_repeats_a_huge_key(tmp_path: Path) -> None:
    huge = "k" * 1_000_000
    text = DESIGN_EXAMPLE.replace("backup-4g: {provider: other}", f"{huge}: {{provider: 7}}")
    error = load_error(write(tmp_path, text))
    assert len(error.path) <= 1000
    assert len(error.message) <= 1000


@pytest.mark.parametrize(
    "value", ['"\\e[2J\\e[31mred"', '"a\\nforged: line"', '"x\\u202ey"', '"\\x85"', '"[/x]"']
)
def test_an_error_message_holds_no_control_character(tmp_path: Path, value: str) -> None:
    error = load_error(write(tmp_path, DESIGN_EXAMPLE.replace("Asia/Jayapura", value)))
    assert str(error).isprintable(), repr(str(error))


@pytest.mark.parametrize(
    ("name", "value"),
    [("terminal escape", '"\\e[31mKantor"'), ("newline", '"a\\nb"'), ("bidi", '"a\\u202eb"')],
)
def test_display_text_holds_no_control_character(tmp_path: Path, name: str, value: str) -> None:
    text = DESIGN_EXAMPLE.replace("Disdukcapil Kota Ambon", value)
    error = load_error(write(tmp_path, text))
    assert error.path == "$.sites.disdukcapil-ambon.name", name


def test_a_file_larger_than_the_maximum(tmp_path: Path) -> None:
    file = tmp_path / "topology.yaml"
    with file.open("wb") as handle:
        handle.write(DESIGN_EXAMPLE.encode())
        handle.seek(MAX_FILE_BYTES)
        handle.write(b"#")
    error = load_error(file)
    assert error.path == "$"
    assert "larger than" in error.message


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    file = tmp_path / "topology.yaml"
    file.write_bytes(DESIGN_EXAMPLE.encode().replace(b"Kota Ambon", b"Kota \xe9mbon"))
    error = load_error(file)
    assert error.path == "line 2"
    assert "not UTF-8" in error.message


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    error = load_error(tmp_path)
    assert "cannot read" in error.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("# nothing\n", "empty"),
        ("[sites, links]\n", "not a mapping"),
        ("just text\n", "not a mapping"),
        ("a: 1\n---\nb: 2\n", "a single document in the stream, but found another"),
    ],
)
def test_a_document_that_is_not_a_mapping(tmp_path: Path, text: str, message: str) -> None:
    error = load_error(write(tmp_path, text))
    assert message in error.message


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("name: Disdukcapil Kota Ambon", "name: 2019-02-05", "a date or time"),
        ("backup-4g: {provider: other}", "4: {provider: other}", "not text"),
        ("backup-4g: {provider: other}", "backup-4g: !!binary aGVsbG8=", "!!binary"),
        ("backup-4g: {provider: other}", "backup-4g: !!set {a, b}", "!!set"),
        ("backup-4g: {provider: other}", "backup-4g: !custom x", "tag"),
        ("offline: true", "offline: " + "9" * 5000, "5,000 digits"),
    ],
)
def test_yaml_beyond_mappings_lists_and_scalars_is_refused(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert old in DESIGN_EXAMPLE
    error = load_error(write(tmp_path, DESIGN_EXAMPLE.replace(old, new, 1)))
    assert message in error.message
    assert error.path.startswith("$")
