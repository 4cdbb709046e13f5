"""(a) The consumer ceiling: aiokafka ``getmany`` + ``orjson.loads`` over the link-status
topic, in this process or in several (see bench/kafka.py)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import orjson
from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaConsumer,
    TopicPartition,
)

from bench.kafkabench.common import ROOT, Bench, Inputs
from streams.config import INPUT_MAX_MESSAGE_BYTES
from streams.security import KafkaSecurity


@contextlib.asynccontextmanager
async def ceiling_reader(
    bootstrap: str, topic: str, partitions: Iterable[int], options: Mapping[str, Any]
) -> AsyncIterator[tuple[AIOKafkaConsumer, int]]:
    """A plain consumer (``options``: aiokafka's connection arguments) assigned
    ``partitions`` of ``topic`` from the beginning, start offsets resolved (before any
    timing), and how many records they hold."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=INPUT_MAX_MESSAGE_BYTES + 64 * 1024,
        **options,
    )
    try:
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        starts = {tp: await consumer.position(tp) for tp in tps}
        ends = await consumer.end_offsets(tps)
        yield consumer, sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await consumer.stop()


async def read_ceiling(consumer: AIOKafkaConsumer, wanted: int) -> None:
    """The ceiling's work: ``getmany(max_records=10000)`` and ``orjson.loads`` of each record,
    until ``wanted`` records are read."""
    loads = orjson.loads
    count = 0
    while count < wanted:
        batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
        for records in batch.values():
            for record in records:
                loads(record.value)
            count += len(records)


async def ceiling(bench: Bench, data: Inputs) -> tuple[float, float]:
    """aiokafka getmany + orjson.loads of the whole link-status topic: (seconds, CPU s)."""
    s = data.settings
    async with ceiling_reader(
        bench.bootstrap, s.topic_link_status, range(s.partitions), bench.client_options()
    ) as (consumer, wanted):
        assert wanted == data.link_messages, (wanted, data.link_messages)
        wall, cpu = time.perf_counter(), time.process_time()
        await read_ceiling(consumer, wanted)
        return time.perf_counter() - wall, time.process_time() - cpu


async def ceiling_child(bootstrap: str, topic: str, partitions: list[int]) -> None:
    """One process of :func:`ceiling_processes`: read ``partitions`` of ``topic`` as
    :func:`ceiling` does, once told to go; print ``ready``, then ``done <CPU seconds>``.
    It connects as the security variables of its environment say (its bench's broker's)."""
    options = KafkaSecurity.from_env().client_options()
    async with ceiling_reader(bootstrap, topic, partitions, options) as (consumer, wanted):
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        cpu = time.process_time()
        await read_ceiling(consumer, wanted)
        print(f"done {time.process_time() - cpu}", flush=True)


async def ceiling_processes(bench: Bench, data: Inputs, processes: int) -> tuple[float, float]:
    """:func:`ceiling` in ``processes`` processes, partitions dealt round-robin, started
    together once all are assigned: (seconds until the last is done, CPU s of all)."""
    s = data.settings
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "bench" / "kafka.py"), "--ceiling-child", bench.bootstrap,
            s.topic_link_status,
            ",".join(str(p) for p in range(s.partitions) if p % processes == number),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=bench.process_env(),
        )
        for number in range(processes)
    ]  # fmt: skip
    try:
        for child in children:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), 60)
            if line.strip() != b"ready":
                raise RuntimeError(f"a ceiling process did not start: {line!r}")
        wall = time.perf_counter()
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            await child.stdin.drain()
        cpu = 0.0
        for child in children:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), 300)
            if not line.startswith(b"done "):
                raise RuntimeError(f"a ceiling process failed: {line!r}")
            cpu += float(line.split()[1])
        return time.perf_counter() - wall, cpu
    finally:
        for child in children:
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
            await child.wait()
