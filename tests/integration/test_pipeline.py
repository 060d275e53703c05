"""End to end on real parts: broker, worker process, RocksDB, HTTP.

One worker per module; the tests run in order and share the oracle: counts
after producing, then after a clean restart (RocksDB), then after the data dir
is deleted (changelog recovery).
"""

from __future__ import annotations

import shutil
import time

import aiohttp
import orjson
import pytest
from conftest import Cluster, Worker, assert_matches, read_topic, report
from oracle import Oracle, mixed_events

from likestream.client import LikeClient
from likestream.runtime._produce import produce

pytestmark = pytest.mark.integration

EVENTS, ITEMS, USERS = 20_000, 400, 2_000


async def read_counts_topic(cluster: Cluster) -> dict[str, int]:
    """The latest count per item in the compacted counts topic."""
    latest: dict[str, int] = {}
    for record in await read_topic(cluster, cluster.counts_topic):
        doc = orjson.loads(record.value)
        assert record.key == doc["item_id"].encode()
        latest[doc["item_id"]] = doc["likes"]
    return latest


async def test_counts_match_oracle(
    cluster: Cluster,
    worker: Worker,
    oracle: Oracle,
    http: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
) -> None:
    events = list(mixed_events(EVENTS, ITEMS, USERS, seed=7))
    for event in events:
        oracle.apply(event)
    began = time.monotonic()
    await produce(cluster.kafka, cluster.topic, events)
    produced = time.monotonic() - began
    caught_up = await cluster.wait_caught_up()
    await assert_matches(http, worker, oracle, cluster)

    published = await read_counts_topic(cluster)
    expected = oracle.counts()
    assert {item: published.get(item, 0) for item in expected} == expected
    report(
        request.config,
        f"integration: {len(events)} events, {len(expected)} items, "
        f"{len({u for _, u in oracle.members})} users; produced in {produced:.1f}s, "
        f"caught up {caught_up:.1f}s after the last acknowledgement",
    )


async def test_unknown_item_reads_zero(worker: Worker, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{worker.url}/items/never-liked/likes") as resp:
        assert (resp.status, await resp.json()) == (200, {"item_id": "never-liked", "likes": 0})


async def test_invalid_records_go_to_dlq(
    cluster: Cluster, worker: Worker, oracle: Oracle, http: aiohttp.ClientSession
) -> None:
    valid = list(mixed_events(200, 20, 50, seed=11, prefix="dlq"))
    item = b"dlq:1"
    poison = [
        (item, b"{not json"),
        (item, b'{"item_id": "dlq:1", "action": "like"}'),  # missing user_id
        (item, b'{"user_id": 42, "item_id": "dlq:1", "action": "like"}'),  # wrong type
        (item, b'{"user_id": "u1", "item_id": "dlq:1", "action": "love"}'),
        (b"other", b'{"user_id": "u1", "item_id": "dlq:1", "action": "like"}'),
        (
            item,
            b'{"user_id": "u1", "item_id": "dlq:1", "action": "like", "pad": "'
            + b"p" * 2000
            + b'"}',
        ),
        (item, b"\xff\xfe\x00"),
        (item, None),  # a tombstone
        (None, b'{"user_id": "u1", "item_id": "dlq:1", "action": "like"}'),  # no key
    ]
    async with LikeClient(cluster.kafka, cluster.topic) as client:
        for i, event in enumerate(valid):
            await (await client.send(event))
            oracle.apply(event)
            if i % 20 == 0 and i // 20 < len(poison):
                await client.send_raw(*poison[i // 20])
    await cluster.wait_caught_up()
    await assert_matches(http, worker, oracle, cluster)

    dead = [
        (r.key, r.value, dict(r.headers)) for r in await read_topic(cluster, f"{cluster.topic}.dlq")
    ]

    def order(kv: tuple[bytes | None, bytes | None]) -> tuple[bytes, bytes]:
        return kv[0] or b"", kv[1] or b""

    assert sorted(((k, v) for k, v, _ in dead), key=order) == sorted(poison, key=order)
    assert all(headers["error"] for _, _, headers in dead)


async def test_clean_restart_keeps_counts(
    cluster: Cluster,
    worker: Worker,
    oracle: Oracle,
    http: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
) -> None:
    took = worker.stop()
    worker.start()
    await worker.wait_ready()
    await assert_matches(http, worker, oracle, cluster)
    report(request.config, f"integration: SIGTERM stop took {took:.1f}s; counts kept in RocksDB")


async def test_lost_data_dir_recovers_from_changelog(
    cluster: Cluster,
    worker: Worker,
    oracle: Oracle,
    http: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
) -> None:
    worker.stop()
    shutil.rmtree(worker.data_dir)
    began = time.monotonic()
    worker.start()
    await worker.wait_ready()
    recovered = time.monotonic() - began
    await assert_matches(http, worker, oracle, cluster)
    report(
        request.config,
        f"integration: data dir deleted, ready again in {recovered:.1f}s "
        f"(changelog recovery of {len(oracle.members)} memberships)",
    )
