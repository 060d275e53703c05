"""Group membership: a worker stays in the group whatever its assignment (issue 18).

Kafka's client takes a member out of the group once it has gone
``LIKESTREAM_MAX_POLL_INTERVAL_MS`` without polling, and only rejoins from a poll.
Faust polls only while it has partitions to fetch, and the events partitions are read
by the agent's own feed, so a worker that owns nothing (here: three workers on two
partitions, no standbys) used to stop polling, leave the group after the interval and
never come back. With a 4 s interval, the group must still have its three members,
each healthy, long after several intervals went by; then a worker owning a partition
stops, and the one that owned nothing takes it over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from conftest import Cluster, Worker

from likestream.devtools._broker import Broker
from likestream.kafka._internals import decode_member_assignment

pytestmark = pytest.mark.integration

PARTITIONS = 2
MAX_POLL_INTERVAL_MS = 4000
WATCH_INTERVALS = 4  # a member that stopped polling is out after one
READY_LIMIT = 180.0  # three workers starting on two shared cores


async def _members(cluster: Cluster) -> dict[str, list[int]]:
    """The group's members: each one's URL and active events partitions."""
    admin = cluster.kafka.admin()
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([cluster.app_id])
    finally:
        await admin.close()
    [group] = response.to_object()["groups"]
    found = {}
    for member in group["members"]:
        if not member["member_assignment"]:
            continue  # joined, not yet assigned
        assignment = decode_member_assignment(member["member_assignment"], cluster.topic)
        found[assignment.url] = assignment.actives
    return found


async def _wait_members(cluster: Cluster, urls: set[str], limit: float) -> dict[str, list[int]]:
    deadline = time.monotonic() + limit
    while True:
        members = await _members(cluster)
        if set(members) == urls and sorted(p for ps in members.values() for p in ps) == list(
            range(PARTITIONS)
        ):
            return members
        if time.monotonic() > deadline:
            pytest.fail(f"the group never had exactly {sorted(urls)}; last: {members}")
        await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
async def workers(
    broker: Broker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Cluster, list[Worker]]]:
    cluster = Cluster(broker, tmp_path_factory.mktemp("membership"), partitions=PARTITIONS)
    processes = [
        cluster.worker(
            name,
            standby_replicas="0",
            max_poll_interval_ms=str(MAX_POLL_INTERVAL_MS),
        )
        for name in ("w1", "w2", "w3")
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            await process.wait_ready(READY_LIMIT)
        yield cluster, processes
    finally:
        for process in processes:
            if process.proc is not None and process.proc.poll() is None:
                process.stop()


def _url(worker: Worker) -> str:
    return f"http://127.0.0.1:{worker.port}"


async def test_a_worker_owning_nothing_stays_in_the_group(
    workers: tuple[Cluster, list[Worker]],
) -> None:
    cluster, processes = workers
    urls = {_url(w) for w in processes}
    members = await _wait_members(cluster, urls, READY_LIMIT)
    idle = [url for url, actives in members.items() if not actives]
    assert idle, f"the scenario needs a worker owning no partition: {members}"

    # Several max poll intervals: a member that stopped polling is out after one.
    until = time.monotonic() + WATCH_INTERVALS * MAX_POLL_INTERVAL_MS / 1000
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < until:
            members = await _members(cluster)
            assert set(members) == urls, (
                f"left the group: {sorted(urls - set(members))}; members: {members}\n"
                + "\n".join(w.log_tail(15) for w in processes if _url(w) not in members)
            )
            for process in processes:
                async with http.get(f"{process.url}/healthz") as resp:
                    assert resp.status == 200, (process.url, await resp.text())
            await asyncio.sleep(0.5)

    # A rebalance after that: the worker that owned nothing is still a member, so it
    # takes over a stopped worker's partition.
    owner = next(w for w in processes if members[_url(w)])
    owner.stop()
    rest = {_url(w) for w in processes if w is not owner}
    members = await _wait_members(cluster, rest, READY_LIMIT)
    assert all(members[url] for url in idle), members
