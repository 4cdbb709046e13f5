"""The board page's own words in Indonesian and English (records' text is shown as sent).

A dict per language, the same keys in each (a test checks): no framework, nothing to
compile. ``STATE_ICONS`` gives each state a shape of its own, shown beside its name, so a
state never depends on colour alone.
"""

from __future__ import annotations

from typing import Final

__all__ = ["LANGUAGES", "STATE_ICONS", "STRINGS"]

LANGUAGES: Final = ("en", "id")

STATE_ICONS: Final = {"online": "✓", "degraded": "▲", "manual": "✎", "restored": "↺"}

STRINGS: Final[dict[str, dict[str, str]]] = {
    "en": {
        "title": "Failover status board",
        "incident_title": "Incident",
        "state.online": "online",
        "state.degraded": "degraded",
        "state.manual": "manual",
        "state.restored": "restored",
        "service": "Service",
        "state": "State",
        "since": "Since (site time)",
        "duration": "Duration",
        "incident": "Incident",
        "queue": "Queue",
        "paper_open": "Open paper records",
        "last_reason": "Last reason",
        "site": "Site",
        "all_sites": "All sites",
        "not_online": "Not online only",
        "apply": "Apply",
        "heard": "Last heard from Kafka",
        "never": "never",
        "held": "held",
        "not_held": "not held",
        "none": "none",
        "live": "live",
        "polling": "polling",
        "connecting": "connecting",
        "updates": "Updates",
        "empty": "No service matches.",
        "more": "More services match than are shown; choose a site.",
        "timeline": "Timeline",
        "time": "Time (site time)",
        "event": "Event",
        "detail": "Detail",
        "notices": "Notices as sent",
        "audience": "Audience",
        "text_id": "Indonesian",
        "text_en": "English",
        "back": "Back to the board",
        "open": "open",
        "closed": "closed",
        "dropped": "older entries not kept",
        "language": "Language",
        "duration_note": "durations to the newest event time seen",
    },
    "id": {
        "title": "Papan status failover",
        "incident_title": "Insiden",
        "state.online": "daring",
        "state.degraded": "terganggu",
        "state.manual": "manual",
        "state.restored": "pulih",
        "service": "Layanan",
        "state": "Status",
        "since": "Sejak (waktu setempat)",
        "duration": "Durasi",
        "incident": "Insiden",
        "queue": "Antrean",
        "paper_open": "Berkas manual terbuka",
        "last_reason": "Alasan terakhir",
        "site": "Lokasi",
        "all_sites": "Semua lokasi",
        "not_online": "Hanya yang tidak daring",
        "apply": "Terapkan",
        "heard": "Terakhir terhubung ke Kafka",
        "never": "belum pernah",
        "held": "ditahan",
        "not_held": "tidak ditahan",
        "none": "tidak ada",
        "live": "langsung",
        "polling": "berkala",
        "connecting": "menyambung",
        "updates": "Pembaruan",
        "empty": "Tidak ada layanan yang cocok.",
        "more": "Lebih banyak layanan cocok daripada yang ditampilkan; pilih lokasi.",
        "timeline": "Linimasa",
        "time": "Waktu (setempat)",
        "event": "Peristiwa",
        "detail": "Rincian",
        "notices": "Pengumuman sebagaimana dikirim",
        "audience": "Sasaran",
        "text_id": "Bahasa Indonesia",
        "text_en": "Bahasa Inggris",
        "back": "Kembali ke papan",
        "open": "terbuka",
        "closed": "ditutup",
        "dropped": "entri lama tidak disimpan",
        "language": "Bahasa",
        "duration_note": "durasi hingga waktu peristiwa terbaru",
    },
}
