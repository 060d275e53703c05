"""Exact per-user rate limits across processes: a worker and two gateways, real broker.

One user's writes, sent at once to every process, meet one bucket: the one kept by the
worker that owns the user's partition. Exactly ``BURST`` are accepted; every other is
429 with Retry-After, whichever process it reached.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from conftest import Cluster, Worker, read_topic

from likestream.devtools._broker import Broker

pytestmark = pytest.mark.integration

BURST = 4
WRITES_PER_PROCESS = 10
LIMIT = 60.0  # seconds for a condition on a shared machine; never a figure


@pytest.fixture(scope="module")
def cluster(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    return Cluster(broker, tmp_path_factory.mktemp("limits"))


@pytest.fixture(scope="module")
async def processes(cluster: Cluster) -> AsyncIterator[list[Worker]]:
    """The worker (first) and two gateways, sharing the dev secret and the limits."""
    shared = {
        "LIKESTREAM_CACHE_DIR": str(cluster.root / "cache"),  # the one dev secret
        "LIKESTREAM_RATE": "0.001",  # one token per 1000 s: no refill within the test
        "LIKESTREAM_BURST": str(BURST),
    }
    worker = cluster.worker("w1")
    gateways = [cluster.worker(f"gw{i}", command="gateway") for i in (1, 2)]
    for process in (worker, *gateways):
        process.env.update(shared)
    async with worker.running(), gateways[0].running(), gateways[1].running():
        yield [worker, *gateways]


async def token(process: Worker, user: str) -> dict[str, str]:
    """An Authorization header with a token from ``likestream token``, as a developer makes one."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "likestream", "token", user, "--ttl", "10m"],
        env={**os.environ, **process.env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return {"Authorization": f"Bearer {done.stdout.strip()}"}


async def _post(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, str]:
    async with http.post(url, headers=headers) as resp:
        body = await resp.json()
        return resp.status, resp.headers.get("Retry-After", "") + " " + str(body)


async def _until_owner_known(
    http: aiohttp.ClientSession, process: Worker, headers: dict[str, str]
) -> None:
    """Write as a warm-up user until the process finds the bucket's owner (a gateway
    learns the owners from the group within a second of starting; before, 503)."""
    deadline = time.monotonic() + LIMIT
    while True:
        status, body = await _post(http, f"{process.url}/items/limits:warm/like", headers)
        if status == 202:
            return
        assert status == 503, body
        assert "rate_limit_unavailable" in body
        assert time.monotonic() < deadline, f"{process.url}: no owner within {LIMIT}s: {body}"
        await asyncio.sleep(0.2)


async def test_one_bucket_across_a_worker_and_two_gateways(
    cluster: Cluster, processes: list[Worker], http: aiohttp.ClientSession
) -> None:
    worker = processes[0]
    warm = await token(worker, "warm")
    for process in processes:
        await _until_owner_known(http, process, warm)

    flood = await token(worker, "flood")
    sends = [
        _post(http, f"{process.url}/items/limits:{i}/like", flood)
        for i in range(WRITES_PER_PROCESS)
        for process in processes
    ]
    answers = await asyncio.gather(*sends)
    statuses = Counter(status for status, _ in answers)
    assert statuses == {202: BURST, 429: len(sends) - BURST}, answers
    for status, body in answers:
        if status == 429:
            retry_after = int(body.split(" ", 1)[0])
            assert 1 <= retry_after <= 1000
            assert "rate_limited" in body

    # Exactly the accepted ones reached Kafka.
    events = [orjson.loads(r.value) for r in await read_topic(cluster, cluster.topic)]
    assert len([e for e in events if e["user_id"] == "flood"]) == BURST

    # Still limited a moment later, through any process; another user is not.
    for process in processes:
        status, body = await _post(http, f"{process.url}/items/limits:again/like", flood)
        assert status == 429, body
    status, body = await _post(http, f"{processes[1].url}/items/limits:0/like", warm)
    assert status == 202, body
