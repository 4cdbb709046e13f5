"""Planned maintenance windows (workflows/maintenance.py): a window of the Ambon exchange
announced ahead, planned manual at its start with no escalation and no on-call page, restored
after its end; cancelled and extended; every refusal dead-lettered, audited and changing
nothing; an unplanned failure of another link acting as it would without the window."""

from __future__ import annotations

from datetime import UTC, datetime
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
from tests.helpers import (
    Record,
    at,
    commands,
    dead_letters,
    envelope,
    notices,
    raw,
    run,
    scenario,
    transitions,
)
from workflows.engine import Engine
from workflows.maintenance import Accepted, Windows, affected
from workflows.operators import KEY_ATTRIBUTE, SIGNATURE_ATTRIBUTE, sign_override
from workflows.records import AUDIT, DeadLetter, Emitted
from workflows.service import ServiceState
from workflows.timeutil import parse_time
from workflows.topology import Topology, TopologyError

ROOT = Path(__file__).resolve().parent.parent
DEMO_TEXT = (ROOT / "streams" / "demo" / "ambon.yaml").read_text()
# The Ambon offices with a short escalation (a window longer than it must not escalate) and
# the public told an hour ahead.
TEXT = DEMO_TEXT.replace("escalate_after: 4h", "escalate_after: 30m\n  announce_before: 1h")
TOPOLOGY = Topology.parse(TEXT, "ambon-maintenance.yaml")
HEAD, ACTING = "Kepala Dinas", "Plt. Kepala Dinas"
EXCHANGE = "telkom-sto-pattimura"
AFFECTED = ["akta-lahir", "ektp", "legalisasi"]  # what the exchange alone takes down
H = 3600
WINDOW = "sto-pattimura-2019-02"


def window(
    action: str,
    t: float,
    *,
    wid: str = WINDOW,
    ident: str | None = None,
    actor: str = HEAD,
    role: str = "office-head",
    signed: bool = True,
    **fields: Any,
) -> dict[str, Any]:
    """A window action at ``t``; ``announce`` defaults to the exchange from 2 h to 4 h."""
    data: dict[str, Any] = {"action": action, "actor": actor, "role": role,
                            "reason": "Penyambungan ulang fiber di STO Pattimura."}  # fmt: skip
    if action == "announce":
        data |= {"links": [EXCHANGE], "start": at(2 * H), "end": at(4 * H),
                 "notice": {"id": "Mohon maaf.", "en": "We apologise."}}  # fmt: skip
    data |= fields
    event = envelope("operator.maintenance.v1", ident or f"maintenance/{WINDOW}/{action}/{t}", t,
                     wid, data, "/operators/failover-cli")  # fmt: skip
    return sign_as(event) if signed else event


def outage(*extra: dict[str, Any], stop: float = 6 * H, down: tuple[float, float] = (2 * H,
           3.5 * H), others: dict[str, Any] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Probes of the three links (the exchange down over ``down``) and ticks every minute."""
    links: dict[str, Any] = {EXCHANGE: [(0, "up"), (down[0], "down"), (down[1], "up")],
                             "backup-4g": [(0, "up")], "vsat-palapa": [(0, "up")]}  # fmt: skip
    links.update(others or {})
    return scenario(stop, links, *extra)


def audits(out: list[Record]) -> list[dict[str, Any]]:
    return [r.event["data"] for r in out if isinstance(r, Emitted) and r.topic == AUDIT]


def templates(out: list[Record], svc: str) -> list[tuple[str, str, str]]:
    return [(e["time"], e["data"]["audience"], e["data"]["template"]) for e in notices(out, svc)]


def of(out: list[Record], svc: str) -> list[dict[str, Any]]:
    """Everything said about ``svc``: its transitions and commands, in order."""
    return [r.event for r in out if isinstance(r, Emitted) and r.key == svc and r.topic != AUDIT]


# ------------------------------------------------------------------------------- the window


def test_a_window_of_the_exchange_is_announced_planned_quiet_and_restored() -> None:
    out = run(TOPOLOGY, outage(window("announce", 10)), audit=True)
    (verdict,) = audits(out)
    assert (verdict["verdict"], verdict["window"], verdict["action"]) == (
        "applied",
        WINDOW,
        "announce",
    )
    assert not dead_letters(out)
    for svc in AFFECTED:
        hold = not TOPOLOGY.services[svc].offline
        said = templates(out, svc)
        # Told an hour ahead (announce_before), in both languages, that it is planned.
        kind = "hold" if hold else "manual"
        assert said[:2] == [
            (at(H), "public", f"maintenance-announce-{kind}-public"),
            (at(H), "staff", "maintenance-announce-staff"),
        ], said
        ahead = notices(out, svc, "public")[0]["data"]["text"]
        assert "terencana" in ahead["id"]
        assert "Planned" in ahead["en"]
        assert "We apologise." in ahead["en"]
        assert "Mohon maaf." in ahead["id"]
        # At the start: to manual, planned, naming the operator and the window.
        moves = transitions(out, svc)
        assert [(t["from"], t["to"], t["reason"]) for t in moves] == [
            ("online", "manual", "maintenance"),
            ("manual", "restored", "stable"),
            ("restored", "online", "reconciled"),
        ]
        assert moves[0]["operator"]["action"] == "maintenance"
        assert moves[0]["operator"]["actor"] == HEAD
        assert WINDOW in moves[0]["detail"]
        start = [n for n in notices(out, svc) if n["time"] == at(2 * H)]
        assert [n["data"]["template"] for n in start] == [
            f"maintenance-{kind}-public",
            f"maintenance-{kind}-staff",
        ]
        assert "planned" in start[0]["data"]["text"]["en"]
        assert "terencana" in start[0]["data"]["text"]["id"]
        if hold:
            assert [c["time"] for c in commands(out, "failover.queue.hold.v1", svc)] == [at(2 * H)]
        # No escalation and no on-call page: the window (2 h) is longer than escalate_after.
        assert not commands(out, "failover.escalate.v1", svc)
        assert not notices(out, svc, "oncall")
        # Healthy again at 3.5 h, stable for 15 min by 3.75 h: restored at the end, 4 h.
        restored = [e for e in of(out, svc) if e["type"] == "failover.transition.v1"][1]
        assert restored["time"] == at(4 * H)
    # Services with a redundant path the exchange does not take down are not touched.
    for svc in ("surat-pindah", "rekam-ktp-kecamatan"):
        assert not transitions(out, svc)
        assert not notices(out, svc)


def test_a_link_that_stays_down_past_the_end_restores_when_healthy_and_escalates_late() -> None:
    out = run(TOPOLOGY, outage(window("announce", 10), down=(2 * H, 5 * H), stop=7 * H))
    moves = [e for e in of(out, "legalisasi") if e["type"] == "failover.transition.v1"]
    assert [(m["data"]["to"], m["time"]) for m in moves] == [
        ("manual", at(2 * H)),
        ("restored", at(5 * H + 900)),
        ("online", at(5 * H + 900)),
    ]
    # Escalated as usual, counting from the window's end, not from its start.
    heads = commands(out, "failover.escalate.v1", "legalisasi")
    assert [(c["data"]["to"], c["time"]) for c in heads] == [
        ("office-head", at(4.5 * H)),
        ("provider", at(5 * H)),
    ]


def test_a_window_announced_late_is_told_at_once() -> None:
    out = run(TOPOLOGY, outage(window("announce", 1.5 * H)))
    assert templates(out, "ektp")[0] == (at(1.5 * H), "public", "maintenance-announce-hold-public")


def test_cancelled_before_its_start_the_public_is_told_and_nothing_happens() -> None:
    cancel = window("cancel", 1.5 * H)
    out = run(TOPOLOGY, outage(window("announce", 10), cancel, down=(7 * H, 8 * H)), audit=True)
    assert [(a["action"], a["verdict"]) for a in audits(out)] == [
        ("announce", "applied"),
        ("cancel", "applied"),
    ]
    for svc in AFFECTED:
        assert not transitions(out, svc)
        said = [t for _, _, t in templates(out, svc)]
        assert said[2:] == ["maintenance-cancel-public", "maintenance-cancel-staff"]
        assert "cancelled" in notices(out, svc, "public")[1]["data"]["text"]["en"]


def test_cancelled_during_the_window_it_ends_there() -> None:
    # The exchange is back at 2.5 h; the window is called off at 3 h: restored at 3 h (the
    # link has been stable since 2.5 h + 15 min), not at 4 h.
    out = run(TOPOLOGY, outage(window("announce", 10), window("cancel", 3 * H),
                               down=(2 * H, 2.5 * H)))  # fmt: skip
    moves = [e for e in of(out, "ektp") if e["type"] == "failover.transition.v1"]
    assert [(m["data"]["to"], m["time"]) for m in moves][:2] == [
        ("manual", at(2 * H)),
        ("restored", at(3 * H)),
    ]


def test_extended_the_public_is_told_and_it_restores_at_the_new_end() -> None:
    extend = window("extend", 3 * H, end=at(5 * H))
    out = run(TOPOLOGY, outage(window("announce", 10), extend), audit=True)
    for svc in AFFECTED:
        moves = [e for e in of(out, svc) if e["type"] == "failover.transition.v1"]
        assert [(m["data"]["to"], m["time"]) for m in moves][:2] == [
            ("manual", at(2 * H)),
            ("restored", at(5 * H)),
        ]
        extended = [n for n in notices(out, svc, "public") if n["time"] == at(3 * H)]
        assert [n["data"]["template"] for n in extended] == ["maintenance-extend-public"]
        assert "extended" in extended[0]["data"]["text"]["en"]
        assert not commands(out, "failover.escalate.v1", svc)
    # Extending what is over, or to an earlier end, is refused.
    late = window("extend", 4.5 * H, end=at(6 * H), ident="late-extend")
    earlier = window("extend", 3.2 * H, end=at(3.5 * H), ident="earlier")
    out = run(TOPOLOGY, outage(window("announce", 10), earlier, late), audit=True)
    reasons = [d.reason for d in dead_letters(out)]
    assert reasons[0].startswith("not-applicable: extend to 2019-02-05T03:30:00Z, not after")
    assert reasons[1] == f"not-applicable: window '{WINDOW}' is over (2019-02-05T04:00:00Z)"


def test_an_unplanned_failure_of_another_link_during_the_window_acts_as_now() -> None:
    """The 4G backup fails during the window: the change-of-address letter (exchange or 4G)
    goes down, to manual with the usual notices and escalation, exactly as without the
    window; the window's services stay quiet."""
    backup = {"backup-4g": [(0, "up"), (2.5 * H, "down"), (3.8 * H, "up")]}
    plain = run(TOPOLOGY, outage(others=backup))
    planned = run(TOPOLOGY, outage(window("announce", 10), others=backup))
    assert of(planned, "surat-pindah") == of(plain, "surat-pindah")
    moves = transitions(planned, "surat-pindah")
    assert [m["reason"] for m in moves][:2] == ["impaired", "down-sustained"]
    assert commands(planned, "failover.escalate.v1", "surat-pindah")
    assert notices(planned, "surat-pindah", "oncall")  # its degraded page, as now
    for svc in AFFECTED:
        assert not commands(planned, "failover.escalate.v1", svc)


def test_a_site_window_takes_every_service_of_the_site() -> None:
    site = window("announce", 10, links=None, site="kecamatan-sirimau")
    del site["data"]["links"]
    site = sign_as({k: v for k, v in site.items() if k not in (KEY_ATTRIBUTE, SIGNATURE_ATTRIBUTE)})
    out = run(TOPOLOGY, outage(site, down=(10 * H, 11 * H)))
    assert [t["reason"] for t in transitions(out, "rekam-ktp-kecamatan")][:1] == ["maintenance"]
    for svc in AFFECTED:
        assert not transitions(out, svc)


def test_which_services_a_window_affects() -> None:
    assert [s for s, _ in affected(TOPOLOGY, "links", (EXCHANGE,))] == AFFECTED
    assert [s for s, _ in affected(TOPOLOGY, "provider", ("telkom",))] == AFFECTED
    both = affected(TOPOLOGY, "links", (EXCHANGE, "backup-4g"))
    assert dict(both)["surat-pindah"] == (EXCHANGE, "backup-4g")
    assert affected(TOPOLOGY, "site", ("kecamatan-sirimau",)) == [("rekam-ktp-kecamatan", None)]


# ------------------------------------------------------------------------------- refusals


def _refused(bad: dict[str, Any] | bytes, reason: str, *before: dict[str, Any]) -> None:
    """``bad`` is dead-lettered with ``reason``, audited refused, and changes nothing."""
    line = raw(bad)
    plain = run(TOPOLOGY, outage(*before))
    out = run(TOPOLOGY, sorted_in(outage(*before), line), audit=True)
    refused = [d.reason for d in dead_letters(out) if d.raw == line]
    assert len(refused) == 1, refused
    assert refused[0].startswith(reason), refused
    assert [r for r in out if not (isinstance(r, Emitted) and r.topic == AUDIT)
            and not (isinstance(r, DeadLetter) and r.raw == line)] == plain  # fmt: skip
    mine = [a for a in audits(out) if a["override"] == orjson.loads(line)["id"]]
    if reason.startswith("replayed"):
        assert [a["verdict"] for a in mine] == ["applied"]
    else:
        assert [(a["verdict"], a["reason"]) for a in mine] == [("refused", refused[0])]


def sorted_in(events: list[dict[str, Any]], line: bytes) -> list[Any]:
    """``line`` placed among ``events`` by its time (before the tick of its instant)."""
    time = orjson.loads(line)["time"]
    index = next(i for i, e in enumerate(events) if e["time"] > time)
    return [*events[:index], line, *events[index:]]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("unsigned", "unauthenticated: not signed (a maintenance window needs"),
        ("unknown key", "unauthenticated: unknown key 'Mallory/demo'"),
        ("forged", "unauthenticated: the signature does not verify"),
        ("override signature", "unauthenticated: the signature does not verify"),
        ("not granted", f"forbidden: operator '{ACTING}' has no maintenance grant"),
        ("as someone else", f"forbidden: actor '{ACTING}' is not the signing operator"),
        ("unknown link", "not-applicable: no link 'sto-lain' in the topology"),
        ("ends before it starts", "not-applicable: the window ends"),
        ("cancel unknown", "not-applicable: no window 'nope'"),
    ],
)
def test_refusals_are_dead_lettered_audited_and_change_nothing(name: str, reason: str) -> None:
    good = window("announce", 10)
    unsigned = {k: v for k, v in good.items() if k not in (KEY_ATTRIBUTE, SIGNATURE_ATTRIBUTE)}
    bad: dict[str, Any]
    if name == "unsigned":
        bad = unsigned
    elif name == "unknown key":
        bad = sign_override(unsigned, "Mallory/demo", nacl.signing.SigningKey(b"\x02" * 32))
    elif name == "forged":
        bad = sign_override(unsigned, f"{HEAD}/demo", nacl.signing.SigningKey(b"\x02" * 32))
    elif name == "override signature":
        # Signed as an override of the same fields: the domain differs, so it does not verify.
        as_override = {**unsigned, "type": "operator.override.v1"}
        signature = sign_as(as_override)[SIGNATURE_ATTRIBUTE]
        bad = {**unsigned, KEY_ATTRIBUTE: f"{HEAD}/demo", SIGNATURE_ATTRIBUTE: signature}
    elif name == "not granted":
        bad = window("announce", 10, actor=ACTING, role="acting-head")
    elif name == "as someone else":
        bad = sign_override({**unsigned, "data": {**unsigned["data"], "actor": ACTING}},
                            f"{HEAD}/demo", demo_key(HEAD))  # fmt: skip
    elif name == "unknown link":
        bad = window("announce", 10, links=["sto-lain"])
    elif name == "ends before it starts":
        bad = window("announce", 10, end=at(H))
    else:
        bad = window("cancel", 10, wid="nope")
    _refused(bad, reason)


def test_a_replayed_window_action_is_refused_once_and_audited_once() -> None:
    good = window("announce", 10)
    _refused(window("announce", 10), "replayed: maintenance action", good)


def test_a_stale_window_action_is_refused() -> None:
    """Stamped more than signature_max_age (15m) behind the engine's clock."""
    engine = Engine(TOPOLOGY)
    for event in outage(stop=H):
        engine.feed(raw(event))
    engine.drain()
    engine.feed(raw(window("announce", 0.5 * H)))
    out = engine.drain()
    (dead,) = dead_letters(out)
    assert dead.reason.startswith("stale-signature: stamped 2019-02-05T00:30:00Z, more than 15m")
    assert [a["verdict"] for a in audits(out)] == ["refused"]


def test_a_window_on_a_topology_without_operators_is_refused() -> None:
    bare = Topology.parse(DEMO_TEXT.split("# Who may steer the engine")[0])
    out = run(bare, [window("announce", 10)], audit=True)
    assert dead_letters(out)[0].reason.startswith("unauthenticated: unknown key")


def test_audit_records_validate_against_their_schema() -> None:
    validator = jsonschema_rs.validator_for(load_schema("failover.audit.v1"))
    transition = jsonschema_rs.validator_for(load_schema("failover.transition.v1"))
    notice = jsonschema_rs.validator_for(load_schema("failover.notice.v1"))
    out = run(TOPOLOGY, outage(window("announce", 10), window("extend", 3 * H, end=at(5 * H)),
                               window("cancel", 10, wid="nope")), audit=True)  # fmt: skip
    records = [r.event for r in out if isinstance(r, Emitted)]
    assert len([e for e in records if e["type"] == "failover.audit.v1"]) == 3
    for event in records:
        check = {"failover.audit.v1": validator, "failover.transition.v1": transition,
                 "failover.notice.v1": notice}.get(event["type"])  # fmt: skip
        if check is not None:
            assert check.is_valid(event), list(check.iter_errors(event))


# ------------------------------------------------------------------------------- state


def test_the_state_round_trips_with_its_windows_and_reads_old_snapshots() -> None:
    engine = Engine(TOPOLOGY)
    for event in outage(window("announce", 10), stop=2.5 * H):
        engine.feed(raw(event))
    state = engine.services.states["ektp"]
    assert state.windows is not None
    assert state.quiet_until is not None
    saved = orjson.loads(orjson.dumps(state.to_json()))
    assert saved[19][0][0] == WINDOW
    assert saved[20] == state.quiet_until
    again = ServiceState.from_json(saved)
    assert again.windows == state.windows
    assert again.quiet_until == state.quiet_until
    old = ServiceState.from_json(saved[:19])
    assert old.windows is None
    assert old.quiet_until is None
    registry = Windows(TOPOLOGY)
    registry.load(orjson.loads(orjson.dumps(engine.windows.to_json())))
    assert registry.to_json() == engine.windows.to_json()


def test_a_grant_names_known_links_and_providers() -> None:
    for old, new, problem in [
        ("providers: [telkom]", "providers: [indosat]", "no link of provider 'indosat'"),
        ("providers: [telkom]", "links: [sto-lain]", "no link 'sto-lain' in $.links"),
    ]:
        with pytest.raises(TopologyError) as caught:
            Topology.parse(TEXT.replace(old, new), "ambon.yaml")
        assert problem in str(caught.value)
    with pytest.raises(TopologyError, match="announce_before"):
        Topology.parse(TEXT.replace("announce_before: 1h", "announce_before: soon"))


# ------------------------------------------------------------------------------- properties


FIELDS = ["id", "subject", "time", "type", "action", "actor", "role", "reason", "start", "end"]


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_any_byte_change_to_a_signed_window_is_refused(position: int, xor: int) -> None:
    """Flip any bits of any byte of a signed window: it is refused (not taken), or it is no
    window at all; never applied."""
    line = bytearray(raw(window("announce", 10)))
    position %= len(line)
    line[position] ^= xor
    engine = Engine(TOPOLOGY)
    engine.feed(bytes(line))
    out = engine.drain()
    assert not [a for a in audits(out) if a["verdict"] == "applied"]
    assert len(dead_letters(out)) == 1
    assert engine.windows.windows == {}


@settings(max_examples=25, deadline=None)
@given(
    start=st.integers(min_value=1, max_value=30),
    length=st.integers(min_value=1, max_value=30),
    down=st.tuples(st.integers(min_value=0, max_value=70), st.integers(min_value=1, max_value=70)),
)
def test_a_window_never_escalates_or_pages_while_it_lasts(
    start: int, length: int, down: tuple[int, int]
) -> None:
    """Whatever the window (in 5-minute steps) and whenever the exchange fails: the
    window's services are never escalated or paged before the window is over."""
    begin, end = start * 300, (start + length) * 300
    announce = window("announce", 10, start=at(begin), end=at(end))
    fail = (down[0] * 300, down[0] * 300 + down[1] * 300)
    out = run(TOPOLOGY, outage(announce, down=fail, stop=end + 600))
    for svc in AFFECTED:
        loud = commands(out, "failover.escalate.v1", svc) + notices(out, svc, "oncall")
        assert not [c for c in loud if begin <= _seconds(c["time"]) < end], loud


def _seconds(text: str) -> float:
    return (parse_time(text) - parse_time(at(0))) / 1_000_000


# ------------------------------------------------------------------------------- partitions


@pytest.mark.parametrize(
    ("partitions", "seed", "restart_every", "batched"),
    [(1, 0, None, False), (3, 1, None, False), (6, 2, 7, False), (4, 3, 3, True)],
)
def test_partitioned_routing_of_windows_matches_replay(
    partitions: int, seed: int, restart_every: int | None, batched: bool
) -> None:
    """Each window action published to every partition of the overrides topic: every
    service gets what replay gives it, and each audit record and dead letter is written once
    (by the partition the window id hashes to), also across restarts from the state tables."""
    from tests.test_stream_partitions import oracle, simulate

    backup = {"backup-4g": [(0, "up"), (2.5 * H, "down"), (3.8 * H, "up")]}
    forged = sign_override(
        {k: v for k, v in window("cancel", 3 * H, ident="forged").items()
         if k not in (KEY_ATTRIBUTE, SIGNATURE_ATTRIBUTE)},
        f"{HEAD}/demo", nacl.signing.SigningKey(b"\x09" * 32),
    )  # fmt: skip
    events = outage(
        window("announce", 10),
        window("announce", 20, wid="sirimau", site="kecamatan-sirimau", ident="sirimau"),
        window("extend", 3 * H, end=at(4.5 * H)),
        forged,
        window("cancel", 3.2 * H, wid="sirimau", ident="sirimau-cancel"),
        others=backup,
    )
    del events[[e.get("id") for e in events].index("sirimau")]["data"]["links"]
    lines = [raw(sign_again(e)) for e in events]
    expected, expected_reasons = oracle(TOPOLOGY, lines)
    got, reasons = simulate(partitions, seed, restart_every, batched, topology=TOPOLOGY,
                            lines=lines)  # fmt: skip
    assert len(expected[WINDOW]) == 3  # the audit records: announce, extend, the forgery
    assert set(got) == set(expected)
    for key, records in expected.items():
        assert got[key] == records, key
    assert reasons == expected_reasons
    assert sum(reasons.values()) == 1


def sign_again(event: dict[str, Any]) -> dict[str, Any]:
    """A demo operator's event signed anew (after a test changed it); others as they are."""
    if event.get("type") != "operator.maintenance.v1" or event["id"] == "forged":
        return event
    signed = (KEY_ATTRIBUTE, SIGNATURE_ATTRIBUTE)
    return sign_as({k: v for k, v in event.items() if k not in signed})


# ------------------------------------------------------------------------------- the CLI


def test_the_cli_signs_what_the_engine_takes_and_refuses_what_cannot_be_a_window() -> None:
    from streams.operator_cli import signed_maintenance

    key = demo_key(HEAD)
    now = datetime(2019, 2, 5, tzinfo=UTC)  # the event's stamp: the window lies ahead of it
    event = signed_maintenance(
        "announce", WINDOW, "uji", HEAD, "office-head", "demo", key,
        links=[EXCHANGE], start=at(2 * H), end=at(4 * H), notice=("Maaf.", "Sorry."), now=now,
    )  # fmt: skip
    validator = jsonschema_rs.validator_for(load_schema("operator.maintenance.v1"))
    assert validator.is_valid(event), list(validator.iter_errors(event))
    engine = Engine(TOPOLOGY)
    engine.feed(raw(event))
    assert [a["verdict"] for a in audits(engine.drain())] == ["applied"]
    extend = signed_maintenance("extend", WINDOW, "uji", HEAD, "office-head", "demo", key,
                                end=at(5 * H))  # fmt: skip
    assert validator.is_valid(extend)
    for action, fields, problem in [
        ("announce", {"start": at(0), "end": at(H), "notice": ("a", "b")}, "exactly one of"),
        (
            "announce",
            {"site": "x", "provider": "y", "start": at(0), "end": at(H), "notice": ("a", "b")},
            "exactly one of",
        ),
        ("announce", {"site": "x", "end": at(H)}, "needs --start"),
        ("announce", {"site": "x", "start": "tomorrow", "end": at(H)}, "--start:"),
        ("extend", {}, "extend needs --end"),
        ("cancel", {"end": at(H)}, "cancel takes no --end"),
        ("cancel", {"site": "x"}, "names the window only"),
        ("reboot", {}, "unknown action 'reboot'"),
    ]:
        with pytest.raises(ValueError, match=problem):
            signed_maintenance(action, WINDOW, "uji", HEAD, "office-head", "demo", key,
                               **fields)  # fmt: skip


def test_failover_maintenance_without_a_key_says_so() -> None:
    from tests.helpers import failover

    done = failover("maintenance", "cancel", WINDOW, "--reason", "x", "--operator", HEAD,
                    "--role", "office-head")  # fmt: skip
    assert done.returncode == 2
    assert b"no key" in done.stderr


def test_the_registry_is_bounded() -> None:
    from workflows import maintenance

    registry = Windows(TOPOLOGY)
    registry.seen = {f"old/{i}": parse_time(at(0)) for i in range(maintenance.MAX_ACTIONS)}
    verdict = registry.judge(window("announce", 10), parse_time(at(10)), None)
    assert not isinstance(verdict, Accepted)
    assert (
        verdict[0]
        == f"not-applicable: {maintenance.MAX_ACTIONS} window actions are remembered already"
    )
    registry = Windows(TOPOLOGY)
    for i in range(maintenance.MAX_WINDOWS):
        assert isinstance(
            registry.judge(
                window("announce", 10, wid=f"w{i}", ident=f"a{i}"), parse_time(at(10)), None
            ),
            Accepted,
        )
    verdict = registry.judge(
        window("announce", 10, wid="one-more", ident="x"), parse_time(at(10)), None
    )
    assert not isinstance(verdict, Accepted)
    assert verdict[0] == f"not-applicable: {maintenance.MAX_WINDOWS} windows are kept already"
