"""Helpers for tests against the real broker: how to connect to it, topics that clean up after
themselves, and waiting on conditions instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from harness.broker import client_options as client_options


@asynccontextmanager
async def topics(
    bootstrap: str, *names: str, partitions: int = 1, config: dict[str, str] | None = None
) -> AsyncIterator[None]:
    """Create topics for the duration of a block, and delete them afterwards."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options())
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, partitions, 1, topic_configs=config or {}) for n in names]
        )
        yield
    finally:
        try:
            await admin.delete_topics(list(names))
        finally:
            await admin.close()


async def wait_for(
    condition: Callable[[], Awaitable[bool]], timeout: float = 30.0, what: str = "condition"
) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
