"""Who may steer the engine: signed overrides verified in the core, grants denied by default,
every verdict audited (workflows/operators.py)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import jsonschema_rs
import nacl.signing
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import load_schema
from streams.demokeys import demo_key, sign_as
from tests.helpers import dead_letters, run, transitions
from workflows.engine import Engine
from workflows.operators import (
    KEY_ATTRIBUTE,
    SIGNATURE_ATTRIBUTE,
    sign_override,
    verify_override,
)
from workflows.records import AUDIT, DeadLetter, Emitted
from workflows.replay import read_lines
from workflows.topology import Topology, TopologyError

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "streams" / "demo"
DEMO_TEXT = (DEMO / "ambon.yaml").read_text()
TOPOLOGY = Topology.load(DEMO / "ambon.yaml")
LINES = [raw for _, raw in read_lines(DEMO / "ambon-events.jsonl")]
FORCE_ID = "override/ektp/force_manual/2019-02-04T23:15:30Z"
ACTING, HEAD = "Plt. Kepala Dinas", "Kepala Dinas"


def _event(
    action: str = "force_manual",
    service: str = "ektp",
    actor: str = ACTING,
    role: str = "acting-head",
    time: str = "2019-02-04T23:15:30Z",
    ident: str = "override/test",
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": ident,
        "source": "/operators/console",
        "type": "operator.override.v1",
        "time": time,
        "subject": service,
        "data": {"action": action, "actor": actor, "role": role, "reason": "uji"},
    }


def _verdict(event: dict[str, Any], topology: Topology = TOPOLOGY) -> str | None:
    site = topology.services[event["subject"]].site
    return verify_override(event, topology.operators, site, topology.unsigned_overrides)


def _demo_with(replace: dict[bytes, bytes]) -> list[bytes]:
    """The demo's events with the acting head's override line replaced."""
    return [replace.get(raw, raw) for raw in LINES]


def _force_line() -> bytes:
    (line,) = [raw for raw in LINES if FORCE_ID.encode() in raw]
    return line


def _audits(out: list[Emitted | DeadLetter]) -> list[dict[str, Any]]:
    return [r.event["data"] for r in out if isinstance(r, Emitted) and r.topic == AUDIT]


# ------------------------------------------------------------------------------- signatures


def test_a_signed_override_verifies_and_any_changed_field_does_not() -> None:
    signed = sign_as(_event())
    assert signed[KEY_ATTRIBUTE] == f"{ACTING}/demo"
    assert signed[SIGNATURE_ATTRIBUTE].startswith("ed25519=")
    assert _verdict(signed) is None
    for field, value in [
        ("id", "override/other"),
        ("subject", "akta-lahir"),
        ("time", "2019-02-04T23:15:31Z"),
        ("type", "operator.override.v2"),
    ]:
        assert _verdict({**signed, field: value}) == (
            f"unauthenticated: the signature does not verify with key '{ACTING}/demo'"
        ), field
    for field, value in [("action", "pin"), ("reason", "lain"), ("actor", HEAD)]:
        changed = {**signed, "data": {**signed["data"], field: value}}
        assert _verdict(changed) is not None, field
        assert str(_verdict(changed)).startswith("unauthenticated: the signature does not"), field


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["id", "subject", "time", "type", "action", "actor", "role", "reason"]),
    st.text(min_size=1, max_size=40),
)
def test_any_change_to_a_signed_field_fails(field: str, value: str) -> None:
    """Whatever a signed field is changed to, the override is not taken (deny by default)."""
    signed = sign_as(_event())
    if field in signed["data"]:
        changed = {**signed, "data": {**signed["data"], field: value}}
        original = signed["data"][field]
    else:
        changed = {**signed, field: value}
        original = signed[field]
    if value == original:
        return
    site = TOPOLOGY.services["ektp"].site
    assert verify_override(changed, TOPOLOGY.operators, site) is not None


def test_unsigned_unknown_key_and_another_operators_key_are_unauthenticated() -> None:
    assert str(_verdict(_event())).startswith("unauthenticated: not signed")
    stranger = nacl.signing.SigningKey(b"\x07" * 32)
    assert _verdict(sign_override(_event(), "Mallory/demo", stranger)) == (
        "unauthenticated: unknown key 'Mallory/demo'"
    )
    assert _verdict(sign_override(_event(), f"{ACTING}/2027", demo_key(ACTING))) == (
        f"unauthenticated: unknown key '{ACTING}/2027'"
    )
    # The acting head's key id, signed by someone else's key.
    forged = sign_override(_event(), f"{ACTING}/demo", stranger)
    assert str(_verdict(forged)).startswith("unauthenticated: the signature does not verify")
    broken = {**sign_as(_event()), SIGNATURE_ATTRIBUTE: "ed25519=not base64!"}
    assert str(_verdict(broken)).startswith("unauthenticated: the signature does not verify")


def test_grants_are_denied_by_default() -> None:
    # The acting head may force manual and pin at the Disdukcapil office, nothing else.
    assert _verdict(sign_as(_event("force_manual"))) is None
    assert _verdict(sign_as(_event("pin"))) is None
    assert _verdict(sign_as(_event("release"))) == (
        f"forbidden: operator '{ACTING}' has no grant to release service 'ektp' "
        "(site 'disdukcapil-ambon')"
    )
    assert str(_verdict(sign_as(_event("force_manual", "rekam-ktp-kecamatan")))).startswith(
        f"forbidden: operator '{ACTING}' has no grant to force_manual"
    )
    # The office head may do everything at both offices.
    for action in ("force_manual", "release", "pin", "unpin"):
        event = _event(action, "rekam-ktp-kecamatan", HEAD, "office-head")
        assert _verdict(sign_as(event)) is None
    # An operator with no grants at all may do nothing.
    text = DEMO_TEXT.replace(
        "      - {actions: [force_manual, pin], sites: [disdukcapil-ambon]}\n",
        "      []\n",
    ).replace("    grants:\n      []", "    grants: []")
    bare = Topology.parse(text)
    assert str(_verdict(sign_as(_event()), bare)).startswith("forbidden: operator")


def test_a_grant_may_name_services() -> None:
    text = DEMO_TEXT.replace(
        "{actions: [force_manual, pin], sites: [disdukcapil-ambon]}",
        "{actions: [release], services: [legalisasi]}",
    )
    topology = Topology.parse(text)
    assert _verdict(sign_as(_event("release", "legalisasi")), topology) is None
    assert str(_verdict(sign_as(_event("release", "ektp")), topology)).startswith("forbidden:")


def test_an_operator_signs_as_themselves() -> None:
    as_head = sign_override(_event(actor=HEAD), f"{ACTING}/demo", demo_key(ACTING))
    assert _verdict(as_head) == (
        f"forbidden: actor '{HEAD}' is not the signing operator '{ACTING}'"
    )
    wrong_role = sign_as(_event(role="office-head"))
    assert _verdict(wrong_role) == (
        f"forbidden: role 'office-head' is not operator '{ACTING}''s role 'acting-head'"
    )


def test_unsigned_overrides_accept_takes_only_unsigned_ones() -> None:
    dev = Topology.parse(DEMO_TEXT + "unsigned_overrides: accept\n")
    assert _verdict(_event(actor="anyone", role="any"), dev) is None
    forged = sign_override(_event(), f"{ACTING}/demo", nacl.signing.SigningKey(b"\x01" * 32))
    assert str(_verdict(forged, dev)).startswith("unauthenticated: the signature does not")


# ------------------------------------------------------------------------------- the engine


def test_the_demo_with_the_acting_heads_signed_override() -> None:
    out = run(TOPOLOGY, LINES, audit=True)
    forced = [t for t in transitions(out, "ektp") if t["reason"] == "operator-force-manual"]
    assert [(t["from"], t["to"], t["operator"]["actor"]) for t in forced] == [
        ("degraded", "manual", ACTING)
    ]
    audits = _audits(out)
    assert [(a["action"], a["actor"], a["verdict"]) for a in audits] == [
        ("force_manual", ACTING, "applied"),
        ("pin", HEAD, "applied"),
        ("unpin", HEAD, "applied"),
    ]
    assert audits[0]["key"] == f"{ACTING}/demo"
    assert all(not d.reason.startswith(("unauthenticated", "forbidden")) for d in dead_letters(out))


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("unsigned", "unauthenticated: not signed"),
        ("unknown key", "unauthenticated: unknown key 'Mallory/demo'"),
        ("another site's operator", "forbidden: operator 'Camat Sirimau' has no grant"),
    ],
)
def test_the_demo_override_not_properly_signed_changes_nothing(name: str, reason: str) -> None:
    event = orjson.loads(_force_line())
    event.pop(KEY_ATTRIBUTE)
    event.pop(SIGNATURE_ATTRIBUTE)
    topology = TOPOLOGY
    if name == "unknown key":
        event = sign_override(event, "Mallory/demo", nacl.signing.SigningKey(b"\x02" * 32))
    elif name == "another site's operator":
        camat = nacl.signing.SigningKey(b"\x03" * 32)
        public = base64.b64encode(bytes(camat.verify_key)).decode()
        topology = Topology.parse(
            DEMO_TEXT
            + "  Camat Sirimau:\n    name: Camat Sirimau\n    role: acting-head\n"
            + f"    keys: {{k1: {public}}}\n"
            + "    grants: [{actions: [force_manual], sites: [kecamatan-sirimau]}]\n"
        )
        event["data"]["actor"] = "Camat Sirimau"
        event = sign_override(event, "Camat Sirimau/k1", camat)
    line = orjson.dumps(event)
    out = run(topology, _demo_with({_force_line(): line}), audit=True)
    refused = [d.reason for d in dead_letters(out) if d.raw == line]
    assert len(refused) == 1, refused
    assert refused[0].startswith(reason), refused
    # ektp is not forced: it suspends on its own, later.
    assert "operator-force-manual" not in [t["reason"] for t in transitions(out, "ektp")]
    assert "manual" in [t["to"] for t in transitions(out, "ektp")]
    audit = next(a for a in _audits(out) if a["override"] == FORCE_ID)
    assert audit["verdict"] == "refused"
    assert audit["reason"] == refused[0]


def test_a_replayed_override_is_refused_and_its_verdict_audited_once() -> None:
    force = _force_line()
    lines = list(LINES)
    lines.insert(lines.index(force) + 40, force)  # the same signed order, later
    out = run(TOPOLOGY, lines, audit=True)
    assert [d.reason for d in dead_letters(out) if d.raw == force] == [
        f"replayed: override '{FORCE_ID}' was taken already (within dedup_horizon)"
    ]
    assert [a["verdict"] for a in _audits(out) if a["override"] == FORCE_ID] == ["applied"]
    assert transitions(out) == transitions(run(TOPOLOGY, LINES))


def test_a_stale_signed_override_is_refused() -> None:
    """Stamped more than signature_max_age (15m) behind the engine's clock: a signed order is
    not kept to be used later."""
    engine = Engine(TOPOLOGY)
    for raw in LINES[:400]:
        engine.feed(raw)
    clock = engine.services.watermark
    assert clock is not None
    late = sign_as(_event(time="2019-02-04T23:00:00Z", ident="override/late"))
    engine.feed(orjson.dumps(late))
    (dead,) = [r for r in engine.drain() if isinstance(r, DeadLetter)]
    assert dead.reason.startswith("stale-signature: stamped 2019-02-04T23:00:00Z, more than 15m")


def test_a_not_applicable_override_is_audited_refused() -> None:
    release = sign_as(_event("release", "ektp", HEAD, "office-head", ident="override/rel"))
    out = run(TOPOLOGY, [orjson.dumps(release)], audit=True)
    (audit,) = _audits(out)
    assert (audit["verdict"], audit["reason"]) == (
        "refused",
        "not-applicable: release while online",
    )


def test_audit_records_validate_against_their_schema() -> None:
    validator = jsonschema_rs.validator_for(load_schema("failover.audit.v1"))
    unsigned = orjson.loads(_force_line())
    del unsigned[KEY_ATTRIBUTE], unsigned[SIGNATURE_ATTRIBUTE]
    for lines in (LINES, _demo_with({_force_line(): orjson.dumps(unsigned)})):
        out = run(TOPOLOGY, lines, audit=True)
        audits = [r.event for r in out if isinstance(r, Emitted) and r.topic == AUDIT]
        assert audits
        for event in audits:
            assert validator.is_valid(event), list(validator.iter_errors(event))


# ------------------------------------------------------------------------------- the file


@pytest.mark.parametrize(
    ("old", "new", "path", "problem"),
    [
        (
            "keys: {demo: jmtx",
            "keys: {demo: jm=, x: jmtx",
            "$.operators['Plt. Kepala Dinas'].keys.demo",
            "",
        ),
        (
            "sites: [disdukcapil-ambon]}",
            "sites: [ambon]}",
            "$.operators['Plt. Kepala Dinas'].grants[0].sites[0]",
            "no site 'ambon' in $.sites",
        ),
        ("actions: [force_manual, pin]", "actions: [force_manual, reboot]", "", "reboot"),
    ],
)
def test_bad_operators_are_refused_with_the_path(
    old: str, new: str, path: str, problem: str
) -> None:
    assert old in DEMO_TEXT
    with pytest.raises(TopologyError) as caught:
        Topology.parse(DEMO_TEXT.replace(old, new, 1), "ambon.yaml")
    text = str(caught.value)
    assert path in text
    assert problem in text
