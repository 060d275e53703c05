"""``likestream erase USER`` end to end: real broker, a real worker, the CLI as a process.

User A likes three items and user B one of them; the erase unlikes A's three through the
events topic: the counts drop by exactly A's likes, A's memberships are off on the
changelog and in the reads, B's untouched, nothing in the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from conftest import Cluster, Worker, read_topic

from likestream.client import LikeClient
from likestream.devtools._broker import Broker
from likestream.runtime._erase import UserRows
from likestream.tables import changelog_topic

pytestmark = pytest.mark.integration

LIMIT = 120.0  # seconds for a condition on a shared machine; never a figure
A_ITEMS = ["erase:1", "erase:2", "erase:3"]


@pytest.fixture(scope="module")
def cluster(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    return Cluster(broker, tmp_path_factory.mktemp("erase"))


@pytest.fixture(scope="module")
async def worker(cluster: Cluster) -> AsyncIterator[Worker]:
    instance = cluster.worker("w1")
    async with instance.running():
        yield instance


async def run_cli(worker: Worker, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "likestream", *args],
        env={**os.environ, **worker.env},
        capture_output=True,
        text=True,
        timeout=300,
    )


async def counts(http: aiohttp.ClientSession, worker: Worker, items: list[str]) -> dict[str, int]:
    async with http.get(f"{worker.url}/likes", params={"items": ",".join(items)}) as resp:
        assert resp.status == 200, await resp.text()
        got: dict[str, int] = (await resp.json())["likes"]
        return got


async def liked(
    http: aiohttp.ClientSession, cluster: Cluster, worker: Worker, item: str, user: str
) -> bool:
    # Memberships are private: read with the user's own token.
    url = f"{worker.url}/items/{item}/likes/{user}"
    async with http.get(url, headers=cluster.bearer(user)) as resp:
        assert resp.status == 200, await resp.text()
        answer: bool = (await resp.json())["liked"]
        return answer


async def wait_counts(
    http: aiohttp.ClientSession, worker: Worker, expected: dict[str, int]
) -> None:
    deadline = time.monotonic() + LIMIT
    while (seen := await counts(http, worker, sorted(expected))) != expected:
        assert time.monotonic() < deadline, f"counts {seen}, expected {expected}"
        await asyncio.sleep(0.1)


async def changelog_rows(cluster: Cluster, user: str) -> dict[str, bool]:
    rows = UserRows(user)
    for record in await read_topic(cluster, changelog_topic(cluster.app_id)):
        rows.add(record.key, record.value)
    return {item: row.liked for item, row in rows.rows.items()}


async def test_erase_unlikes_everything_the_user_liked(
    cluster: Cluster, worker: Worker, http: aiohttp.ClientSession
) -> None:
    async with LikeClient(cluster.kafka, cluster.topic) as client:
        for item in A_ITEMS:
            await client.like("userA", item)
        await client.like("userB", "erase:1")
        await client.like("userB", "erase:4")
        # A liked and took back one more: not among what the erase undoes.
        await client.like("userA", "erase:5")
        await client.unlike("userA", "erase:5")
    before = {"erase:1": 2, "erase:2": 1, "erase:3": 1, "erase:4": 1, "erase:5": 0}
    await wait_counts(http, worker, before)

    done = await run_cli(worker, "erase", "userA")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "erase userA: 3 items unliked (3 unlike events published and applied); "
        "userA likes nothing now"
    )

    # Applied once the command returns: no waiting here.
    assert await counts(http, worker, sorted(before)) == {
        "erase:1": 1,
        "erase:2": 0,
        "erase:3": 0,
        "erase:4": 1,
        "erase:5": 0,
    }
    for item in [*A_ITEMS, "erase:5"]:
        assert await liked(http, cluster, worker, item, "userA") is False
    assert await liked(http, cluster, worker, "erase:1", "userB") is True
    assert await liked(http, cluster, worker, "erase:4", "userB") is True
    assert await changelog_rows(cluster, "userA") == dict.fromkeys([*A_ITEMS, "erase:5"], False)
    assert await changelog_rows(cluster, "userB") == {"erase:1": True, "erase:4": True}
    assert await read_topic(cluster, f"{cluster.topic}.dlq") == []


async def test_erasing_again_finds_nothing(worker: Worker) -> None:
    done = await run_cli(worker, "erase", "userA")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "erase userA: userA liked nothing; no events published"


async def test_bad_user_or_no_changelog_is_exit_2(worker: Worker) -> None:
    done = await run_cli(worker, "erase", "not a user")
    assert done.returncode == 2
    assert "USER must be" in done.stderr
    done = await run_cli(worker, "erase", "userA", "--app-id", "nobody-ran-this")
    assert done.returncode == 2
    assert "no changelog topic 'nobody-ran-this-state-changelog'" in done.stderr


async def test_without_workers_the_erase_times_out_with_exit_1(
    cluster: Cluster, worker: Worker
) -> None:
    worker.stop()
    async with LikeClient(cluster.kafka, cluster.topic) as client:
        await client.like("userC", "erase:1")  # never applied: no worker runs
    done = await run_cli(worker, "erase", "userC", "--timeout", "2s")
    assert done.returncode == 1, done.stderr
    assert "0 unlike events published" in done.stderr
    assert "are they running?" in done.stderr
