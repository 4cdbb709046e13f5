"""The hostile-input corpus: what each file attacks, how it is built, and what must happen.

Every case is one class of attack. An event case is a JSONL file of input lines against the
demo topology (``streams/demo/ambon.yaml``); a topology case is a topology file replayed over
:data:`BASELINE`'s events. This module is the single source of the corpus: the small files
are written under ``tests/hostile/corpus/`` (``python -m tests.hostile.corpus`` rewrites
them, and ``tests/hostile/test_replay.py`` checks the committed bytes are what it builds), the
large ones (floods, a line of megabytes) are built at test time and never committed. Each
file has a sidecar ``NAME.toml`` with the attack, the expected outcome and the line roles.

Most event cases are *framed*: a tick and three healthy readings first, the hostile lines,
then an operator's ``force_manual`` of ``ektp`` (id :data:`AFTER_ID`) and a last tick. That
override must still take effect after whatever came before it: the engine went on.

Each line has a role, for replay and for Kafka (the same unless said otherwise):

- ``ok``: a normal input; it must not be dead-lettered.
- ``effect``: an override that must cause a transition (its id is the transition's cause).
- ``dead``: a hostile input; it must be dead-lettered, with a documented reason code and its
  original bytes, and (on Kafka) nothing else may come of it.
- ``any``: no requirement beyond the run's own (no crash, no escape, a documented reason if
  it is dead-lettered): where the right outcome is a policy choice the engine may make
  either way (a replay file is trusted: a clock jump in it may be reported or refused).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

import orjson

ROOT: Final = Path(__file__).resolve().parents[2]
CORPUS: Final = Path(__file__).resolve().parent / "corpus"
EVENTS_DIR: Final = CORPUS / "events"
TOPOLOGIES_DIR: Final = CORPUS / "topologies"
DEMO_TOPOLOGY: Final = ROOT / "streams" / "demo" / "ambon.yaml"
DEMO_EVENTS: Final = ROOT / "streams" / "demo" / "ambon-events.jsonl"
#: The topology the event cases run on: the demo's, taking unsigned overrides. The corpus
#: attacks what an input holds, not who sent it (tests/test_operators.py: signatures).
CORPUS_TOPOLOGY: Final = CORPUS / "topology.yaml"


def corpus_topology() -> bytes:
    return (
        DEMO_TOPOLOGY.read_bytes()
        + b"# tests/hostile/corpus.py: the event cases' overrides are not signed.\n"
        + b"unsigned_overrides: accept\n"
    )


Role = Literal["ok", "effect", "dead", "any"]

#: The id of the framed cases' last override: it must take effect after the hostile lines.
AFTER_ID: Final = "override/ektp/after-hostile"
#: Text a hostile field puts after a newline, hoping to start a line of a log or a terminal.
FORGED: Final = "FORGED-LOG-LINE"
LINKS: Final = ("telkom-sto-pattimura", "backup-4g", "vsat-palapa")
_T0: Final = datetime(2019, 2, 5, tzinfo=UTC)


# ------------------------------------------------------------------------------- building


def at(seconds: float) -> str:
    """RFC 3339 ``seconds`` after 2019-02-05T00:00:00Z (09:00 in Ambon)."""
    moment = _T0 + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{moment.microsecond:06d}Z" if moment.microsecond else "Z"
    )


def ce(
    type_: str, ident: str, time: str, subject: str | None, data: Any, **extra: Any
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": ident,
        "source": "/tests/hostile",
        "type": type_,
        "time": time,
    }
    if subject is not None:
        event["subject"] = subject
    event["data"] = data
    event.update(extra)
    return event


def dumps(event: Any) -> bytes:
    return orjson.dumps(event)


def tick(time: str, **extra: Any) -> bytes:
    return dumps(ce("clock.tick.v1", f"tick/{time}", time, None, {}, **extra))


def reading(
    link: str, time: str, status: str = "up", ident: str | None = None, **data: Any
) -> bytes:
    body = {"status": status, "latency_ms": 35.0, "loss_pct": 0.0, **data}
    return dumps(ce("link.status.v1", ident or f"probe/{link}/{time}", time, link, body))


def override(
    service: str,
    action: str,
    time: str,
    ident: str | None = None,
    *,
    actor: str = "on-call",
    role: str = "engineer",
    reason: str = "test",
) -> bytes:
    data = {"action": action, "actor": actor, "role": role, "reason": reason}
    ident = ident or f"override/{service}/{action}/{time}"
    return dumps(ce("operator.override.v1", ident, time, service, data))


def record(service: str, record_id: str, time: str, ident: str | None = None) -> bytes:
    ident = ident or f"record/{record_id}"
    return dumps(ce("manual.record.v1", ident, time, service, {"record_id": record_id}))


def reconcile(
    service: str, ids: list[str], time: str, ident: str, incident: str | None = None
) -> bytes:
    data: dict[str, Any] = {"record_ids": ids}
    if incident is not None:
        data["incident"] = incident
    return dumps(ce("reconcile.completed.v1", ident, time, service, data))


@dataclass(frozen=True)
class Line:
    """One input line, its roles, and how it ends in the file."""

    raw: bytes
    replay: Role = "ok"
    kafka: Role | None = None  # None: as in replay
    ending: bytes = b"\n"

    @property
    def kafka_role(self) -> Role:
        return self.replay if self.kafka is None else self.kafka


def hostile(raw: bytes, replay: Role = "dead", kafka: Role | None = None) -> Line:
    return Line(raw, replay, kafka)


def framed(hostile_lines: list[Line], *, frozen: bool = False) -> list[Line]:
    """The frame around hostile lines (see the module's docstring). ``frozen``: the hostile
    lines may legitimately stop replay's clock far ahead (a replay file is trusted), so in
    replay the last override may be refused as too old; on Kafka it must still take effect.
    """
    head = [Line(tick(at(0)))] + [Line(reading(link, at(5))) for link in LINKS]
    after: Role = "any" if frozen else "effect"
    tail = [
        Line(override("ektp", "force_manual", at(60), AFTER_ID), after, "effect"),
        Line(tick(at(120)), "any" if frozen else "ok", "ok"),
    ]
    return head + hostile_lines + tail


def file_bytes(lines: list[Line]) -> bytes:
    return b"".join(line.raw + line.ending for line in lines)


# ------------------------------------------------------------------------------ the cases


@dataclass(frozen=True)
class EventCase:
    """One file of hostile input lines against the demo topology."""

    name: str
    attack: str
    expect: str
    build: Callable[[], list[Line]]
    committed: bool = True  # False: built at test time (too large to keep in git)
    kafka: bool = False  # also published to a real broker by test_kafka.py

    @property
    def path(self) -> Path:
        return EVENTS_DIR / f"{self.name}.jsonl"


@dataclass(frozen=True)
class TopologyCase:
    """One hostile topology file, replayed over the baseline events."""

    name: str
    attack: str
    expect: str
    build: Callable[[], bytes]
    exit: tuple[int, ...]  # 0: a valid topology, replay runs; 2: refused (file and path)
    suffix: str = ".yaml"
    committed: bool = True

    @property
    def path(self) -> Path:
        return TOPOLOGIES_DIR / f"{self.name}{self.suffix}"


EVENT_CASES: list[EventCase] = []
TOPOLOGY_CASES: list[TopologyCase] = []


def event_case(
    attack: str, expect: str, *, committed: bool = True, kafka: bool = False
) -> Callable[[Callable[[], list[Line]]], Callable[[], list[Line]]]:
    def register(build: Callable[[], list[Line]]) -> Callable[[], list[Line]]:
        name = build.__name__.removeprefix("case_").replace("_", "-")
        EVENT_CASES.append(EventCase(name, attack, expect, build, committed, kafka))
        return build

    return register


def topology_case(
    attack: str,
    expect: str,
    exit: tuple[int, ...],
    *,
    suffix: str = ".yaml",
    committed: bool = True,
) -> Callable[[Callable[[], bytes]], Callable[[], bytes]]:
    def register(build: Callable[[], bytes]) -> Callable[[], bytes]:
        name = build.__name__.removeprefix("topo_").replace("_", "-")
        TOPOLOGY_CASES.append(TopologyCase(name, attack, expect, build, exit, suffix, committed))
        return build

    return register


# -- control --------------------------------------------------------------------------------


@event_case(
    "Nothing: the frame alone, the control every other case is measured against.",
    "No dead letter; the force_manual of ektp takes effect.",
    kafka=True,
)
def case_baseline() -> list[Line]:
    return framed([])


# -- time -----------------------------------------------------------------------------------


@event_case(
    "A forged tick at 9999-12-31T23:59:59Z from an ordinary producer.",
    "Kafka: the tick is dead-lettered (future-time or unauthenticated-tick) and the later "
    "force_manual takes effect. Replay trusts its file: the clock may jump (and be reported).",
    kafka=True,
)
def case_tick_far_future_utc() -> list[Line]:
    return framed([hostile(tick("9999-12-31T23:59:59Z"), "any", "dead")], frozen=True)


@event_case(
    "A tick at 9999-12-31T23:59:59-23:59: the schema accepts it, but in UTC it is past the "
    "year 9999 and overflows datetime.",
    "Parsed without overflow or refused (bad-time); the run goes on, exit 0, no traceback. "
    "Kafka: dead-lettered, the worker stays up, the force_manual takes effect.",
    kafka=True,
)
def case_tick_overflow_offset() -> list[Line]:
    return framed([hostile(tick("9999-12-31T23:59:59-23:59"), "any", "dead")], frozen=True)


@event_case(
    "Times at the edges of the years the schema admits: 0001 with a +23:59 offset (before "
    "year 1 in UTC), 0001-01-01T00:00:00Z, 9999 with nine fractional digits, Feb 30, on "
    "readings, records and overrides.",
    "No crash; each is used or dead-lettered with a documented reason; ektp's force_manual "
    "still takes effect on Kafka.",
)
def case_times_at_year_edges() -> list[Line]:
    times = [
        "0001-01-01T00:00:00+23:59",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999999Z",
        "9999-12-31T23:59:59+00:01",
    ]
    lines = []
    for n, time in enumerate(times):
        lines.append(hostile(reading("backup-4g", time, "down", f"probe/edge/{n}"), "any"))
        lines.append(hostile(override("akta-lahir", "pin", time, f"override/edge/{n}"), "any"))
        lines.append(hostile(record("legalisasi", f"EDGE-{n}", time), "any"))
    lines.append(hostile(reading("vsat-palapa", "2019-02-30T00:00:10Z", ident="probe/feb30")))
    return framed(lines, frozen=True)


@event_case(
    "Times written almost right: lowercase z and t, -00:00, a dot without digits, +24:00, "
    "second 60, a leading space, full-width digits, a week date, a date alone, 1969.",
    "Each used (if the schema and RFC 3339 admit it) or dead-lettered schema or bad-time.",
)
def case_time_format_variants() -> list[Line]:
    times = [
        "2019-02-05T00:00:20z",
        "2019-02-05t00:00:20Z",
        "2019-02-05T00:00:20-00:00",
        "2019-02-05T00:00:20.Z",
        "2019-02-05T00:00:20+24:00",
        "2019-02-05T00:00:60Z",
        " 2019-02-05T00:00:20Z",
        "\uff12\uff10\uff11\uff19-02-05T00:00:20Z",
        "2019-W06-2T00:00:20Z",
        "2019-02-05",
        "1969-12-31T23:59:59Z",
    ]
    return framed(
        [
            hostile(reading("backup-4g", time, "up", f"probe/format/{n}"), "any")
            for n, time in enumerate(times)
        ]
    )


@event_case(
    "Ticks at year 1 (with and without an offset that takes them before year 1 in UTC).",
    "No crash (exit 0); an old tick changes nothing or is dead-lettered.",
)
def case_tick_year_0001() -> list[Line]:
    return framed(
        [
            hostile(tick("0001-01-01T00:00:00Z"), "any"),
            hostile(tick("0001-01-01T00:00:00+23:59"), "any"),
        ]
    )


@event_case(
    "Ticks that go backwards, repeat, carry a subject, and fractions of nanoseconds.",
    "A tick older than the clock changes nothing; no crash; the force_manual takes effect.",
)
def case_ticks_backwards_and_repeated() -> list[Line]:
    return framed(
        [
            hostile(tick(at(30)), "any"),
            hostile(tick(at(30)), "any"),
            hostile(tick(at(10)), "any"),
            hostile(dumps(ce("clock.tick.v1", "tick/subject", at(31), "ektp", {})), "any"),
            hostile(tick("2019-02-05T00:00:32.123456789Z"), "any"),
            hostile(tick("2019-02-05T09:00:33+09:00"), "any"),
        ]
    )


def _ambon(last_line: int) -> list[bytes]:
    with DEMO_EVENTS.open("rb") as handle:
        return [line.rstrip(b"\n") for _, line in zip(range(last_line), handle, strict=False)]


@event_case(
    "The Ambon scenario to 03:00 on the 5th, with one 'up' reading of the exchange's link "
    "dated 2099 from probe/evil just before the exchange burns: every real reading after it "
    "is older, so the outage is hidden and the paper records are refused.",
    "Kafka: the spoof is dead-lettered future-time and the outage is what it is without it. "
    "Replay trusts its file (the spoof may be reported or refused there).",
    kafka=True,
)
def case_spoofed_up_reading_in_ambon() -> list[Line]:
    lines = [Line(raw, "any") for raw in _ambon(875)]
    spoof = dumps(
        ce(
            "link.status.v1",
            "probe/evil/2099",
            "2099-01-01T00:00:00Z",
            "telkom-sto-pattimura",
            {"status": "up", "latency_ms": 1.0, "loss_pct": 0.0},
            source="/probes/evil",
        )
    )
    return [*lines[:150], hostile(spoof, "any", "dead"), *lines[150:]]


# -- floods (built at test time) ----------------------------------------------------------


@event_case(
    "6,000 readings of one link at one instant, each with a distinct 250-character id.",
    "Exit 0 in proportionate time; the readings are duplicates or changes, never a crash.",
    committed=False,
)
def case_flood_same_instant_readings() -> list[Line]:
    lines = [
        Line(reading("backup-4g", at(30), "up", f"probe/{n:06d}/" + "x" * 242), "any")
        for n in range(6000)
    ]
    return framed(lines)


@event_case(
    "5,000 manual records (128-character record ids, 250-character event ids) to an "
    "online-only service (ektp keeps no ledger): each is refused, but its id is remembered "
    "(1.3 MB of them, past the broker's 1 MB for one state record).",
    "Every record dead-lettered not-applicable; on Kafka the worker stays up (the remembered "
    "ids must not grow a state record past the broker's limit) and the force_manual takes "
    "effect.",
    committed=False,
    kafka=True,
)
def case_flood_records_to_online_only() -> list[Line]:
    lines = []
    for n in range(5_000):
        ident = f"record/{n:06d}/" + "i" * 242  # remembered by id: 250 characters each
        lines.append(hostile(record("ektp", f"{n:06d}-" + "r" * 121, at(20 + n / 1000), ident)))
        if n % 500 == 499:  # ticks between them, as on Kafka: the engine's cost stays linear
            lines.append(Line(tick(at(20 + (n + 1) / 1000))))
    return framed(lines)


@event_case(
    "8,500 paper records (128-character ids) for one service, then a release: the reconcile "
    "command carrying every id is larger than the broker's 1 MB.",
    "Every record id reaches a failover.reconcile.v1 (paged); on Kafka nothing is lost and "
    "the worker stays up.",
    committed=False,
    kafka=True,
)
def case_flood_paper_records_then_release() -> list[Line]:
    lines = [Line(override("legalisasi", "force_manual", at(10), "override/legalisasi/fm"))]
    for n in range(8_500):
        lines.append(Line(record("legalisasi", f"{n:06d}-" + "p" * 121, at(11 + n / 1000))))
        if n % 500 == 499:  # ticks between them, as on Kafka: the engine's cost stays linear
            lines.append(Line(tick(at(11 + (n + 1) / 1000))))
    lines.append(Line(tick(at(30))))
    lines.append(Line(override("legalisasi", "release", at(40), "override/legalisasi/rel")))
    return framed(lines)


@event_case(
    "A line of 4 MB of JSON and a line of 4 MB that is not JSON, each read whole.",
    "Both dead-lettered too-large with their original bytes; the run goes on.",
    committed=False,
)
def case_very_long_lines() -> list[Line]:
    event = ce("link.status.v1", "probe/long", at(20), "backup-4g", {"status": "up"})
    event["xpad"] = "a" * (4 * 1024 * 1024)
    return framed([hostile(dumps(event)), hostile(b"z" * (4 * 1024 * 1024))])


@event_case(
    "Inputs exactly at and one byte past the 64 KiB input limit (padding in an extension).",
    "65,536 bytes: used; 65,537 bytes: dead-lettered too-large.",
)
def case_at_the_size_limit() -> list[Line]:
    def padded(action: str, ident: str, service: str, size: int) -> bytes:
        event = ce(
            "operator.override.v1",
            ident,
            at(20),
            service,
            {"action": action, "actor": "a", "role": "r", "reason": "size"},
            xpad="",
        )
        event["xpad"] = "p" * (size - len(dumps(event)))
        raw = dumps(event)
        assert len(raw) == size
        return raw

    return framed(
        [
            Line(padded("force_manual", "override/akta/at-limit", "akta-lahir", 65536), "effect"),
            hostile(
                padded("force_manual", "override/rekam/past-limit", "rekam-ktp-kecamatan", 65537)
            ),
        ]
    )


# -- bytes and encodings ----------------------------------------------------------------


@event_case(
    "Lines that are not UTF-8: Latin-1 inside a JSON string, a lone continuation byte, an "
    "overlong '/', a UTF-8-encoded surrogate, a truncated sequence at the end, a UTF-16 line.",
    "Each dead-lettered not-json with its bytes exactly as sent (base64 in JSONL where they "
    "are not UTF-8); the run goes on.",
    kafka=True,
)
def case_not_utf8() -> list[Line]:
    valid = override("akta-lahir", "pin", at(20), "override/akta/utf8", reason="caf\u00e9")
    return framed(
        [
            hostile(valid.replace("caf\u00e9".encode(), b"caf\xe9")),
            hostile(b'{"specversion":"1.0","id":"\x80","type":"clock.tick.v1"}'),
            hostile(record("legalisasi", "L-1", at(21)).replace(b"L-1", b"L\xc0\xaf1")),
            hostile(record("legalisasi", "L-2", at(22)).replace(b"L-2", b"L\xed\xa0\x802")),
            hostile(reading("backup-4g", at(23)) + b"\xe2\x82"),
            hostile('{"type":"clock.tick.v1"}'.encode("utf-16")),
            hostile(b"\xff\xfe\xfd"),
        ]
    )


@event_case(
    "Lone surrogates written as JSON escapes (\\ud800, \\udfff, a high one without its low) in "
    "the subject, the id and an operator's reason.",
    "Each dead-lettered (not-json: a lone surrogate is not text); original bytes kept.",
    kafka=True,
)
def case_lone_surrogates() -> list[Line]:
    base = override("akta-lahir", "pin", at(20), "override/akta/sur", reason="REASON")
    return framed(
        [
            hostile(base.replace(b"REASON", b"\\ud800")),
            hostile(base.replace(b"REASON", b"ok \\udfff ok")),
            hostile(base.replace(b'"akta-lahir"', b'"akta\\ud83d-lahir"')),
            hostile(base.replace(b"override/akta/sur", b"\\udc00")),
        ]
    )


@event_case(
    "NUL bytes: raw after a valid object, raw inside a JSON string, a line of NULs, and "
    "escaped \\u0000 in an operator's reason and actor (valid JSON).",
    "Raw NULs dead-lettered not-json; the escaped ones may be used but never reach the "
    "terminal as a raw NUL.",
    kafka=True,
)
def case_nul_bytes() -> list[Line]:
    good = override(
        "akta-lahir",
        "force_manual",
        at(20),
        "override/akta/nul",
        actor="a\u0000b",
        reason="before\u0000after",
    )
    return framed(
        [
            hostile(reading("backup-4g", at(21)) + b"\x00"),
            hostile(record("legalisasi", "N-1", at(22)).replace(b"N-1", b"N\x001")),
            hostile(b"\x00\x00\x00\x00"),
            Line(good, "effect"),
        ]
    )


@event_case(
    "A byte-order mark before the first line, CRLF line ends, a bare CR inside a line, and "
    "an event split by a CR.",
    "CRLF lines are read as lines; the BOM line is used or dead-lettered; the CR-split line "
    "is dead-lettered with its bytes.",
)
def case_bom_and_crlf() -> list[Line]:
    lines = framed(
        [
            hostile(reading("backup-4g", at(21)) + b"\r" + reading("backup-4g", at(22))),
            hostile(b"\r\r" + override("akta-lahir", "pin", at(23)), "any"),
        ]
    )
    first = lines[0]
    crlf = [Line(line.raw, line.replay, line.kafka, b"\r\n") for line in lines[1:]]
    return [Line(b"\xef\xbb\xbf" + first.raw, "any"), *crlf]


@event_case(
    "Empty lines, lines of spaces and tabs, vertical tab and form feed, a non-breaking space, "
    "and no newline after the last line.",
    "Blank lines are not inputs; a line of a non-breaking space is dead-lettered not-json; "
    "the last line counts although it has no newline.",
)
def case_blank_and_whitespace_lines() -> list[Line]:
    lines = framed(
        [
            Line(b"", "any"),
            Line(b"   \t  ", "any"),
            Line(b"\x0b\x0c", "any"),
            hostile("\u00a0".encode()),
            hostile("\u2028".encode()),
            Line(b"", "any"),
        ]
    )
    last = lines[-1]
    return [*lines[:-1], Line(last.raw, last.replay, last.kafka, b"")]


# -- text that could be read as markup, escapes, HTML or a log line -----------------------


MARKUP = "x[/zzz] [bold red]FAKE ALERT[/bold red] [link=https://evil.example]here[/link]"


@event_case(
    "Rich console markup ([/zzz], [bold], [link=...]) in an operator's actor and reason, in "
    "a subject and in an event type.",
    "Shown literally in the timeline (exit 0, no crash); the force_manual with markup in its "
    "reason takes effect.",
    kafka=True,
)
def case_rich_markup_in_fields() -> list[Line]:
    return framed(
        [
            Line(
                override(
                    "akta-lahir",
                    "force_manual",
                    at(20),
                    "override/akta/markup",
                    actor="[/zzz]",
                    reason=MARKUP,
                ),
                "effect",
            ),
            hostile(reading("x[/zzz]", at(21))),
            hostile(override("[/zzz]", "pin", at(22))),
            hostile(dumps(ce("[/zzz]", "e/markup", at(23), "ektp", {}))),
        ]
    )


ANSI = (
    "\u001b[2J\u001b[1;31mPWNED\u001b[0m \u001b]52;c;ZWNobyBwd25lZA==\u0007 "
    "\u001b]8;;http://x\u001b\\l\u001b]8;;\u001b\\ \u009b31m"
)


@event_case(
    "Terminal escapes (clear screen, colours, OSC 52 clipboard write, OSC 8 link, C1 CSI) "
    "in an operator's reason and actor, a subject, an id, a record id and an event type.",
    "No raw escape or control character reaches the terminal; the force_manual takes effect.",
    kafka=True,
)
def case_ansi_escapes_in_fields() -> list[Line]:
    return framed(
        [
            Line(
                override(
                    "akta-lahir",
                    "force_manual",
                    at(20),
                    "override/akta/ansi",
                    actor="\u001b[8m",
                    reason=ANSI,
                ),
                "effect",
            ),
            hostile(reading("\u001b[2Jlink", at(21))),
            hostile(override("ektp\u001b[0m", "pin", at(22))),
            hostile(record("legalisasi", "R-1", at(23), ident="\u001b[31mid")),
            hostile(dumps(ce("\u001b[2J", "e/ansi", at(24), "ektp", {}))),
            hostile(reconcile("legalisasi", ["\u001b[2J"], at(25), "reconciled/ansi")),
        ]
    )


BIDI = "\u202eevil\u202c \u2066iso\u2069 \u200f\u061c zero\u200bwidth"


@event_case(
    "Unicode bidirectional overrides (RLO, isolates, RLM, ALM) and zero-width characters in "
    "an operator's reason, a subject and an id: text that displays other than it reads.",
    "None of the bidi controls reaches the terminal raw; the force_manual takes effect.",
)
def case_bidi_controls_in_fields() -> list[Line]:
    return framed(
        [
            Line(
                override(
                    "akta-lahir",
                    "force_manual",
                    at(20),
                    "override/akta/bidi",
                    actor="\u202eadmin",
                    reason=BIDI,
                ),
                "effect",
            ),
            hostile(reading("telkom\u202e-sto", at(21))),
            hostile(override("\u202eektp", "pin", at(22))),
        ]
    )


@event_case(
    f"Newlines and carriage returns followed by {FORGED} in an operator's reason and actor, "
    "a reconcile's incident, a subject and an id: text that would start a line of its own "
    "in a log or the terminal.",
    f"No line of the terminal output or the worker's log starts with {FORGED}; the "
    "force_manual takes effect.",
    kafka=True,
)
def case_newlines_in_fields() -> list[Line]:
    forged = f"\n{FORGED} level=error msg=forged\r\n{FORGED}"
    return framed(
        [
            Line(
                override(
                    "akta-lahir",
                    "force_manual",
                    at(20),
                    "override/akta/newline",
                    actor=f"x{forged}",
                    reason=f"flood{forged}",
                ),
                "effect",
            ),
            hostile(reconcile("legalisasi", ["L-1"], at(21), "reconciled/nl", f"inc{forged}")),
            hostile(reading(f"link{forged}", at(22))),
            hostile(override(f"ektp{forged}", "pin", at(23))),
            hostile(dumps(ce(f"type{forged}", "e/nl", at(24), "ektp", {}))),
        ]
    )


HTML = '<script>alert(1)</script><img src=x onerror=alert(2)><a href="javascript:x">&amp;'


@event_case(
    "HTML and script in an operator's reason, actor and role (pin, then force_manual): "
    "notices carry the operator's words to staff and the public.",
    "No notice carries the markup as HTML (escaped or removed); both overrides take effect "
    "or are applied.",
    kafka=True,
)
def case_html_in_operator_reason() -> list[Line]:
    return framed(
        [
            Line(
                override(
                    "akta-lahir",
                    "pin",
                    at(20),
                    "override/akta/html-pin",
                    actor=HTML[:100],
                    role="<b>role</b>",
                    reason=HTML,
                )
            ),
            Line(
                override(
                    "legalisasi",
                    "force_manual",
                    at(21),
                    "override/leg/html",
                    actor="<i>x</i>",
                    reason=HTML,
                ),
                "effect",
            ),
        ]
    )


# -- JSON at its limits -------------------------------------------------------------------


@event_case(
    "Numbers at the limits: 1e309, 2**64+1, -0.0, 1e-400, NaN and Infinity literals, NaN as "
    "text, a 400-digit integer, in latency, loss and the status.",
    "Each used or dead-lettered (not-json or schema) with its bytes; never a crash.",
    kafka=True,
)
def case_huge_numbers() -> list[Line]:
    base = reading("backup-4g", at(20), ident="probe/num/0").replace(b"35.0", b"LAT")
    values = [
        b"1e309",
        b"-1e309",
        str(2**64 + 1).encode(),
        b"-0.0",
        b"1e-400",
        b"NaN",
        b"Infinity",
        b'"NaN"',
        b"9" * 400,
        b"-0",
        b"0.0000000000000000000000000001",
        b"1E+2",
    ]
    lines = [
        hostile(base.replace(b"LAT", value).replace(b"num/0", f"num/{n}".encode()), "any")
        for n, value in enumerate(values)
    ]
    loss = reading("vsat-palapa", at(21), ident="probe/loss")
    loss = loss.replace(b'"loss_pct":0.0', b'"loss_pct":100.0000000001')
    lines.append(hostile(loss))
    status = reading("vsat-palapa", at(22), ident="probe/status").replace(b'"up"', b"1e309")
    lines.append(hostile(status))
    return framed(lines)


@event_case(
    "Deep nesting: 10,000 levels of arrays as the data, 10,000 levels of objects in an "
    "extension attribute, and 900 levels (within the parser's limit) in an extension of a "
    "reading and of an override.",
    "The 10,000-level lines dead-lettered not-json; the others used or dead-lettered; no "
    "RecursionError anywhere (tracing, schema, fast path).",
    kafka=True,
)
def case_deep_nesting() -> list[Line]:
    deep_array = b"[" * 10_000 + b"]" * 10_000
    base = reading("backup-4g", at(20), ident="probe/deep/0")
    objects = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    within = b"[" * 900 + b"]" * 900
    pin = override("akta-lahir", "pin", at(22), "override/akta/deep")
    return framed(
        [
            hostile(base.replace(b'{"status":"up","latency_ms":35.0,"loss_pct":0.0}', deep_array)),
            hostile(base[:-1].replace(b"deep/0", b"deep/1") + b',"ext":' + objects + b"}"),
            hostile(base[:-1].replace(b"deep/0", b"deep/2") + b',"ext":' + within + b"}", "any"),
            hostile(pin[:-1] + b',"traceparent":' + within + b"}", "any"),
        ]
    )


@event_case(
    "Duplicate keys: two types, two subjects (a link then a service), two times, two data, "
    "two ids, in readings and overrides; the last one wins in JSON parsers, not in all.",
    "Each used as its last keys say or dead-lettered; replay and Kafka agree.",
    kafka=True,
)
def case_duplicate_keys() -> list[Line]:
    reading_ = reading("backup-4g", at(20), ident="probe/dup/0")
    return framed(
        [
            hostile(reading_[:-1] + b',"subject":"vsat-palapa"}', "any"),
            hostile(
                reading_[:-1].replace(b"dup/0", b"dup/1") + b',"type":"operator.override.v1"}',
                "any",
            ),
            hostile(
                reading_[:-1].replace(b"dup/0", b"dup/2") + b',"time":"9999-12-31T23:59:59Z"}',
                "any",
                "dead",
            ),
            hostile(
                reading_[:-1].replace(b"dup/0", b"dup/3") + b',"data":{"status":"down"}}', "any"
            ),
            hostile(
                override("rekam-ktp-kecamatan", "pin", at(21), "override/dup")[:-1]
                + b',"subject":"surat-pindah","id":"override/dup/2"}',
                "any",
            ),
        ]
    )


@event_case(
    "CloudEvents extension attributes, odd and hostile: a malformed traceparent, a numeric "
    "one, one of 64 KiB, tracestate of junk, dataschema, data_base64 next to data, an "
    "extension called __proto__, a datacontenttype of text/plain, specversion 1.0 as number.",
    "Extensions never crash tracing or decoding; an envelope the schema refuses is "
    "dead-lettered schema.",
    kafka=True,
)
def case_extension_attributes() -> list[Line]:
    base = reading("backup-4g", at(20), ident="probe/ext/0")

    def ext(n: int, extra: bytes) -> bytes:
        return base[:-1].replace(b"ext/0", f"ext/{n}".encode()) + b"," + extra + b"}"

    return framed(
        [
            hostile(ext(1, b'"traceparent":"00-zzzz-not-a-trace-01"'), "any"),
            hostile(ext(2, b'"traceparent":12345'), "any"),
            hostile(ext(3, b'"traceparent":"' + b"0" * 60000 + b'"'), "any"),
            hostile(ext(4, b'"tracestate":"\\u001b[2J,,=,=="'), "any"),
            hostile(ext(5, b'"dataschema":"file:///etc/passwd"'), "any"),
            hostile(ext(6, b'"data_base64":"AAAA"'), "any"),
            hostile(ext(7, b'"__proto__":{"polluted":true}'), "any"),
            hostile(ext(8, b'"datacontenttype":"text/plain"')),
            hostile(base.replace(b'"specversion":"1.0"', b'"specversion":1.0')),
            hostile(
                ext(9, b'"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"'),
                "any",
            ),
        ]
    )


@event_case(
    "Wrong types everywhere: JSON that is not an object (array, string, number, null, "
    "true), an empty object, and each field of each input type given the wrong type, an "
    "empty string, or out of its range.",
    "Each dead-lettered (not-json, unknown-type, schema or bad-time) with its bytes.",
    kafka=True,
)
def case_wrong_types() -> list[Line]:
    lines = [hostile(raw) for raw in (b"[]", b'"tick"', b"42", b"null", b"true", b"{}")]
    r = reading("backup-4g", at(20), ident="probe/wt")
    o = override("akta-lahir", "pin", at(20), "override/wt")
    m = record("legalisasi", "WT-1", at(20))
    c = reconcile("legalisasi", ["WT-1"], at(20), "reconciled/wt")
    swaps = [
        (r, b'"id":"probe/wt"', b'"id":17'),
        (r, b'"id":"probe/wt"', b'"id":""'),
        (r, b'"subject":"backup-4g"', b'"subject":["backup-4g"]'),
        (r, b'"time":"' + at(20).encode() + b'"', b'"time":1549324820'),
        (r, b'"time":"' + at(20).encode() + b'"', b'"time":"2019-02-05T00:00:20"'),
        (r, b'"time":"' + at(20).encode() + b'"', b'"time":"2019-02-05 00:00:20Z"'),
        (r, b'"status":"up"', b'"status":1'),
        (r, b'"status":"up"', b'"status":"UP"'),
        (r, b'"latency_ms":35.0', b'"latency_ms":"35"'),
        (r, b'"latency_ms":35.0', b'"latency_ms":-1'),
        (r, b'"loss_pct":0.0', b'"loss_pct":101'),
        (r, b'{"status":"up","latency_ms":35.0,"loss_pct":0.0}', b'"up"'),
        (r, b'{"status":"up","latency_ms":35.0,"loss_pct":0.0}', b"null"),
        (o, b'"action":"pin"', b'"action":"PIN"'),
        (o, b'"action":"pin"', b'"action":["pin"]'),
        (o, b',"role":"engineer"', b""),
        (o, b'"reason":"test"', b'"reason":""'),
        (o, b'"reason":"test"', b'"reason":"' + b"r" * 1001 + b'"'),
        (m, b'"record_id":"WT-1"', b'"record_id":1'),
        (m, b'"record_id":"WT-1"', b'"record_id":"../../etc/passwd"'),
        (m, b'"record_id":"WT-1"', b'"record_id":"WT-1","extra":1'),
        (c, b'"record_ids":["WT-1"]', b'"record_ids":"WT-1"'),
        (c, b'"record_ids":["WT-1"]', b'"record_ids":[]'),
        (c, b'"record_ids":["WT-1"]', b'"record_ids":["WT-1","WT-1"]'),
        (c, b'"record_ids":["WT-1"]', b'"record_ids":[null]'),
    ]
    for n, (raw, old, new) in enumerate(swaps):
        assert old in raw, (old, raw)
        lines.append(hostile(raw.replace(old, new).replace(b"/wt", f"/wt{n}".encode())))
    return framed(lines)


@event_case(
    "Unknown types: a v2 of an input, a type with a trailing space, the engine's own output "
    "types sent as input, a dead letter's shape, a type that is a number, an object, absent.",
    "Each dead-lettered unknown-type; an output type is never taken as input.",
    kafka=True,
)
def case_unknown_types() -> list[Line]:
    types: list[Any] = [
        "link.status.v2",
        "clock.tick.v1 ",
        "LINK.STATUS.V1",
        "failover.transition.v1",
        "failover.notice.v1",
        "failover.reconcile.v1",
        42,
        {"t": 1},
        None,
    ]
    lines = [hostile(dumps(ce(t, f"e/type/{n}", at(20), "ektp", {}))) for n, t in enumerate(types)]
    missing = ce("x", "e/type/missing", at(20), "ektp", {})
    del missing["type"]
    lines.append(hostile(dumps(missing)))
    lines.append(
        hostile(
            dumps(
                {
                    "topic": "failover-deadletter",
                    "key": "ektp",
                    "reason": "x",
                    "source": {"file": "f", "line": 1},
                    "value": "{}",
                }
            )
        )
    )
    return framed(lines)


@event_case(
    "Unknown links and services: a different case, a trailing space, the tick key __tick__ "
    "as a link and a service, a 128-character subject, a service id as a link and back, a "
    "service id spelled with a Cyrillic letter.",
    "Each dead-lettered unknown-link or unknown-service.",
    kafka=True,
)
def case_unknown_subjects() -> list[Line]:
    return framed(
        [
            hostile(reading("TELKOM-STO-PATTIMURA", at(20))),
            hostile(reading("backup-4g ", at(20))),
            hostile(reading("__tick__", at(20))),
            hostile(reading("l" * 128, at(20))),
            hostile(reading("ektp", at(20))),
            hostile(override("__tick__", "force_manual", at(21))),
            hostile(override("backup-4g", "force_manual", at(21))),
            hostile(override("\u0435ktp", "force_manual", at(21))),  # a Cyrillic e
            hostile(record("s" * 128, "U-1", at(21))),
        ]
    )


@event_case(
    "Overrides that do not apply: release while online, unpin while not pinned, a second "
    "force_manual while manual, release twice.",
    "Each dead-lettered not-applicable; the first force_manual of akta-lahir takes effect.",
    kafka=True,
)
def case_overrides_not_applicable() -> list[Line]:
    return framed(
        [
            hostile(override("ektp", "release", at(20))),
            hostile(override("surat-pindah", "unpin", at(21))),
            Line(override("akta-lahir", "force_manual", at(22)), "effect"),
            hostile(override("akta-lahir", "force_manual", at(23))),
            Line(override("akta-lahir", "release", at(24)), "effect"),
            hostile(override("akta-lahir", "release", at(25))),
        ]
    )


@event_case(
    "Reconciles of records nobody made, of another service's incident, of a made-up "
    "incident, while online; a manual record while online; a reconcile naming 10,000 ids.",
    "Each dead-lettered (not-applicable, unknown-records or too-large).",
    kafka=True,
)
def case_reconcile_unknown_incidents() -> list[Line]:
    many = [f"ID-{n:05d}" for n in range(10_000)]
    return framed(
        [
            hostile(reconcile("legalisasi", ["NOPE-1"], at(20), "reconciled/online")),
            hostile(record("legalisasi", "EARLY-1", at(20))),
            Line(override("legalisasi", "force_manual", at(21), "override/leg/fm"), "effect"),
            Line(record("legalisasi", "LEG-1", at(22))),
            hostile(reconcile("legalisasi", ["NOPE-1"], at(23), "reconciled/unknown")),
            hostile(
                reconcile(
                    "legalisasi", ["LEG-1"], at(24), "reconciled/other", "ektp@20190205T000000Z"
                )
            ),
            hostile(
                reconcile(
                    "legalisasi",
                    ["LEG-1"],
                    at(24),
                    "reconciled/madeup",
                    "legalisasi@99991231T235959Z",
                )
            ),
            hostile(reconcile("legalisasi", many, at(25), "reconciled/many")),
            hostile(reconcile("surat-pindah", ["LEG-1"], at(26), "reconciled/sp")),
        ]
    )


@event_case(
    "Duplicate and colliding ids: the same override twice, a release reusing a "
    "force_manual's id, the same record id under two event ids, a reading id reused for "
    "another link.",
    "A duplicate changes nothing; a copy of an override is refused (replayed: a signed "
    "order is used once), other duplicates are dropped; no crash; replay and Kafka agree.",
    kafka=True,
)
def case_duplicate_ids() -> list[Line]:
    fm = override("akta-lahir", "force_manual", at(20), "override/same")
    copy = fm.replace(b'"source":"', b'"source":"/copy', 1)
    assert copy != fm
    return framed(
        [
            Line(fm, "effect"),
            hostile(copy, "dead"),
            hostile(override("akta-lahir", "release", at(21), "override/same"), "any"),
            hostile(record("akta-lahir", "DUP-1", at(22), "record/dup-a"), "any"),
            hostile(record("akta-lahir", "DUP-1", at(22), "record/dup-b"), "any"),
            hostile(reading("backup-4g", at(23), "down", "probe/same"), "any"),
            hostile(reading("vsat-palapa", at(23), "down", "probe/same"), "any"),
        ]
    )


@event_case(
    "Late and stale inputs: an override stamped a day before the clock, records and a "
    "reading from before the last tick.",
    "Too old: dead-lettered too-old; merely late: applied after the tick; no crash.",
)
def case_late_and_stale_inputs() -> list[Line]:
    return framed(
        [
            Line(tick(at(40))),
            hostile(override("akta-lahir", "force_manual", at(-2 * 86400), "override/old")),
            hostile(reading("backup-4g", at(-3600), "down", "probe/old"), "any"),
            hostile(override("surat-pindah", "pin", at(30), "override/late"), "any"),
        ]
    )


# -- hostile topology files -----------------------------------------------------------------


def _demo_topology() -> str:
    return DEMO_TOPOLOGY.read_text()


@topology_case(
    "A recursive YAML alias (an anchor that contains itself).",
    "Refused: exit 2, an error naming the file, no traceback.",
    exit=(2,),
)
def topo_recursive_alias() -> bytes:
    return _demo_topology().replace("policy:\n", "loop: &loop [*loop]\npolicy:\n", 1).encode()


@topology_case(
    "A billion-laughs alias bomb of a few hundred bytes.",
    "Refused at once (aliases beyond a small bound), in bounded memory: exit 2.",
    exit=(2,),
)
def topo_alias_bomb() -> bytes:
    lines = ['    - &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for n in range(1, 10):
        prev = f"*a{n - 1}"
        lines.append(f"    - &a{n} [{', '.join([prev] * 9)}]")
    bomb = "    requires:\n" + "\n".join(lines) + "\n"
    return _demo_topology().replace("    requires: [telkom-sto-pattimura]\n", bomb, 1).encode()


@topology_case(
    "A site time zone that is a directory of the zone database (Asia).",
    "Refused: exit 2, the file, $.sites.<site>.timezone and what is wrong.",
    exit=(2,),
)
def topo_timezone_directory() -> bytes:
    return _demo_topology().replace("timezone: Asia/Jayapura", "timezone: Asia", 1).encode()


@topology_case(
    "A time zone that walks out of the zone database (../../../../etc/passwd).",
    "Refused: exit 2, naming the path in the file.",
    exit=(2,),
)
def topo_timezone_path_traversal() -> bytes:
    return (
        _demo_topology()
        .replace("timezone: Asia/Jayapura", "timezone: ../../../../etc/passwd", 1)
        .encode()
    )


@topology_case(
    "flap_threshold: 2.0, a float where a count belongs.",
    "Refused: exit 2 (a count is an integer).",
    exit=(2,),
)
def topo_flap_threshold_float() -> bytes:
    return (
        _demo_topology()
        .replace("  loss_degraded_pct: 5\n", "  loss_degraded_pct: 5\n  flap_threshold: 2.0\n")
        .encode()
    )


@topology_case(
    "stale_after: 300000000d, a duration past 64-bit microseconds.",
    "Refused: exit 2 (durations past a sane maximum).",
    exit=(2,),
)
def topo_duration_past_64_bits() -> bytes:
    return _demo_topology().replace("stale_after: 120s", "stale_after: 300000000d").encode()


@topology_case(
    "Two services with the same key (the second would silently replace the first).",
    "Refused: exit 2, naming the duplicate key.",
    exit=(2,),
)
def topo_duplicate_service_keys() -> bytes:
    text = _demo_topology()
    block = text[text.index("  ektp:\n") : text.index("  akta-lahir:\n")]
    return text.replace(
        "  akta-lahir:\n", block.replace("ektp-counter", "other") + "  akta-lahir:\n", 1
    ).encode()


@topology_case(
    "The same duplicate service key in a topology written as JSON (read by orjson).",
    "Refused like the YAML one: exit 2.",
    exit=(2,),
    suffix=".json",
)
def topo_duplicate_service_keys_json() -> bytes:
    import yaml

    document = yaml.safe_load(_demo_topology())
    text = json.dumps(document)
    ektp = json.dumps(document["services"]["ektp"])
    return text.replace('"services": {', '"services": {"ektp": ' + ektp + ", ", 1).encode()


@topology_case(
    "A 2 MB scalar as a site's time zone: an error message that repeats it whole.",
    "Refused: exit 2 with a short message (the value cut), not megabytes of it.",
    exit=(2,),
    committed=False,
)
def topo_huge_scalar_in_error() -> bytes:
    return (
        _demo_topology()
        .replace("timezone: Asia/Jayapura", "timezone: " + "Z" * 2_000_000, 1)
        .encode()
    )


@topology_case(
    "Rich markup, terminal escapes, bidi overrides and a newline in site and service names "
    "(printed as timeline titles).",
    "Refused: exit 2, the file, $.services.ektp.name.en and what is wrong (names may not "
    "hold control or bidirectional characters), the name shown escaped in the error.",
    exit=(2,),
)
def topo_markup_in_names() -> bytes:
    text = _demo_topology()
    text = text.replace(
        "name: Disdukcapil Kota Ambon", 'name: "[/zzz] \\e[2J\\e]52;c;eA==\\a \\u202eevil"', 1
    )
    text = text.replace("en: Electronic ID card", 'en: "[bold]ID[/] \\e[31m\\nFORGED-LOG-LINE"')
    return text.encode()


@topology_case(
    "Python object tags (!!python/object/apply:os.system).",
    "Refused (safe loading): exit 2, nothing run.",
    exit=(2,),
)
def topo_python_tag() -> bytes:
    return (_demo_topology() + 'evil: !!python/object/apply:os.system ["echo pwned"]\n').encode()


@topology_case(
    "A file that is not UTF-8 (Latin-1 in a site name).",
    "Refused: exit 2, naming the file.",
    exit=(2,),
)
def topo_not_utf8() -> bytes:
    return _demo_topology().replace("Disdukcapil", "Disdukcapil caf\u00e9").encode("latin-1")


@topology_case(
    "10,000 levels of nested YAML flow sequences.",
    "Refused: exit 2, no RecursionError traceback.",
    exit=(2,),
)
def topo_deep_nesting() -> bytes:
    return (_demo_topology() + "deep: " + "[" * 10_000 + "]" * 10_000 + "\n").encode()


@topology_case(
    "A topology that is a YAML list, and one that is empty.",
    "Refused: exit 2, naming the file and $.",
    exit=(2,),
)
def topo_not_a_mapping() -> bytes:
    return b"- sites\n- links\n"


@topology_case(
    "Every window zero (0s): machines that may fire every edge at one instant.",
    "Either refused (exit 2) or run to the end without looping (exit 0); no hang.",
    exit=(0, 2),
)
def topo_zero_windows() -> bytes:
    text = _demo_topology()
    for key in (
        "degrade_after",
        "manual_after",
        "degraded_max",
        "recover_after",
        "restore_after",
        "relapse_after",
        "stale_after",
        "escalate_after",
    ):
        start = text.index(f"  {key}: ")
        end = text.index("\n", start)
        text = text[:start] + f"  {key}: 0s" + text[end:]
    return text.encode()


#: The events every topology case is replayed over: the baseline case's file.
BASELINE: Final = EVENTS_DIR / "baseline.jsonl"


# ------------------------------------------------------------------------------- writing


def _toml_list(numbers: list[int]) -> str:
    return "[" + ", ".join(str(n) for n in numbers) + "]"


def _toml_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)


def roles(lines: list[Line], runner: Literal["replay", "kafka"]) -> dict[str, list[int]]:
    """Line numbers (from 1) by role, for one runner."""
    out: dict[str, list[int]] = {"ok": [], "effect": [], "dead": [], "any": []}
    for number, line in enumerate(lines, start=1):
        out[line.replay if runner == "replay" else line.kafka_role].append(number)
    return out


def event_sidecar(case: EventCase, lines: list[Line]) -> str:
    parts = [
        f"# {case.name}.jsonl: written by tests/hostile/corpus.py; do not edit by hand.",
        "# Roles: ok = must not be dead-lettered; effect = must cause a transition;",
        "# dead = must be dead-lettered, with a documented reason and its original bytes.",
        f"attack = {_toml_str(case.attack)}",
        f"expect = {_toml_str(case.expect)}",
        f"generated_at_test_time = {'false' if case.committed else 'true'}",
        f"sent_to_kafka = {'true' if case.kafka else 'false'}",
        f"lines = {len(lines)}",
    ]
    for runner in ("replay", "kafka") if case.kafka else ("replay",):
        parts.append(f"\n[{runner}]  # line numbers by role; lines not listed may go either way")
        for role, numbers in roles(lines, runner).items():
            if role != "any":
                parts.append(f"{role} = {_toml_list(numbers)}")
    return "\n".join(parts) + "\n"


def topology_sidecar(case: TopologyCase) -> str:
    return (
        "\n".join(
            [
                f"# {case.path.name}: written by tests/hostile/corpus.py; do not edit by hand.",
                f"attack = {_toml_str(case.attack)}",
                f"expect = {_toml_str(case.expect)}",
                f"generated_at_test_time = {'false' if case.committed else 'true'}",
                f"exit = {list(case.exit)}",
            ]
        )
        + "\n"
    )


def corpus_files() -> dict[Path, bytes]:
    """Every committed file of the corpus and its bytes (sidecars for every case)."""
    files: dict[Path, bytes] = {CORPUS_TOPOLOGY: corpus_topology()}
    for case in EVENT_CASES:
        lines = case.build()
        if case.committed:
            files[case.path] = file_bytes(lines)
        files[case.path.with_suffix(".toml")] = event_sidecar(case, lines).encode()
    for topo in TOPOLOGY_CASES:
        if topo.committed:
            files[topo.path] = topo.build()
        files[topo.path.with_suffix(".toml")] = topology_sidecar(topo).encode()
    return files


def write_corpus() -> None:
    for path in (EVENTS_DIR, TOPOLOGIES_DIR):
        path.mkdir(parents=True, exist_ok=True)
        for old in path.iterdir():
            old.unlink()
    for path, data in corpus_files().items():
        path.write_bytes(data)


if __name__ == "__main__":
    write_corpus()
    print(
        f"wrote {len(EVENT_CASES)} event and {len(TOPOLOGY_CASES)} topology cases "
        f"under {CORPUS.relative_to(ROOT)}",
        file=sys.stderr,
    )
