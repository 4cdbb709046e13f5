"""Write streams/demo/ambon-events.jsonl, the demo's input: the Ambon case, minute by minute.

Run it after changing the story; tests check the committed file is what this script writes.
Times are UTC; Ambon (WIT) is UTC+9, so 08:10 local is 23:10 the day before in UTC.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from streams.demokeys import sign_as

OUT = Path(__file__).resolve().parent.parent / "streams" / "demo" / "ambon-events.jsonl"
WIT = timedelta(hours=9)


def local(day: int, hhmm: str) -> datetime:
    """An instant given in Ambon local time on February ``day``, 2019, as UTC."""
    hour, minute = map(int, hhmm.split(":"))
    return datetime(2019, 2, day, hour, minute, tzinfo=UTC) - WIT


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def envelope(kind: str, ident: str, source: str, moment: datetime, subject: str | None,
             data: dict[str, object] | None) -> dict[str, object]:  # fmt: skip
    event: dict[str, object] = {
        "specversion": "1.0", "id": ident, "source": source, "type": kind, "time": stamp(moment),
    }  # fmt: skip
    if subject is not None:
        event["subject"] = subject
    event["data"] = data if data is not None else {}
    return event


def probe(link: str, moment: datetime, status: str, latency: float | None,
          loss: float | None) -> dict[str, object]:  # fmt: skip
    return envelope(
        "link.status.v1",
        f"probe/{link}/{stamp(moment)}",
        "/probes/ambon-noc",
        moment,
        link,
        {"status": status, "latency_ms": latency, "loss_pct": loss},
    )


def telkom_reading(moment: datetime) -> tuple[str, float | None, float | None] | None:
    """What the exchange's probe says at an instant, or None while it is silent."""
    fire, dead, silent = local(5, "08:10"), local(5, "08:18"), local(5, "08:25")
    repair, quiet = local(6, "09:00"), local(6, "09:40")
    spike, spike_end = local(6, "10:35"), local(6, "10:38")
    if moment < fire:
        return "up", 35.0, 0.0
    if moment < dead:  # "it runs, but loading takes long and then drops again"
        return "degraded", 1800.0, 14.0
    if moment < silent:
        return "down", None, 100.0
    if moment < repair:  # the probe itself is behind the fire
        return None
    if moment < quiet:  # a flapping repair: every few minutes up, then down again
        return ("up", 60.0, 0.5) if (moment - repair).seconds // 180 % 2 == 0 else (
            "down", None, 100.0)  # fmt: skip
    if spike <= moment < spike_end:
        return "up", 950.0, 22.0
    return "up", 40.0, 0.0


def backup_reading(moment: datetime) -> tuple[str, float | None, float | None]:
    if local(5, "08:12") <= moment < local(6, "09:20"):
        return "down", None, 100.0
    return "up", 90.0, 1.0


def events() -> list[dict[str, object]]:
    start, end = local(5, "07:30"), local(6, "15:00")
    timed: list[tuple[datetime, int, dict[str, object]]] = []

    def add(moment: datetime, event: dict[str, object]) -> None:
        timed.append((moment, len(timed), event))

    moment = start
    while moment <= end:
        # Probes read every minute, a few seconds apart; the engine ticks every minute.
        reading = telkom_reading(moment)
        if reading is not None:
            add(
                moment + timedelta(seconds=5),
                probe("telkom-sto-pattimura", moment + timedelta(seconds=5), *reading),
            )
        add(
            moment + timedelta(seconds=10),
            probe("backup-4g", moment + timedelta(seconds=10), *backup_reading(moment)),
        )
        add(
            moment + timedelta(seconds=15),
            probe("vsat-palapa", moment + timedelta(seconds=15), "up", 600.0, 0.8),
        )
        tick = moment + timedelta(minutes=1)
        add(
            tick,
            envelope("clock.tick.v1", f"tick/{stamp(tick)}", "/failover/ticker", tick, None, None),
        )
        moment = tick

    def operator(day: int, hhmm: str, service: str, action: str, actor: str, role: str,
                 reason: str) -> None:  # fmt: skip
        at = local(day, hhmm) + timedelta(seconds=30)
        # Signed with the demo operator's key (streams/demokeys.py), as `failover override`
        # signs: the engine acts on no unsigned override.
        add(
            at,
            sign_as(
                envelope(
                    "operator.override.v1",
                    f"override/{service}/{action}/{stamp(at)}",
                    "/operators/console",
                    at,
                    service,
                    {"action": action, "actor": actor, "role": role, "reason": reason},
                )
            ),
        )

    def record(day: int, hhmm: str, service: str, record_id: str, kind: str) -> None:
        at = local(day, hhmm) + timedelta(seconds=40)
        add(
            at,
            envelope(
                "manual.record.v1",
                f"record/{record_id}",
                "/offices/disdukcapil",
                at,
                service,
                {"record_id": record_id, "kind": kind},
            ),
        )

    def reconciled(day: int, hhmm: str, service: str, record_ids: list[str]) -> None:
        at = local(day, hhmm) + timedelta(seconds=45)
        add(
            at,
            envelope(
                "reconcile.completed.v1",
                f"reconciled/{service}/{stamp(at)}",
                "/offices/disdukcapil",
                at,
                service,
                {"record_ids": record_ids},
            ),
        )

    # The acting head does not wait for the timers: KTP-el cannot be forced through.
    operator(
        5,
        "08:15",
        "ektp",
        "force_manual",
        "Plt. Kepala Dinas",
        "acting-head",
        "Jaringan lambat lalu putus; jangan dipaksakan. Network slow then dropping.",
    )
    for n in range(1, 13):
        record(
            5, f"{9 + n // 3:02d}:{(n * 13) % 60:02d}", "legalisasi", f"LEG-{n:03d}", "legalisation"
        )
    for n in range(1, 6):
        record(5, f"{10 + n:02d}:20", "surat-pindah", f"SKP-{n:03d}", "change-of-address")
    # Next morning the head holds KTP-el until the central registry confirms, then lets go.
    operator(
        6,
        "09:50",
        "ektp",
        "pin",
        "Kepala Dinas",
        "office-head",
        "Tunggu konfirmasi Dukcapil pusat. Waiting for the central registry.",
    )
    operator(
        6,
        "11:30",
        "ektp",
        "unpin",
        "Kepala Dinas",
        "office-head",
        "Dukcapil pusat siap. Central registry confirmed.",
    )
    record(6, "10:45", "legalisasi", "LEG-013", "legalisation")
    reconciled(6, "11:15", "legalisasi", [f"LEG-{n:03d}" for n in range(1, 9)])
    reconciled(6, "12:40", "legalisasi", [f"LEG-{n:03d}" for n in range(9, 14)])
    reconciled(6, "11:50", "surat-pindah", [f"SKP-{n:03d}" for n in range(1, 6)])

    timed.sort(key=lambda entry: (entry[0], entry[1]))
    return [event for _, _, event in timed]


def lines() -> bytes:
    body = b"".join(orjson.dumps(event) + b"\n" for event in events())
    # Bad input is part of every real day: it is dead-lettered with its reason, and kept.
    bad = [
        b'{"specversion":"1.0","id":"probe/broken","source":"/probes/ambon-noc",'
        b'"type":"link.status.v1","time":"2019-02-05T00:00:05Z","subject":"telkom-sto-pattimura",'
        b'"data":{"status":"up","latency_ms":-5}}\n',
        b'{"specversion":"1.0","id":"record/x","source":"/offices/unknown",'
        b'"type":"manual.record.v1","time":"2019-02-05T03:00:40Z","subject":"paspor",'
        b'"data":{"record_id":"X-1"}}\n',
        b"this line is not JSON\n",
    ]
    split = body.split(b"\n")
    middle = len(split) // 3
    return b"\n".join(split[:middle]) + b"\n" + b"".join(bad) + b"\n".join(split[middle:])


def main() -> int:
    OUT.write_bytes(lines())
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
