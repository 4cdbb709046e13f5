"""The board's HTTP side (aiohttp): the status page, incident pages, the JSON API, server-sent
events, Prometheus metrics and the health checks.

Every value that comes from a record reaches the page through jinja2 with autoescaping, or
through the page's script as text (``textContent``), never as markup. Every response carries a
strict Content-Security-Policy: the page's own script and style only, no inline code, no
other origin.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

import jinja2
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.board.i18n import LANGUAGES, STATE_ICONS, STRINGS
from streams.board.metrics import BoardCollector, registry
from streams.board.model import (
    STATES,
    Board,
    Query,
    QueryError,
    ServiceRow,
    duration_text,
    local_text,
    since_text,
)
from streams.board.reader import Lag

__all__ = ["BOARD", "CSP", "MAX_ROWS", "BoardWeb", "make_app"]

#: Rows the HTML page shows at most (the API has no such limit); a site filter shows fewer.
MAX_ROWS: Final = 2000
#: Server-sent messages waiting for a slow client before it is disconnected (it reconnects
#: and reloads the list).
MAX_PENDING: Final = 10_000

#: The application's read model (tests feed it directly).
BOARD: Final = web.AppKey("board", Board)

#: Queries whose /api/services answer is kept (the oldest dropped first).
MAX_CACHED: Final = 256

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _rfc3339(when: datetime | None) -> str | None:
    if when is None:
        return None
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _package_dir(name: str) -> Path:
    return Path(str(resources.files("streams.board").joinpath(name)))


class _Subscriber:
    __slots__ = ("closed", "query", "queue")

    def __init__(self, query: Query) -> None:
        self.query = query
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(MAX_PENDING)
        self.closed = False

    def send(self, message: bytes | None) -> None:
        if self.closed:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            # Too slow a client: it is disconnected once it has read what is queued, and
            # its EventSource reconnects and reloads the list.
            self.closed = True


class BoardWeb:
    """The HTTP handlers over a :class:`Board`; ``ready`` and ``lag`` come from the reader."""

    def __init__(
        self,
        board: Board,
        ready: Callable[[], bool],
        lag: Callable[[], Lag | None],
        *,
        site_names: dict[str, str] | None = None,
        clock_interval: float = 1.0,
    ) -> None:
        self.board = board
        self.ready = ready
        self.lag = lag
        self.site_names = dict(site_names or {})
        self.clock_interval = clock_interval
        self.subscribers: set[_Subscriber] = set()
        #: The last answer of /api/services per query, kept while no service changes.
        self._answers: dict[Query, tuple[tuple[tuple[str, int], str | None], bytes]] = {}
        self.registry = registry(BoardCollector(board, lag, ready))
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_package_dir("templates")),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        board.listen(self._changed)

    # --- server-sent events

    def _changed(self, row: ServiceRow | None, service: str) -> None:
        if not self.subscribers:
            return
        for subscriber in list(self.subscribers):
            match = row is not None and subscriber.query.matches(row)
            if row is not None and subscriber.query.site not in (None, row.site) and not match:
                continue
            data = row.data if row is not None else orjson.dumps({"service": service})
            subscriber.send(
                b'event: service\ndata: {"match":'
                + (b"true" if match else b"false")
                + b',"service":'
                + data
                + b"}\n\n"
            )

    def _clock_message(self) -> bytes:
        newest = self.board.newest_event_ts()
        body = {
            "now_ms": int(newest * 1000) if newest is not None else None,
            "heard_from_kafka": _rfc3339(self.board.heard_from_kafka),
            "ready": self.ready(),
        }
        return b"event: clock\ndata: " + orjson.dumps(body) + b"\n\n"

    async def _clock(self) -> None:
        last = b""
        while True:
            await asyncio.sleep(self.clock_interval)
            message = self._clock_message()
            if message != last:
                for subscriber in list(self.subscribers):
                    subscriber.send(message)
                last = message

    async def events(self, request: web.Request) -> web.StreamResponse:
        query = self._api_query(request)
        response = web.StreamResponse(
            headers={
                **_HEADERS,
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        subscriber = _Subscriber(query)
        self.subscribers.add(subscriber)
        try:
            await response.write(b"retry: 2000\n\n" + self._clock_message())
            while True:
                try:
                    message = await asyncio.wait_for(subscriber.queue.get(), 15.0)
                except TimeoutError:
                    message = b": keep-alive\n\n"
                if message is None:
                    break
                await response.write(message)
                if subscriber.closed and subscriber.queue.empty():
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.subscribers.discard(subscriber)
        return response

    async def on_shutdown(self, app: web.Application) -> None:
        for subscriber in list(self.subscribers):
            subscriber.send(None)

    # --- JSON API

    def _api_query(self, request: web.Request) -> Query:
        try:
            query, _ = Query.parse(request.rel_url.query.items())
        except QueryError as exc:
            raise _json_error(400, str(exc)) from None
        return query

    async def api_services(self, request: web.Request) -> web.Response:
        query = self._api_query(request)
        heard = _rfc3339(self.board.heard_from_kafka)
        key = (self.board.version_of(query), heard)
        cached = self._answers.get(query)
        if cached is None or cached[0] != key:
            rows = self.board.select(query)
            body = (
                b'{"services":['
                + b",".join(row.data for row in rows)
                + b'],"heard_from_kafka":'
                + orjson.dumps(heard)
                + b"}"
            )
            self._answers.pop(query, None)
            while len(self._answers) >= MAX_CACHED:
                del self._answers[next(iter(self._answers))]
            self._answers[query] = cached = (key, body)
        return web.Response(body=cached[1], content_type="application/json", headers=_HEADERS)

    async def api_service(self, request: web.Request) -> web.Response:
        row = self.board.services.get(request.match_info["id"])
        if row is None:
            raise _json_error(404, "no such service")
        return web.Response(body=row.data, content_type="application/json", headers=_HEADERS)

    async def api_incident(self, request: web.Request) -> web.Response:
        return _json(self._incident(request.match_info["id"]))

    def _incident(self, incident_id: str) -> dict[str, Any]:
        incident = self.board.incidents.get(incident_id)
        if incident is None:
            raise _json_error(404, "no such incident")
        zone = self.board.zone(incident.site)
        return {
            "incident": incident.id,
            "service": incident.service,
            "site": incident.site,
            "open": not incident.closed,
            "start": _rfc3339(incident.start),
            "start_local": local_text(incident.start, zone),
            # Ordered by event time, not by arrival: the topics' partitions interleave
            # differently on every read, and a restarted board must show the same page.
            "events": [
                entry.as_json(zone)
                for entry in sorted(
                    incident.events,
                    key=lambda e: (e.time, e.kind != "transition", e.summary, e.reason or ""),
                )
            ],
            "events_dropped": incident.dropped,
            "notices": [
                notice.as_json(zone)
                for notice in sorted(
                    incident.notices, key=lambda n: (n.time, n.audience, n.template, n.text_en)
                )
            ],
        }

    # --- pages

    def _page_query(self, request: web.Request) -> tuple[Query, str]:
        try:
            query, rest = Query.parse(request.rel_url.query.items(), extra=("lang",))
        except QueryError as exc:
            raise web.HTTPBadRequest(text=f"bad query: {exc}", headers=_HEADERS) from None
        lang = rest.get("lang") or "en"
        if lang not in LANGUAGES:
            raise web.HTTPBadRequest(
                text=f"bad query: lang is not one of {', '.join(LANGUAGES)}", headers=_HEADERS
            )
        return query, lang

    def _row(self, row: ServiceRow, lang: str, now: float | None) -> dict[str, Any]:
        fields = row.fields()
        manual = fields.get("manual")
        return {
            "service": row.service,
            "site": row.site,
            "state": row.state,
            "state_text": STRINGS[lang][f"state.{row.state}"],
            "icon": STATE_ICONS[row.state],
            "since": row.since or "",
            "since_text": since_text(row.since),
            "duration": (
                duration_text(now - row.since_ts)
                if now is not None and row.since_ts is not None
                else ""
            ),
            "incident": row.incident,
            "incident_href": _incident_href(row.incident, lang) if row.incident else None,
            "held": row.held,
            "paper_open": row.open if isinstance(manual, dict) else None,
            "last_reason": fields.get("last_reason") or "",
            "waiting": _waiting(fields.get("pending_release"), lang),
        }

    async def page(self, request: web.Request) -> web.Response:
        query, lang = self._page_query(request)
        rows = self.board.select(query)
        now = self.board.newest_event_ts()
        shown = rows[:MAX_ROWS]
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in shown:
            groups.setdefault(row.site, []).append(self._row(row, lang, now))
        api_query = urlencode(
            {
                k: v
                for k, v in (("site", query.site), ("not_online", "1" if query.not_online else ""))
                if v
            }
            | ({"state": query.state} if query.state else {})
        )
        words = STRINGS[lang]
        config = {
            "lang": lang,
            "query": api_query,
            "now_ms": int(now * 1000) if now is not None else None,
            "limit": MAX_ROWS,
            "icons": STATE_ICONS,
            "words": {k: v for k, v in words.items() if not k.endswith("title")},
        }
        html = self.templates.get_template("board.html").render(
            lang=lang,
            w=words,
            groups=groups,
            sites=self.board.sites(),
            site_names=self.site_names,
            query=query,
            more=len(rows) > len(shown),
            heard=_rfc3339(self.board.heard_from_kafka),
            config=config,
            switch={other: _with_lang(request, other) for other in LANGUAGES},
            states=STATES,
        )
        return web.Response(text=html, content_type="text/html", headers=_HEADERS)

    async def incident_page(self, request: web.Request) -> web.Response:
        _, lang = self._page_query(request)
        incident_id = request.match_info["id"]
        if incident_id not in self.board.incidents:
            raise web.HTTPNotFound(text="no such incident", headers=_HEADERS)
        incident = self._incident(incident_id)
        html = self.templates.get_template("incident.html").render(
            lang=lang,
            w=STRINGS[lang],
            incident=incident,
            back=f"/?{urlencode({'lang': lang})}",
            switch={other: _with_lang(request, other) for other in LANGUAGES},
        )
        return web.Response(text=html, content_type="text/html", headers=_HEADERS)

    # --- operations

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={**_HEADERS, "Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "up"})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.ready():
            return _json({"ready": True})
        return _json({"ready": False, "reason": "catching up with the state topic"}, status=503)


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=_HEADERS
    )


def _json_error(status: int, message: str) -> web.HTTPException:
    kind = web.HTTPBadRequest if status == 400 else web.HTTPNotFound
    return kind(
        text=orjson.dumps({"error": message}).decode(),
        content_type="application/json",
        headers=_HEADERS,
    )


def _waiting(pending: Any, lang: str) -> str:
    """A release that waits for a second operator (the record's ``pending_release``), in
    words; empty when there is none."""
    if not isinstance(pending, dict):
        return ""
    actor, expires = pending.get("actor"), pending.get("expires")
    if not isinstance(actor, str) or not isinstance(expires, str):
        return ""
    return STRINGS[lang]["release_waiting"].format(actor=actor, time=since_text(expires))


def _incident_href(incident: str, lang: str) -> str:
    return f"/incident/{quote(incident, safe='')}?{urlencode({'lang': lang})}"


def _with_lang(request: web.Request, lang: str) -> str:
    params = [(k, v) for k, v in request.rel_url.query.items() if k != "lang"]
    return f"{request.rel_url.path}?{urlencode([*params, ('lang', lang)])}"


@web.middleware
async def _headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The security headers on every answer, aiohttp's own (static files, a 404 of an unknown
    path) included."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        for name, value in _HEADERS.items():
            exc.headers.setdefault(name, value)
        raise
    if not response.prepared:
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
    return response


def make_app(web_: BoardWeb) -> web.Application:
    app = web.Application(middlewares=[_headers])
    app[BOARD] = web_.board
    app.router.add_get("/", web_.page)
    app.router.add_get("/incident/{id:.+}", web_.incident_page)
    app.router.add_get("/events", web_.events)
    app.router.add_get("/api/services", web_.api_services)
    app.router.add_get("/api/services/{id:.+}", web_.api_service)
    app.router.add_get("/api/incidents/{id:.+}", web_.api_incident)
    app.router.add_get("/metrics", web_.metrics)
    app.router.add_get("/healthz", web_.healthz)
    app.router.add_get("/readyz", web_.readyz)
    app.router.add_static("/static/", _package_dir("static"))
    app.on_shutdown.append(web_.on_shutdown)

    async def clock(app: web.Application) -> Any:
        task = asyncio.create_task(web_._clock())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(clock)
    return app
