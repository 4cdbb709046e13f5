"""What people are told, in Indonesian and English.

Templates are data: one entry per (template name), each with an ``id`` and an ``en`` text.
They name the service, the site and the local time at the site, and say what to do. Public
texts are short and plain: they end up on a door, a website and a radio announcement.

A notice's text is plain text that is also safe as HTML element content, because senders
render it as HTML, SMS or a terminal line. Every value put into a template (an operator's
actor, role and reason, names from the topology, ids) is made safe first (:func:`plain`):
control characters and line or paragraph separators become a space (runs of white space
become one, none is left at either end), format characters (bidi overrides and isolates,
zero-width characters) are removed, the value is cut at ``FRAGMENT_MAX`` characters, and
``&``, ``<`` and ``>`` are escaped as ``&amp;``, ``&lt;`` and ``&gt;``. The templates hold
none of these, so a notice's text never contains a control character, a ``<`` or a ``>``,
and every ``&`` in it starts an entity: unescaped (``html.unescape``), it gives exactly what
was sent.
"""

from __future__ import annotations

import html
import unicodedata
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from workflows.timeutil import format_local
from workflows.topology import Service, Site

__all__ = ["FRAGMENT_MAX", "TEMPLATES", "NoticeText", "plain", "render"]

#: The longest value put into a notice, in characters before escaping: an operator's reason
#: may be 1,000 characters, and a notice's text at most 4,000 (its schema) once escaped. The
#: whole reason stays on the transition record.
FRAGMENT_MAX: Final = 500

_DROP: Final = frozenset({"Cf", "Cs", "Co", "Cn"})  # format, surrogate, private, unassigned
_SPACE: Final = frozenset({"Cc", "Zl", "Zp", "Zs"})  # controls and separators


def plain(value: object) -> str:
    """``value`` as a safe fragment of a notice (see the module's docstring)."""
    text = str(value)
    plain_ascii = text.isascii() and text.isprintable()
    if not plain_ascii or "  " in text or text[:1] == " " or text[-1:] == " ":
        kept = []
        for char in text:
            category = unicodedata.category(char)
            if category in _SPACE:
                kept.append(" ")
            elif category not in _DROP:
                kept.append(char)
        text = " ".join("".join(kept).split())
    if len(text) > FRAGMENT_MAX:
        text = text[: FRAGMENT_MAX - 1] + "\u2026"
    return html.escape(text, quote=False)


@dataclass(frozen=True, slots=True)
class NoticeText:
    id: str
    en: str


TEMPLATES: Final = MappingProxyType(
    {
        "degraded-staff": NoticeText(
            id=(
                "Sejak {time_id}, jaringan untuk layanan {name_id} di {site} lambat atau "
                "tidak stabil. Layanan daring masih berjalan; jangan memaksakan transaksi "
                "yang gagal, dan siapkan prosedur manual."
            ),
            en=(
                "Since {time_en}, the network for {name_en} at {site} is slow or unstable. "
                "Online service continues; do not force failing transactions, and get the "
                "manual procedure ready."
            ),
        ),
        "degraded-oncall": NoticeText(
            id="{service} di {site_id}: kesehatan {health} sejak {time_id}; tautan: {links}.",
            en="{service} at {site_id}: health {health} since {time_en}; links: {links}.",
        ),
        "recovered-staff": NoticeText(
            id="Sejak {time_id}, jaringan untuk layanan {name_id} di {site} kembali normal.",
            en="Since {time_en}, the network for {name_en} at {site} is back to normal.",
        ),
        "manual-public": NoticeText(
            id=(
                "PENGUMUMAN: Mulai {time_id}, layanan {name_id} di {site} dilayani secara "
                "manual karena gangguan jaringan internet. Berkas Anda tetap diterima dan "
                "akan diinput ke sistem setelah jaringan pulih."
            ),
            en=(
                "NOTICE: From {time_en}, {name_en} at {site} is handled by hand because of a "
                "network outage. Your application is still accepted and will be entered into "
                "the online system once the network is back."
            ),
        ),
        "hold-public": NoticeText(
            id=(
                "PENGUMUMAN: Mulai {time_id}, layanan {name_id} di {site} dihentikan sementara "
                "karena gangguan jaringan internet; layanan ini tidak dapat dilakukan tanpa "
                "jaringan. Antrean Anda tetap tersimpan. Mohon tunggu pemberitahuan berikutnya "
                "sebelum datang kembali."
            ),
            en=(
                "NOTICE: From {time_en}, {name_en} at {site} is suspended because of a network "
                "outage; it cannot be done without the network. Your place in the queue is "
                "kept. Please wait for the next notice before you come back."
            ),
        ),
        "manual-staff": NoticeText(
            id=(
                "Layanan {name_id} beralih ke prosedur manual sejak {time_id}. Layani dengan "
                "formulir kertas dan catat setiap berkas di register manual dengan nomornya; "
                "semua berkas akan diinput ulang ke sistem setelah jaringan pulih "
                "(insiden {incident})."
            ),
            en=(
                "{name_en} switched to the manual procedure at {time_en}. Serve on paper and "
                "log every record in the manual ledger with its number; every record will be "
                "re-entered online once the network is back (incident {incident})."
            ),
        ),
        "hold-staff": NoticeText(
            id=(
                "Antrean {queue} untuk layanan {name_id} ditahan sejak {time_id}. Jangan "
                "memaksakan layanan daring; arahkan pemohon untuk menunggu pemberitahuan "
                "(insiden {incident})."
            ),
            en=(
                "Queue {queue} for {name_en} is held since {time_en}. Do not force the online "
                "service; ask applicants to wait for the next notice (incident {incident})."
            ),
        ),
        "resumed-public": NoticeText(
            id=(
                "PENGUMUMAN: Mulai {time_id}, layanan {name_id} di {site} kembali dilayani "
                "secara daring. Terima kasih atas kesabaran Anda."
            ),
            en=(
                "NOTICE: From {time_en}, {name_en} at {site} is served online again. Thank you "
                "for your patience."
            ),
        ),
        "closed-staff": NoticeText(
            id=(
                "Insiden {incident} ditutup pada {time_id}: {records} berkas manual telah "
                "diinput ke sistem. Layanan {name_id} berjalan normal."
            ),
            en=(
                "Incident {incident} closed at {time_en}: {records} manual records have been "
                "entered online. {name_en} runs normally."
            ),
        ),
        "escalate-authority": NoticeText(
            id=(
                "Kepada {head}: layanan {name_id} di {site} sudah manual sejak {since_id}. "
                "Mohon koordinasi dengan penyedia jaringan (insiden {incident})."
            ),
            en=(
                "To {head}: {name_en} at {site} has been manual since {since_en}. Please "
                "coordinate with the network provider (incident {incident})."
            ),
        ),
        "escalate-provider": NoticeText(
            id=(
                "Kepada {provider}: tautan {links} tidak berfungsi; layanan {name_id} di "
                "{site} manual sejak {since_id} (insiden {incident})."
            ),
            en=(
                "To {provider}: links {links} are failing; {name_en} at {site} has been "
                "manual since {since_en} (incident {incident})."
            ),
        ),
        "pinned-oncall": NoticeText(
            id="{service}: transisi otomatis dibekukan oleh {actor} ({role}): {reason}.",
            en="{service}: automatic transitions frozen by {actor} ({role}): {reason}.",
        ),
        # Planned maintenance (workflows/maintenance.py): {notice_id} and {notice_en} are the
        # operator's own words to the public, in each language.
        "maintenance-announce-manual-public": NoticeText(
            id=(
                "PENGUMUMAN: Pemeliharaan jaringan terencana dari {start_id} sampai {end_id}. "
                "Selama itu layanan {name_id} di {site} dilayani secara manual; berkas Anda "
                "tetap diterima. {notice_id}"
            ),
            en=(
                "NOTICE: Planned network maintenance from {start_en} until {end_en}. "
                "Meanwhile {name_en} at {site} is handled by hand; your application is still "
                "accepted. {notice_en}"
            ),
        ),
        "maintenance-announce-hold-public": NoticeText(
            id=(
                "PENGUMUMAN: Pemeliharaan jaringan terencana dari {start_id} sampai {end_id}. "
                "Selama itu layanan {name_id} di {site} dihentikan sementara; antrean Anda "
                "tetap tersimpan. {notice_id}"
            ),
            en=(
                "NOTICE: Planned network maintenance from {start_en} until {end_en}. "
                "Meanwhile {name_en} at {site} is suspended; your place in the queue is kept. "
                "{notice_en}"
            ),
        ),
        "maintenance-announce-staff": NoticeText(
            id=(
                "Pemeliharaan terencana {window} dari {start_id} sampai {end_id}: layanan "
                "{name_id} akan beralih ke prosedur manual pada awalnya. Siapkan formulir dan "
                "register manual."
            ),
            en=(
                "Planned maintenance {window} from {start_en} until {end_en}: {name_en} will "
                "switch to the manual procedure when it starts. Get the forms and the manual "
                "ledger ready."
            ),
        ),
        "maintenance-manual-public": NoticeText(
            id=(
                "PENGUMUMAN: Mulai {time_id} sampai {end_id}, layanan {name_id} di {site} "
                "dilayani secara manual karena pemeliharaan jaringan terencana. Berkas Anda "
                "tetap diterima dan akan diinput ke sistem setelahnya. {notice_id}"
            ),
            en=(
                "NOTICE: From {time_en} until {end_en}, {name_en} at {site} is handled by hand "
                "because of planned network maintenance. Your application is still accepted "
                "and will be entered online afterwards. {notice_en}"
            ),
        ),
        "maintenance-hold-public": NoticeText(
            id=(
                "PENGUMUMAN: Mulai {time_id} sampai {end_id}, layanan {name_id} di {site} "
                "dihentikan sementara karena pemeliharaan jaringan terencana. Antrean Anda "
                "tetap tersimpan. {notice_id}"
            ),
            en=(
                "NOTICE: From {time_en} until {end_en}, {name_en} at {site} is suspended "
                "because of planned network maintenance. Your place in the queue is kept. "
                "{notice_en}"
            ),
        ),
        "maintenance-manual-staff": NoticeText(
            id=(
                "Pemeliharaan terencana {window}: layanan {name_id} beralih ke prosedur manual "
                "sejak {time_id} sampai {end_id}. Catat setiap berkas di register manual "
                "(insiden {incident})."
            ),
            en=(
                "Planned maintenance {window}: {name_en} is on the manual procedure from "
                "{time_en} until {end_en}. Log every record in the manual ledger (incident "
                "{incident})."
            ),
        ),
        "maintenance-hold-staff": NoticeText(
            id=(
                "Pemeliharaan terencana {window}: antrean {queue} untuk layanan {name_id} "
                "ditahan sejak {time_id} sampai {end_id} (insiden {incident})."
            ),
            en=(
                "Planned maintenance {window}: queue {queue} for {name_en} is held from "
                "{time_en} until {end_en} (incident {incident})."
            ),
        ),
        "maintenance-extend-public": NoticeText(
            id=(
                "PENGUMUMAN: Pemeliharaan jaringan terencana untuk layanan {name_id} di {site} "
                "diperpanjang sampai {end_id}. {notice_id}"
            ),
            en=(
                "NOTICE: The planned network maintenance for {name_en} at {site} is extended "
                "until {end_en}. {notice_en}"
            ),
        ),
        "maintenance-extend-staff": NoticeText(
            id="Pemeliharaan terencana {window} untuk {name_id} diperpanjang sampai {end_id}.",
            en="Planned maintenance {window} for {name_en} is extended until {end_en}.",
        ),
        "maintenance-cancel-public": NoticeText(
            id=(
                "PENGUMUMAN: Pemeliharaan jaringan terencana dari {start_id} untuk layanan "
                "{name_id} di {site} dibatalkan; layanan berjalan seperti biasa."
            ),
            en=(
                "NOTICE: The planned network maintenance from {start_en} for {name_en} at "
                "{site} is cancelled; the service runs as usual."
            ),
        ),
        "maintenance-cancel-staff": NoticeText(
            id="Pemeliharaan terencana {window} untuk {name_id} dibatalkan.",
            en="Planned maintenance {window} for {name_en} is cancelled.",
        ),
        "unpinned-oncall": NoticeText(
            id="{service}: transisi otomatis aktif kembali, oleh {actor} ({role}): {reason}.",
            en="{service}: automatic transitions resumed by {actor} ({role}): {reason}.",
        ),
        "pin-expired-oncall": NoticeText(
            id="{service}: pembekuan oleh {actor} ({role}) berakhir pada {time_id}; transisi "
            "otomatis aktif kembali.",
            en="{service}: the pin by {actor} ({role}) expired at {time_en}; automatic "
            "transitions resumed.",
        ),
        "release-pending-staff": NoticeText(
            id=(
                "{actor} ({role}) meminta antrean {name_id} di {site} dibuka kembali, tetapi "
                "jaringan belum sehat. Antrean tetap ditahan sampai operator kedua yang "
                "berbeda menyetujui sebelum {until_id}: {reason}."
            ),
            en=(
                "{actor} ({role}) asked to release the queue of {name_en} at {site}, but the "
                "network is not healthy yet. The queue stays held until a second, different "
                "operator approves before {until_en}: {reason}."
            ),
        ),
        "release-lapsed-staff": NoticeText(
            id=(
                "Permintaan {actor} ({role}) untuk membuka antrean {name_id} di {site} "
                "berakhir pada {time_id} tanpa persetujuan operator kedua; antrean tetap "
                "ditahan."
            ),
            en=(
                "The request by {actor} ({role}) to release the queue of {name_en} at {site} "
                "lapsed at {time_en} without a second operator's approval; the queue stays "
                "held."
            ),
        ),
    }
)


def render(
    template: str, service: Service, site: Site, time: int, **extra: object
) -> dict[str, str]:
    """Fill a template for one service at one instant; ``extra`` adds fields to both texts.

    ``since``, ``start``, ``end`` and ``until`` (instants in microseconds), when given, are
    rendered in local time too (``since_id``, ``since_en``, ...).
    """
    text = TEMPLATES[template]
    fields: dict[str, object] = {
        "service": service.id,
        "name_id": service.name_id,
        "name_en": service.name_en,
        "site": site.name,
        "site_id": site.id,
        "head": site.head,
        "queue": service.queue or "",
        "time_id": format_local(time, site.timezone, "id"),
        "time_en": format_local(time, site.timezone, "en"),
    }
    for name in ("since", "start", "end", "until"):
        moment = extra.pop(name, None)
        if isinstance(moment, int):
            fields[f"{name}_id"] = format_local(moment, site.timezone, "id")
            fields[f"{name}_en"] = format_local(moment, site.timezone, "en")
    fields.update(extra)
    safe = {name: plain(value) for name, value in fields.items()}
    return {"id": text.id.format_map(safe), "en": text.en.format_map(safe)}
