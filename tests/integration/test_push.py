"""Live pushes end to end: real broker, real worker processes, real WebSocket and SSE clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from conftest import Cluster, Worker, report
from oracle import Oracle

from likestream.client import LikeClient, new_event

pytestmark = pytest.mark.integration

CLIENTS = 500
LIMIT = 180.0  # seconds; generous for a shared two-core machine


@pytest.fixture(scope="module")
async def worker(cluster: Cluster) -> AsyncIterator[Worker]:
    """The module's worker; its clients all come from 127.0.0.1, more of them than the
    per-address cap allows by default."""
    instance = cluster.worker("w1", push_max_connections_per_address="0")
    async with instance.running():
        yield instance


class Watcher:
    """One WebSocket client that remembers the last count pushed per item."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.counts: dict[str, int] = {}
        self.frames = 0
        self.changed = asyncio.Event()

    async def run(self) -> None:
        async for msg in self.ws:
            body = orjson.loads(msg.data)
            assert body["type"] == "likes", body
            self.counts[body["item_id"]] = body["likes"]
            self.frames += 1
            self.changed.set()

    async def wait_for(self, expected: dict[str, int]) -> None:
        while any(self.counts.get(i) != n for i, n in expected.items()):
            self.changed.clear()
            await self.changed.wait()


async def watch(
    http: aiohttp.ClientSession, worker: Worker, items: list[str], initial: dict[str, int]
) -> tuple[Watcher, asyncio.Task[None]]:
    ws = await http.ws_connect(f"{worker.url}/ws")
    await ws.send_json({"op": "subscribe", "items": items})
    watcher = Watcher(ws)
    task = asyncio.create_task(watcher.run())
    await asyncio.wait_for(watcher.wait_for(initial), LIMIT)
    return watcher, task


async def test_500_clients_all_end_on_the_final_count(
    cluster: Cluster, worker: Worker, request: pytest.FixtureRequest
) -> None:
    items = ["fan:hot", "fan:cold"]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        began = time.monotonic()
        sem = asyncio.Semaphore(50)

        async def one() -> tuple[Watcher, asyncio.Task[None]]:
            async with sem:
                return await watch(http, worker, items, {"fan:hot": 0, "fan:cold": 0})

        watchers = await asyncio.gather(*(one() for _ in range(CLIENTS)))
        connected = time.monotonic() - began

        # 400 users like fan:hot and every fourth takes it back; 7 like fan:cold.
        events = [new_event(f"u{n}", "fan:hot", "like") for n in range(400)]
        events += [new_event(f"u{n}", "fan:hot", "unlike") for n in range(0, 400, 4)]
        events += [new_event(f"u{n}", "fan:cold", "like") for n in range(7)]
        final = {"fan:hot": 300, "fan:cold": 7}
        async with LikeClient(cluster.kafka, cluster.topic) as client:
            await client.send_many(events)
        acked = time.monotonic()
        table = asyncio.create_task(table_final(http, worker, "fan:hot", final["fan:hot"]))
        await asyncio.wait_for(asyncio.gather(*(w.wait_for(final) for w, _ in watchers)), LIMIT)
        all_final = time.monotonic() - acked
        in_table = await asyncio.wait_for(table, LIMIT) - acked
        frames = [w.frames for w, _ in watchers]
        for w, task in watchers:
            await w.ws.close()
            await task
    report(
        request.config,
        f"push fan-out: {CLIENTS} WebSocket clients on one worker connected and seeded in "
        f"{connected:.1f}s; {len(events)} events -> all {CLIENTS} on the final counts "
        f"{all_final:.2f}s after the last acknowledgement (table state had it after "
        f"{in_table:.2f}s); frames per client "
        f"min {min(frames)} max {max(frames)} (coalesced from {len(events)} changes)",
    )


async def table_final(
    http: aiohttp.ClientSession, worker: Worker, item: str, expected: int
) -> float:
    """When the worker's table state first answers ``expected`` (a measurement)."""
    while True:
        async with http.get(f"{worker.url}/items/{item}/likes") as resp:
            if resp.status == 200 and (await resp.json())["likes"] == expected:
                return time.monotonic()
        await asyncio.sleep(0.05)


async def test_sse_sends_the_count_then_changes(
    cluster: Cluster, worker: Worker, http: aiohttp.ClientSession
) -> None:
    item = "sse:1"
    async with LikeClient(cluster.kafka, cluster.topic) as client:
        await client.like("ann", item)
        await cluster.wait_caught_up()
        async with http.get(f"{worker.url}/items/{item}/events") as resp:
            assert resp.status == 200
            first = await next_event(resp)
            assert orjson.loads(first["data"]) == {"item_id": item, "likes": 1}
            await client.like("bob", item)
            second = await next_event(resp)
            assert orjson.loads(second["data"]) == {"item_id": item, "likes": 2}
            assert int(second["id"]) > int(first["id"])  # ids are source offsets
        # Reconnecting with the last id: no repeat of the count already seen.
        headers = {"Last-Event-ID": second["id"]}
        async with http.get(f"{worker.url}/items/{item}/events", headers=headers) as resp:
            await client.unlike("ann", item)
            third = await next_event(resp)
            assert orjson.loads(third["data"]) == {"item_id": item, "likes": 1}


async def next_event(resp: aiohttp.ClientResponse) -> dict[str, str]:
    fields: dict[str, str] = {}
    async with asyncio.timeout(LIMIT):
        while True:
            line = (await resp.content.readline()).decode().rstrip("\n")
            if not line and "data" in fields:
                return fields
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value


async def test_pushes_reach_every_process(
    cluster: Cluster, worker: Worker, http: aiohttp.ClientSession
) -> None:
    """Two workers split the partitions; a client on either sees every item change."""
    second = cluster.worker("w2")
    second.start()
    try:
        await second.wait_ready()
        await worker.wait_ready()
        items = [f"spread:{n}" for n in range(8)]  # over the 4 partitions, so both own some
        watchers = [await watch(http, w, items, {}) for w in (worker, second) for _ in range(3)]
        oracle = Oracle()
        events = [new_event(f"u{u}", item, "like") for item in items for u in range(3)]
        events.append(new_event("u0", "spread:0", "unlike"))
        for event in events:
            oracle.apply(event)
        async with LikeClient(cluster.kafka, cluster.topic) as client:
            await client.send_many(events)
        final = oracle.counts()
        await asyncio.wait_for(asyncio.gather(*(w.wait_for(final) for w, _ in watchers)), LIMIT)
        for w, task in watchers:
            await w.ws.close()
            await task
        # Nothing changes any more: a client subscribing now, even to a process started
        # after the changes, gets every current count, also of items another owns.
        second.stop()
        second.start()
        await second.wait_ready()
        await worker.wait_ready()
        late = [await watch(http, w, items, {}) for w in (worker, second)]
        await asyncio.wait_for(asyncio.gather(*(w.wait_for(final) for w, _ in late)), LIMIT)
        for w, task in late:
            await w.ws.close()
            await task
    finally:
        second.stop()
