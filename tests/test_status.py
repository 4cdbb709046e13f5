"""``failover status`` without a broker: the table's layout, inert text, and the status
board client (``--board``) against a small aiohttp server serving the board's API shape."""

from __future__ import annotations

import asyncio
import io
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from rich.console import Console
from typer.testing import CliRunner

from streams.cli import app
from streams.status import inert, matching, table
from workflows.records import STATE, Emitted
from workflows.replay import read_lines, replay
from workflows.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
DEMO_TOPOLOGY = ROOT / "streams" / "demo" / "ambon.yaml"
DEMO_EVENTS = ROOT / "streams" / "demo" / "ambon-events.jsonl"
NOW = datetime(2019, 2, 6, 6, 0, tzinfo=UTC)


def demo_states(*, last_only: bool = True) -> list[dict[str, Any]]:
    """The data of the demo's state records (``replay --state``): the last per service, or
    every one."""
    topology = Topology.load(DEMO_TOPOLOGY)
    records = [
        r.event["data"]
        for r in replay(topology, read_lines(DEMO_EVENTS), "demo", state=True)
        if isinstance(r, Emitted) and r.topic == STATE
    ]
    if not last_only:
        return records
    return list({d["service"]: d for d in records}.values())


def _during_the_outage() -> list[dict[str, Any]]:
    """Every service as it was at its most eventful: its records with an incident open."""
    latest: dict[str, dict[str, Any]] = {}
    for data in demo_states(last_only=False):
        if data["incident"] is not None or data["service"] not in latest:
            latest[data["service"]] = data
    return list(latest.values())


def render(services: list[dict[str, Any]], width: int) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, color_system=None)
    console.print(table(services, NOW))
    return out.getvalue()


def test_a_terminal_of_80_columns_gets_every_character_folded_never_cut() -> None:
    services = matching(_during_the_outage(), None, None)
    text = render(services, 80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text
    # Folded cells interleave on the lines, but no character of any value is missing.
    shown = Counter("".join(text.split()))
    wanted: Counter[str] = Counter()
    for s in services:
        for key in ("site", "service", "state", "incident", "last_reason"):
            wanted.update("".join(str(s[key] or "-").split()))
    assert wanted - shown == Counter()


def test_inert_shows_controls_and_markup_as_text() -> None:
    assert inert("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"
    assert inert("a\u202eb") == "a\\u202eb"
    assert inert(None) == "-"
    evil = dict(demo_states()[0], last_reason="[bold]x[/bold] \x1b]0;title\x07", site="s\n1")
    text = render([evil], 200)
    assert "\x1b]0;" not in text
    assert "\x07" not in text
    assert "[bold]x[/bold]" in text  # shown as typed, not taken as markup
    assert "s\\n1" in text


def test_matching_filters_and_sorts() -> None:
    services = demo_states()
    chosen = matching(services, "disdukcapil-ambon", "online")
    assert [s["service"] for s in chosen] == sorted(
        s["service"] for s in services if s["site"] == "disdukcapil-ambon"
    )
    assert matching(services, "kecamatan-sirimau", "manual") == []


# --------------------------------------------------------------------------- the board


class Board:
    """A stand-in for the status board's API, on a thread of its own (the command runs its
    own event loop): ``GET /api/services?site=&state=``."""

    def __init__(self, services: list[dict[str, Any]], status: int = 200, body: bytes = b""):
        self.services = services
        self.status = status
        self.body = body
        self.asked: list[dict[str, str]] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _services(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.asked.append(query)
        if self.status != 200 or self.body:
            return web.Response(status=self.status, body=self.body)
        chosen = [
            s
            for s in self.services
            if query.get("site", s["site"]) == s["site"]
            and query.get("state", s["state"]) == s["state"]
        ]
        answer = {"services": chosen, "heard_from_kafka": "2019-02-06T06:00:00Z"}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        application = web.Application()
        application.router.add_get("/api/services", self._services)
        self._runner = web.AppRunner(application)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def __enter__(self) -> Board:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def board() -> Iterator[Board]:
    with Board(demo_states()) as running:
        yield running


def status(*args: str) -> Any:
    # No broker and no topology: --board must not need either.
    env = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "FAILOVER_TOPOLOGY": ""}
    return CliRunner().invoke(app, ["status", *args], env=env)


def test_board_json_is_the_services_it_serves(board: Board) -> None:
    result = status("--board", board.url, "--json")
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout) == matching(demo_states(), None, None)
    assert board.asked == [{}]


def test_board_filters_are_passed_on(board: Board) -> None:
    result = status("--board", board.url + "/", "--site", "kecamatan-sirimau", "--state",
                    "online", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [s["service"] for s in orjson.loads(result.stdout)] == ["rekam-ktp-kecamatan"]
    assert board.asked == [{"site": "kecamatan-sirimau", "state": "online"}]


def test_board_table_has_a_line_per_service(board: Board) -> None:
    result = status("--board", board.url)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["SITE", "SERVICE", "STATE"]
    assert len(lines) == 1 + len(demo_states())  # piped: one whole line each
    assert any("every manual record of the incident is reconciled" in line for line in lines)


def test_board_unknown_site_is_an_error(board: Board) -> None:
    result = status("--board", board.url, "--site", "atlantis")
    assert result.exit_code == 2
    assert "unknown site 'atlantis'" in result.stderr
    assert "disdukcapil-ambon" in result.stderr


@pytest.mark.parametrize(
    ("status_code", "body", "message"),
    [
        (500, b"boom", "HTTP 500: boom"),
        (200, b"<html>", "the answer is not JSON"),
        (200, b'{"services": "all"}', "the answer has no list of services"),
    ],
)
def test_a_board_that_answers_wrongly_is_an_error(
    status_code: int, body: bytes, message: str
) -> None:
    with Board([], status_code, body) as bad:
        result = status("--board", bad.url)
    assert result.exit_code == 2
    assert message in result.stderr


def test_no_board_is_an_error() -> None:
    result = status("--board", "http://127.0.0.1:1", "--timeout", "5")
    assert result.exit_code == 2
    assert "cannot reach the status board at http://127.0.0.1:1/api/services" in result.stderr


def test_the_board_url_password_is_never_shown() -> None:
    result = status("--board", "http://oncall:hunter2@127.0.0.1:1", "--timeout", "5")
    assert result.exit_code == 2
    assert "hunter2" not in result.output
    assert "http://127.0.0.1:1/api/services" in result.stderr


def test_no_broker_is_an_error() -> None:
    result = status("--timeout", "5")
    assert result.exit_code == 2
    assert "cannot reach the Kafka broker at 127.0.0.1:1" in result.stderr
