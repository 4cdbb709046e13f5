"""The board without a broker: its read model fed records directly, its HTTP side through
aiohttp's test client (filters, errors, escaping, metrics against the API, bounds)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from streams.board.i18n import STATE_ICONS, STRINGS
from streams.board.model import MAX_EVENTS, STATES, Board, duration_text, since_text
from streams.board.reader import Lag
from streams.board.web import BOARD, CSP, BoardWeb, make_app
from tests.boardrecords import (
    DISDUKCAPIL,
    SIRIMAU,
    Record,
    ambon_manual,
    ektp_restored,
    encode,
    state_event,
)

TOPICS = {"state": "service-state", "transitions": "service-transitions", "commands": "cmds"}
HEARD = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def feed(board: Board, records: Iterable[Record]) -> None:
    for kind, key, event in records:
        board.apply(TOPICS[kind], kind, key.encode(), encode(event))
    board.heard(HEARD)


@pytest_asyncio.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    board = Board()
    feed(board, ambon_manual())
    lag = Lag("failover-engine", {"link-status": 12}, HEARD)
    app = make_app(BoardWeb(board, lambda: True, lambda: lag))
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def services(client: TestClient[Any, Any], query: str = "") -> list[dict[str, Any]]:
    response = await client.get(f"/api/services{query}")
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["heard_from_kafka"] == "2026-01-02T03:04:05.000Z"
    return list(body["services"])


@pytest.mark.asyncio
async def test_api_lists_and_filters(client: TestClient[Any, Any]) -> None:
    every = await services(client)
    assert [s["service"] for s in every] == [
        "akta-lahir", "ektp", "legalisasi", "surat-pindah", "rekam-ktp-kecamatan",
    ]  # fmt: skip
    ektp = every[1]
    assert ektp["queue"] == {"held": True}
    assert ektp["incident"] == "ektp@20190204T231200Z"
    assert [s["service"] for s in await services(client, f"?site={SIRIMAU}")] == [
        "rekam-ktp-kecamatan"
    ]
    not_online = await services(client, "?not_online=1")
    assert {s["state"] for s in not_online} == {"manual"}
    assert len(not_online) == 4
    assert await services(client, "?state=online") == [every[4]]
    assert await services(client, f"?site={SIRIMAU}&not_online=1") == []
    assert await services(client, "?site=nowhere") == []


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("?state=offline", "state: 'offline' is not one of online"),
        ("?colour=red", "unknown parameter 'colour'"),
        ("?site=a&site=b", "parameter 'site' given twice"),
        ("?not_online=yes", "not_online: 'yes' is not 1 or 0"),
    ],
)
@pytest.mark.asyncio
async def test_bad_queries_are_400_and_the_server_keeps_serving(
    client: TestClient[Any, Any], query: str, problem: str
) -> None:
    for path in ("/api/services", "/events"):
        response = await client.get(path + query)
        assert response.status == 400
        assert response.content_type == "application/json"
        assert problem in (await response.json())["error"]
    page = await client.get("/" + query)
    assert page.status == 400
    assert problem in await page.text()
    assert len(await services(client)) == 5


@pytest.mark.asyncio
async def test_unknown_ids_are_404(client: TestClient[Any, Any]) -> None:
    for path in ("/api/services/nope", "/api/incidents/nope", "/incident/nope"):
        response = await client.get(path)
        assert response.status == 404, path
    response = await client.get("/api/services/ektp")
    assert (await response.json())["state"] == "manual"


@pytest.mark.asyncio
async def test_incident_has_timeline_and_notices_in_both_languages(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get("/api/incidents/ektp%4020190204T231200Z")
    body = await response.json()
    assert body["open"] is True
    assert body["service"] == "ektp"
    kinds = [e["kind"] for e in body["events"]]
    assert "transition" in kinds
    assert "queue.hold" in kinds
    # The site's local time: the offset learnt from the state records (WIT).
    assert body["events"][0]["local_time"] == "2019-02-05 08:12:00 +09:00"
    public = [n for n in body["notices"] if n["audience"] == "public"]
    assert public
    assert "KTP elektronik" in public[0]["text"]["id"]
    assert "Electronic ID card" in public[0]["text"]["en"]
    page = await client.get("/incident/ektp%4020190204T231200Z?lang=id")
    html = await page.text()
    assert public[0]["text"]["id"] in html
    assert public[0]["text"]["en"] in html
    assert "Linimasa" in html


@pytest.mark.asyncio
async def test_page_groups_by_site_with_text_and_icon(client: TestClient[Any, Any]) -> None:
    response = await client.get("/?lang=id")
    assert response.headers["Content-Security-Policy"] == CSP
    html = await response.text()
    assert html.index(f'data-site="{DISDUKCAPIL}"') < html.index(f'data-site="{SIRIMAU}"')
    assert f'{STATE_ICONS["manual"]}</span> <span class="state-text">manual' in html
    assert "daring" in html  # online, in Indonesian
    assert "2019-02-05 08:15 +09:00" in html  # ektp's since, site time
    assert 'href="/incident/ektp%4020190204T231200Z?lang=id"' in html
    assert " on" + "click" not in html.lower()
    assert "<script>" not in html  # only <script src=...>
    english = await (await client.get("/?not_online=1")).text()
    assert "Not online only" in english
    assert "rekam-ktp-kecamatan" not in english


@pytest.mark.asyncio
async def test_hostile_names_and_reasons_are_escaped() -> None:
    board = Board()
    hostile = '<script>alert("x")</script>'
    feed(
        board,
        [
            ("state", hostile, state_event(
                hostile, "site'<b>", "manual", "2019-02-05T08:00:00+09:00",
                incident=f"i-{hostile}", last_reason=f"{hostile} & more",
            )),
            ("commands", hostile, {
                "type": "failover.notice.v1", "time": "2019-02-05T08:00:00+09:00",
                "data": {"service": hostile, "site": "site'<b>", "incident": f"i-{hostile}",
                         "audience": "public", "template": hostile,
                         "text": {"id": hostile, "en": hostile}},
            }),
        ],
    )  # fmt: skip
    app = make_app(BoardWeb(board, lambda: True, lambda: None))
    async with TestClient(TestServer(app)) as client:
        for path in ("/", "/?site=site%27%3Cb%3E", f"/incident/i-{hostile}"):
            response = await client.get(path)
            html = await response.text()
            assert response.status == 200, path
            assert "<script>alert" not in html
            assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
            assert "<b>" not in html
        api = await (await client.get("/api/services")).json()
        assert api["services"][0]["service"] == hostile


@pytest.mark.asyncio
async def test_metrics_parse_and_match_the_api(client: TestClient[Any, Any]) -> None:
    response = await client.get("/metrics")
    assert response.status == 200
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    listed = await services(client)
    per_state = {
        (s.labels["site"], s.labels["state"]): s.value
        for s in families["failover_board_services"].samples
    }
    for site in (DISDUKCAPIL, SIRIMAU):
        for state in STATES:
            expected = sum(1 for s in listed if s["site"] == site and s["state"] == state)
            assert per_state[site, state] == expected, (site, state)

    def by_site(name: str) -> dict[str, float]:
        return {s.labels["site"]: s.value for s in families[name].samples}

    assert by_site("failover_board_held_queues") == {DISDUKCAPIL: 2, SIRIMAU: 0}
    assert by_site("failover_board_open_paper_records") == {DISDUKCAPIL: 10, SIRIMAU: 0}
    assert by_site("failover_board_open_incidents") == {DISDUKCAPIL: 4, SIRIMAU: 0}
    # From the first event of the oldest open incident (08:12 WIT) to the newest event seen
    # (the state records' 08:24 WIT).
    age = families["failover_board_oldest_open_incident_age_seconds"].samples[0].value
    assert age == 12 * 60
    lag = families["failover_engine_consumer_lag"].samples[0]
    assert lag.labels == {"group": "failover-engine", "topic": "link-status"}
    assert lag.value == 12
    assert families["failover_board_ready"].samples[0].value == 1


@pytest.mark.asyncio
async def test_health_and_readiness() -> None:
    ready = False
    app = make_app(BoardWeb(Board(), lambda: ready, lambda: None))
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 503
        ready = True
        assert (await client.get("/readyz")).status == 200


@pytest.mark.asyncio
async def test_restored_then_online_closes_the_incident() -> None:
    board = Board()
    feed(board, ambon_manual())
    feed(board, ektp_restored())
    ektp = board.services["ektp"]
    assert ektp.state == "online"
    assert ektp.incident is None
    assert "ektp" not in board.not_online
    assert board.incidents["ektp@20190204T231200Z"].closed


def test_bad_records_change_nothing_and_are_counted() -> None:
    board = Board()
    board.apply("s", "state", b"k", b"not json")
    board.apply("s", "state", b"k", orjson.dumps({"type": "x", "time": "2019-02-05T00:00:00Z"}))
    bad_state = state_event("a", "b", "asleep", "2019-02-05T00:00:00Z")
    board.apply("s", "state", b"a", orjson.dumps(bad_state))
    other = {**bad_state, "type": "failover.transition.v1"}
    board.apply("s", "state", b"a", orjson.dumps(other))
    assert board.services == {}
    assert board.skipped == {
        ("s", "not-json"): 1,
        ("s", "not-a-cloudevent"): 1,
        ("s", "bad-state"): 1,
        ("s", "other-type"): 1,
    }


def test_unknown_fields_are_kept_and_tombstones_delete() -> None:
    board = Board()
    event = state_event("a", "b", "degraded", "2019-02-05T00:00:00Z", future_field={"x": 1})
    board.apply("s", "state", b"a", encode(event))
    assert board.services["a"].fields()["future_field"] == {"x": 1}
    board.apply("s", "state", b"a", None)
    assert board.services == {}
    assert board.not_online == set()


def test_timeline_keeps_the_newest_entries_only() -> None:
    board = Board()
    for minute in range(MAX_EVENTS + 5):
        board.apply("t", "transitions", b"a", encode({
            "type": "failover.transition.v1",
            "time": f"2019-02-05T{minute // 60:02d}:{minute % 60:02d}:00Z",
            "data": {"service": "a", "site": "b", "incident": "i", "from": "x", "to": "y",
                     "reason": str(minute)},
        }))  # fmt: skip
    incident = board.incidents["i"]
    assert len(incident.events) == MAX_EVENTS
    assert incident.dropped == 5
    assert incident.events[0].reason == "5"
    assert incident.start == datetime(2019, 2, 5, tzinfo=UTC)


def test_words_and_formats() -> None:
    assert STRINGS["en"].keys() == STRINGS["id"].keys()
    assert set(STATE_ICONS) == set(STATES)
    assert len(set(STATE_ICONS.values())) == len(STATES)
    assert since_text("2019-02-05T08:15:30+09:00") == "2019-02-05 08:15 +09:00"
    assert since_text("2019-02-05T08:15:30Z") == "2019-02-05 08:15 +00:00"
    assert since_text("garbage") == "garbage"
    assert duration_text(59) == "0m"
    assert duration_text(3 * 3600 + 5 * 60) == "3h 05m"
    assert duration_text(2 * 86400 + 7200) == "2d 2h"
    assert duration_text(-5) == "0m"


@pytest.mark.asyncio
async def test_answers_follow_changes(client: TestClient[Any, Any]) -> None:
    """Answers are cached per query; a change of a service shows in every list it is in."""
    assert len(await services(client, "?not_online=1")) == 4
    assert len(await services(client, f"?site={DISDUKCAPIL}")) == 4
    sirimau = await services(client, f"?site={SIRIMAU}")
    board = client.app[BOARD]
    feed(board, ektp_restored())
    assert len(await services(client, "?not_online=1")) == 3
    listed = await services(client, f"?site={DISDUKCAPIL}")
    assert next(s for s in listed if s["service"] == "ektp")["state"] == "online"
    assert await services(client, f"?site={SIRIMAU}") == sirimau
    assert [s["state"] for s in await services(client, "?state=online")] == ["online"] * 2


@pytest.mark.asyncio
async def test_events_follow_the_filter_and_a_slow_client_is_let_go(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    board = client.app[BOARD]
    async with client.get(f"/events?site={DISDUKCAPIL}&not_online=1") as events:
        assert events.status == 200
        assert events.headers["Content-Type"] == "text/event-stream"
        first = await events.content.readuntil(b"\n\n")
        assert first.startswith(b"retry: ")
        await events.content.readuntil(b"\n\n")  # the clock
        feed(board, ektp_restored())
        messages = [await events.content.readuntil(b"\n\n") for _ in range(2)]
        bodies = [orjson.loads(m.split(b"data: ", 1)[1]) for m in messages]
        # restored (still not online), then online: it leaves the filter.
        assert [(b["match"], b["service"]["state"]) for b in bodies] == [
            (True, "restored"),
            (False, "online"),
        ]
    monkeypatch.setattr("streams.board.web.MAX_PENDING", 1)
    async with client.get("/events") as events:
        await events.content.readuntil(b"\n\n")
        feed(board, ambon_manual())  # more than one message pending: the client is let go
        rest = await events.content.read()
        assert rest.count(b"event: service") <= 2
