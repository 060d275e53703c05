"""Trending end to end: two worker processes, four partitions, events with controlled
event times (late ones included); every worker's ``GET /trending`` and its trending
pushes end on the oracle's top items, which span partitions owned by both workers."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from conftest import Cluster, Worker, report
from oracle import TrendingOracle

from likestream.client import LikeClient
from likestream.domain._partition import partition_for
from likestream.domain._schema import LikeEvent
from likestream.domain._window_spec import parse_windows

pytestmark = pytest.mark.integration

WINDOWS_SETTING = "1m:10s,1h:5m"
WINDOWS = parse_windows(WINDOWS_SETTING)
LATENESS_MS = 5_000
T0 = 1_750_000_000_000  # fixed event times in the past: the clock plays no part
LIMIT = 180.0  # seconds; generous for a shared two-core machine


@pytest.fixture(scope="module")
async def workers(cluster: Cluster) -> AsyncIterator[list[Worker]]:
    started = []
    for name in ("w1", "w2"):
        worker = cluster.worker(name)
        worker.env["LIKESTREAM_TRENDING_WINDOWS"] = WINDOWS_SETTING
        worker.env["LIKESTREAM_TRENDING_LATENESS_MS"] = str(LATENESS_MS)
        worker.env["LIKESTREAM_TRENDING_INTERVAL_MS"] = "200"
        worker.start()
        started.append(worker)
    try:
        for worker in started:
            await worker.wait_ready()
        yield started
    finally:
        for worker in started:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.stop()


def timed_events(seed: int, count: int) -> list[tuple[LikeEvent, int]]:
    """Likes and unlikes over 40 items; event times advance over about 40 minutes with
    jitter, some events late within the lateness, some far too late for a window."""
    rng = random.Random(seed)
    out: list[tuple[LikeEvent, int]] = []
    now = T0
    for n in range(count):
        now += rng.choice([0, 100, 1_000, 5_000])
        roll = rng.random()
        if roll < 0.05:
            at = now - rng.randint(70_000, 2 * 3_600_000)  # too late for 1m, maybe for 1h
        elif roll < 0.2:
            at = now - rng.randint(0, LATENESS_MS)
        else:
            at = now
        item = f"tr:{min(int(rng.paretovariate(1.0)) - 1, 39)}"
        action = "like" if rng.random() < 0.75 else "unlike"
        user = f"u{rng.randrange(300)}"
        out.append((LikeEvent(user, item, action, f"t{n}", at), at))  # type: ignore[arg-type]
    return out


async def read_trending(
    http: aiohttp.ClientSession, worker: Worker, window: str, limit: int
) -> list[list[object]] | None:
    async with http.get(f"{worker.url}/trending", params={"window": window, "limit": limit}) as r:
        if r.status != 200:
            return None
        body = await r.json()
        return [[i["item_id"], i["likes"]] for i in body["items"]]


async def until_equal(
    http: aiohttp.ClientSession, worker: Worker, window: str, limit: int, want: list[list[object]]
) -> None:
    got = None
    try:
        async with asyncio.timeout(LIMIT):
            while True:
                got = await read_trending(http, worker, window, limit)
                if got == want:
                    return
                await asyncio.sleep(0.2)  # polling an answer, not waiting for time to pass
    except TimeoutError:
        pytest.fail(f"{worker.url} /trending?window={window}: {got} instead of {want}")


async def test_trending_matches_the_oracle_on_every_worker(
    cluster: Cluster, workers: list[Worker], request: pytest.FixtureRequest
) -> None:
    oracle = TrendingOracle(WINDOWS, LATENESS_MS)
    events = timed_events(seed=9, count=3000)
    for event, at in events:
        oracle.apply(partition_for(event.item_id.encode(), cluster.partitions), event, at)
    expected = {w.name: oracle.top(w.name, 100) for w in WINDOWS}
    assert all(expected.values()), expected
    owners = {partition_for(str(i).encode(), cluster.partitions) for i, _ in expected["1h"]}
    assert len(owners) > 1, "the top items should span partitions"

    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{workers[1].url}/ws")
        await ws.send_json({"op": "subscribe_trending", "window": "1h", "limit": 5})
        async with LikeClient(cluster.kafka, cluster.topic) as client:
            await client.send_many([event for event, _ in events])
        acked = time.monotonic()
        await cluster.wait_caught_up()
        for worker in workers:
            for window in WINDOWS:
                await until_equal(http, worker, window.name, 100, expected[window.name])
                await until_equal(http, worker, window.name, 3, expected[window.name][:3])
        settled = time.monotonic() - acked

        want = {"type": "trending", "window": "1h", "items": top_items(expected["1h"][:5])}
        async with asyncio.timeout(LIMIT):
            while orjson.loads((await ws.receive()).data) != want:
                pass
        await ws.close()
    report(
        request.config,
        f"trending: {len(events)} events with controlled times over {cluster.partitions} "
        f"partitions and 2 workers; /trending on both equal to the oracle for "
        f"{', '.join(w.name for w in WINDOWS)} {settled:.1f}s after the last acknowledgement",
    )


def top_items(pairs: list[list[object]]) -> list[dict[str, object]]:
    return [{"item_id": i, "likes": n} for i, n in pairs]
