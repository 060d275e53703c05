"""Writes while Kafka is down: 503 with Retry-After, never a 202; 202 again once it is back.

This module runs its own broker (own state dir, free ports) so that stopping it
leaves the session's broker alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from conftest import Cluster, Worker, free_port_pair, report

from likestream.devtools._broker import Broker, default_cache_dir
from likestream.domain._tokens import mint_token

pytestmark = pytest.mark.integration

SECRET = "outage-test-secret-" + "0123456789abcdef" * 3
TIMEOUT_MS = 2000


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    instance = Broker(
        default_cache_dir(), tmp_path_factory.mktemp("outage-broker"), free_port_pair()
    )
    instance.start(timeout=180)
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
async def worker(
    own_broker: Broker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Worker]:
    cluster = Cluster(own_broker, tmp_path_factory.mktemp("outage"), partitions=2)
    instance = cluster.worker("w1")
    instance.env.update(
        {
            "LIKESTREAM_SECRET": SECRET,
            "LIKESTREAM_PUBLISH_TIMEOUT_MS": str(TIMEOUT_MS),
            "LIKESTREAM_RATE": "1000",
            "LIKESTREAM_BURST": "1000",
        }
    )
    async with instance.running():
        yield instance


async def post(http: aiohttp.ClientSession, worker: Worker, item: str) -> aiohttp.ClientResponse:
    headers = {"Authorization": f"Bearer {mint_token(SECRET, 'carol', 600)}"}
    async with http.post(f"{worker.url}/items/{item}/like", headers=headers) as resp:
        await resp.read()
        return resp


async def wait_for_likes(
    http: aiohttp.ClientSession, worker: Worker, item: str, expected: int, limit: float = 180
) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        async with http.get(f"{worker.url}/items/{item}/likes") as resp:
            if resp.status == 200 and (await resp.json())["likes"] == expected:
                return
        await asyncio.sleep(0.2)
    pytest.fail(f"{item} did not reach {expected} likes within {limit}s")


async def test_503_while_kafka_is_down_then_202(
    own_broker: Broker,
    worker: Worker,
    http: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
) -> None:
    assert (await post(http, worker, "outage:before")).status == 202

    await asyncio.to_thread(own_broker.stop)
    began = time.monotonic()
    resp = await post(http, worker, "outage:during")
    answered = time.monotonic() - began
    assert resp.status == 503
    assert int(resp.headers["Retry-After"]) >= 1
    assert answered >= TIMEOUT_MS / 1000 * 0.9  # it waited for an acknowledgement first
    assert worker.proc is not None
    assert worker.proc.poll() is None, "the worker must outlive a Kafka outage"

    await asyncio.to_thread(own_broker.start, 180)
    back = time.monotonic()
    statuses: list[int] = []
    while time.monotonic() - back < 180:
        status = (await post(http, worker, "outage:after")).status
        statuses.append(status)
        if status == 202:
            break
    recovered = time.monotonic() - back
    assert statuses[-1] == 202, f"no 202 within 180s of the broker's return: {statuses}"
    assert set(statuses) <= {202, 503}, statuses  # never anything but "not yet" or "done"
    await wait_for_likes(http, worker, "outage:after", 1)
    report(
        request.config,
        f"write outage: 503 after {answered:.1f}s (LIKESTREAM_PUBLISH_TIMEOUT_MS={TIMEOUT_MS}) "
        f"while the broker was down; first 202 {recovered:.1f}s after it was back "
        f"({len(statuses) - 1} 503s meanwhile)",
    )
