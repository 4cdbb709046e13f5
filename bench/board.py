"""Benchmark of ``failover board`` on a real broker: 100,000 services in the compacted topic.

Not a test: a script that prints one table from one run::

    .venv/bin/python bench/board.py [--services 100000] [--sites 1000] [--bootstrap HOST:PORT]

1. Writes ``--services`` state records (``--sites`` sites, 1% of services not online) to a
   new compacted topic, in transactions as the engine does.
2. Starts ``failover board`` in a subprocess and times it from start to ``/readyz`` 200
   (catch-up), and reads its resident memory then.
3. Memory per service of the read model alone: ``tracemalloc`` over the same records applied
   to a :class:`~streams.board.model.Board` in this process.
4. 50 concurrent clients (aiohttp) against the API: a site's services and the not-online
   filter, p50/p99 per request.
5. The site load again while ``--changes`` state changes a second arrive.
6. From a record's transaction committed to its server-sent event received, p50/p99.

Targets: catch-up <= 10 s, <= 1 KB per service, API p99 <= 50 ms, SSE p99 <= 1 s. Every topic
it creates is deleted and the board stopped at the end, also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time
import tracemalloc
import uuid
from pathlib import Path

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.state import state_event  # noqa: E402
from streams.board.model import Board  # noqa: E402


def records(services: int, sites: int) -> list[tuple[bytes, bytes]]:
    out = []
    for n in range(services):
        site = f"site-{n % sites:04d}"
        service = f"svc-{n:06d}"
        not_online = n % 100 == 7
        event = state_event(
            service, site, "manual" if not_online else "online", "2026-02-05T08:15:30+09:00",
            time="2026-02-05T08:15:30+09:00",
            incident=f"{service}@20260204T231530Z" if not_online else None,
            held=not_online, open_records=3 if not_online else 0,
            last_reason="down-sustained" if not_online else None,
        )  # fmt: skip
        event["id"] = f"{service}/1"
        out.append((service.encode(), orjson.dumps(event)))
    return out


async def produce(bootstrap: str, topic: str, batch: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=f"bench-board-{uuid.uuid4().hex}",
        linger_ms=20,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    try:
        for start in range(0, len(batch), 20_000):
            async with producer.transaction():
                futures = [
                    await producer.send(topic, value, key=key)
                    for key, value in batch[start : start + 20_000]
                ]
                await asyncio.gather(*futures)
    finally:
        await producer.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def api_load(
    url: str, paths: list[str], clients: int, per_client: int
) -> tuple[list[float], int]:
    latencies: list[float] = []
    sizes = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as http:

        async def client(n: int) -> None:
            nonlocal sizes
            for i in range(per_client):
                path = paths[(n + i) % len(paths)]
                start = time.perf_counter()
                async with http.get(url + path) as response:
                    body = await response.read()
                    assert response.status == 200, body[:200]
                latencies.append(time.perf_counter() - start)
                sizes += len(body)

        await asyncio.gather(*(client(n) for n in range(clients)))
    return latencies, sizes


async def changes(bootstrap: str, topic: str, args: argparse.Namespace, stop: asyncio.Event) -> int:
    """``args.changes`` state changes a second, to services all over the sites, until
    ``stop``; how many were written."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"bench-board-changes-{uuid.uuid4().hex}"
    )
    await producer.start()
    written = 0
    try:
        while not stop.is_set():
            async with producer.transaction():
                for _ in range(max(1, args.changes // 10)):
                    n = (written * 7919) % args.services
                    event = state_event(
                        f"svc-{n:06d}", f"site-{n % args.sites:04d}", "degraded",
                        "2026-02-05T09:00:00+09:00", last_reason=f"change-{written}",
                    )  # fmt: skip
                    await producer.send(topic, orjson.dumps(event), key=f"svc-{n:06d}".encode())
                    written += 1
            await asyncio.sleep(0.1)
    finally:
        await producer.stop()
    return written


async def sse_latency(url: str, bootstrap: str, topic: str, count: int) -> list[float]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"bench-board-sse-{uuid.uuid4().hex}"
    )
    await producer.start()
    latencies: list[float] = []
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(url + "/events?site=site-0003", timeout=aiohttp.ClientTimeout(None)) as resp,
        ):
            assert resp.status == 200
            await resp.content.readuntil(b"\n\n")  # retry + first clock
            for n in range(count):
                service = "svc-000003"
                reason = f"bench-{n}"
                event = state_event(
                    service, "site-0003", "degraded", "2026-02-05T08:15:30+09:00",
                    last_reason=reason,
                )  # fmt: skip
                async with producer.transaction():
                    await producer.send(topic, orjson.dumps(event), key=service.encode())
                committed = time.perf_counter()
                while True:
                    message = await resp.content.readuntil(b"\n\n")
                    if reason.encode() in message:
                        latencies.append(time.perf_counter() - committed)
                        break
                await asyncio.sleep(0.05)
    finally:
        await producer.stop()
    return latencies


async def main(args: argparse.Namespace) -> None:
    bootstrap = args.bootstrap
    topic = f"bench-board-state-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    board_process: subprocess.Popen[bytes] | None = None
    rows: list[tuple[str, str, str, str]] = []
    try:
        await admin.create_topics(
            [NewTopic(topic, 6, 1, topic_configs={"cleanup.policy": "compact"})]
        )
        batch = records(args.services, args.sites)
        start = time.perf_counter()
        await produce(bootstrap, topic, batch)
        produced = time.perf_counter() - start
        size = sum(len(v) for _, v in batch) / len(batch)
        print(f"wrote {len(batch)} records of {size:.0f} bytes in {produced:.1f} s", flush=True)

        # Memory of the read model alone.
        tracemalloc.start()
        board = Board()
        before = tracemalloc.get_traced_memory()[0]
        for key, value in batch:
            board.apply(topic, "state", key, value)
        per_service = (tracemalloc.get_traced_memory()[0] - before) / len(batch)
        tracemalloc.stop()
        del board

        port = free_port()
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "FAILOVER_TOPIC_STATE": topic,
            "FAILOVER_TOPIC_TRANSITIONS": f"{topic}-t",
            "FAILOVER_TOPIC_COMMANDS": f"{topic}-c",
            "FAILOVER_APP_ID": f"{topic}-engine",
            "FAILOVER_LOG_LEVEL": "warning",
        }
        env.pop("FAILOVER_TOPOLOGY", None)
        url = f"http://127.0.0.1:{port}"
        start = time.perf_counter()
        board_process = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "failover"), "board", "--port", str(port)], env=env
        )
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(url + "/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                if board_process.poll() is not None:
                    raise SystemExit(f"failover board exited with {board_process.returncode}")
                if time.perf_counter() - start > 120:
                    raise SystemExit("the board did not catch up in 120 s")
                await asyncio.sleep(0.05)
        catch_up = time.perf_counter() - start
        rss = rss_kb(board_process.pid)
        rows.append(("catch-up to /readyz (process start)", f"{catch_up:.2f} s", "<= 10 s",
                     "ok" if catch_up <= 10 else "MISSED"))  # fmt: skip
        rows.append(("read model per service (tracemalloc)", f"{per_service:.0f} B", "<= 1 KB",
                     "ok" if per_service <= 1024 else "MISSED"))  # fmt: skip
        rows.append(("board RSS after catch-up / service", f"{rss * 1024 / args.services:.0f} B",
                     "(whole process)", f"{rss / 1024:.0f} MiB"))  # fmt: skip

        sites = [f"/api/services?site=site-{n:04d}" for n in range(0, args.sites, 7)]
        for name, paths in (("site", sites), ("not-online", ["/api/services?not_online=1"])):
            await api_load(url, paths, args.clients, 5)  # warm-up
            latencies, size = await api_load(url, paths, args.clients, args.requests)
            p50, p99 = pct(latencies, 0.5) * 1000, pct(latencies, 0.99) * 1000
            verdict = "ok" if p99 <= 50 else "MISSED"
            rows.append((f"API {name} p50 / p99 ({args.clients} clients)",
                         f"{p50:.1f} / {p99:.1f} ms", "p99 <= 50 ms",
                         f"{verdict}, {size / len(latencies) / 1024:.0f} KiB/answer"))  # fmt: skip

        # The same site load while the engine changes services: answers are cached per
        # query only until one of its services changes.
        stop = asyncio.Event()
        changer = asyncio.create_task(changes(bootstrap, topic, args, stop))
        try:
            latencies, size = await api_load(url, sites, args.clients, args.requests)
        finally:
            stop.set()
            written = await changer
        p50, p99 = pct(latencies, 0.5) * 1000, pct(latencies, 0.99) * 1000
        rows.append((f"API site p50 / p99, {written} changes meanwhile",
                     f"{p50:.1f} / {p99:.1f} ms", "p99 <= 50 ms",
                     "ok" if p99 <= 50 else "MISSED"))  # fmt: skip

        sse = await sse_latency(url, bootstrap, topic, args.sse)
        p50, p99 = pct(sse, 0.5) * 1000, pct(sse, 0.99) * 1000
        rows.append(("commit -> SSE p50 / p99", f"{p50:.0f} / {p99:.0f} ms", "p99 <= 1 s",
                     "ok" if p99 <= 1000 else "MISSED"))  # fmt: skip
        rows.append(("  (SSE mean)", f"{statistics.fmean(sse) * 1000:.0f} ms", "", ""))
    finally:
        if board_process is not None:
            board_process.terminate()
            board_process.wait(30)
        await admin.delete_topics([topic])
        await admin.close()
    command = shlex.join([".venv/bin/python", "bench/board.py", *sys.argv[1:]])
    print(f"\n$ {command}")
    print(f"{args.services} services, {args.sites} sites, 1% not online; {os.cpu_count()} CPUs\n")
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    header = ("measure", "result", "target", "")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=100_000)
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="per client and filter")
    parser.add_argument("--changes", type=int, default=100, help="a second, during a load")
    parser.add_argument("--sse", type=int, default=50, help="records timed to their event")
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    asyncio.run(main(parser.parse_args()))
