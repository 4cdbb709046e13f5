"""A real board (reader and web server) on a free port, and records produced for it in one
transaction, as the engine writes them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaProducer

from streams.board.model import Board
from streams.board.reader import Reader, Topics
from streams.board.web import BoardWeb, make_app
from streams.security import KafkaSecurity
from tests.boardrecords import Record, encode
from tests.kafka.kafkatools import wait_for


def board_topics(unique_name: Any) -> Topics:
    return Topics(unique_name("state"), unique_name("transitions"), unique_name("commands"))


async def produce(
    bootstrap: str, topics: Topics, records: Iterable[Record], **options: Any
) -> None:
    """Write ``records`` in one committed transaction (ending each partition with a marker,
    as the engine's exactly-once output does)."""
    by_kind = {
        "state": topics.state,
        "transitions": topics.transitions,
        "commands": topics.commands,
    }
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=f"t-board-{uuid.uuid4().hex}",  # the secured broker's test prefix
        **options,
    )
    await producer.start()
    try:
        async with producer.transaction():
            for kind, key, event in records:
                await producer.send(by_kind[kind], encode(event), key=key.encode())
    finally:
        await producer.stop()


@dataclass
class RunningBoard:
    board: Board
    reader: Reader
    url: str
    http: aiohttp.ClientSession

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.http.get(self.url + path) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def wait_ready(self) -> None:
        async def ready() -> bool:
            return (await self.get("/readyz"))[0] == 200

        await wait_for(ready, 60, "the board to catch up")

    async def wait_service(self, service: str, state: str) -> None:
        async def shown() -> bool:
            status, body = await self.get(f"/api/services/{service}")
            return status == 200 and body["state"] == state

        await wait_for(shown, 30, f"{service} {state} on the board")


@asynccontextmanager
async def running_board(
    bootstrap: str,
    topics: Topics,
    engine_group: str = "failover-engine",
    security: KafkaSecurity | None = None,
) -> AsyncIterator[RunningBoard]:
    board = Board()
    reader = Reader(board, bootstrap, topics, engine_group, check_interval=0.5, security=security)
    handlers = BoardWeb(board, reader.ready.is_set, lambda: reader.lag, clock_interval=0.2)
    runner = web.AppRunner(make_app(handlers))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    await reader.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield RunningBoard(board, reader, f"http://127.0.0.1:{port}", http)
    finally:
        await reader.stop()
        await runner.cleanup()
