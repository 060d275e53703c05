"""The write API end to end: real worker process, real broker, real HTTP, CLI-minted tokens.

The worker runs in dev mode without LIKESTREAM_SECRET, so it signs with the
generated development secret; tokens come from ``likestream token`` run with the
same environment, as a developer would do by hand.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from conftest import Cluster, Worker, read_topic

from likestream.devtools._broker import Broker

pytestmark = pytest.mark.integration

ORIGIN = "http://app.example"
BURST = 5


@pytest.fixture(scope="module")
def cluster(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    return Cluster(broker, tmp_path_factory.mktemp("writes"))


@pytest.fixture(scope="module")
async def worker(cluster: Cluster) -> AsyncIterator[Worker]:
    instance = cluster.worker("w1")
    del instance.env["LIKESTREAM_SECRET"]  # this module's worker signs with the dev secret
    instance.env.update(
        {
            "LIKESTREAM_CACHE_DIR": str(cluster.root / "cache"),  # where the dev secret goes
            "LIKESTREAM_RATE": "0.01",  # one token per 100 s: a refill never hides the 429
            "LIKESTREAM_BURST": str(BURST),
            "LIKESTREAM_CORS_ORIGINS": ORIGIN,
        }
    )
    async with instance.running():
        yield instance


async def cli_token(worker: Worker, user: str) -> str:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "likestream", "token", user, "--ttl", "10m"],
        env={**os.environ, **worker.env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def likes(http: aiohttp.ClientSession, worker: Worker, item: str) -> int | None:
    async with http.get(f"{worker.url}/items/{item}/likes") as resp:
        return (await resp.json())["likes"] if resp.status == 200 else None


async def wait_for_likes(
    http: aiohttp.ClientSession, worker: Worker, item: str, expected: int, limit: float = 120
) -> None:
    deadline = time.monotonic() + limit
    seen = None
    while time.monotonic() < deadline:
        seen = await likes(http, worker, item)
        if seen == expected:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"{item} has {seen} likes, not {expected}, after {limit}s")


async def published_counts(cluster: Cluster, item: str) -> list[int]:
    """The counts published for ``item`` on like-counts, in order."""
    records = await read_topic(cluster, cluster.counts_topic)
    return [orjson.loads(r.value)["likes"] for r in records if r.key == item.encode()]


class _AnyTimestamp:
    """Equals any epoch-milliseconds timestamp within ten minutes of now."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, int) and abs(other - time.time() * 1000) < 600_000


ANY_TS = _AnyTimestamp()


async def test_post_counts_once_and_delete_takes_it_back(
    cluster: Cluster, worker: Worker, http: aiohttp.ClientSession
) -> None:
    item, alice = "writes:post", bearer(await cli_token(worker, "alice"))
    assert await likes(http, worker, item) == 0

    async with http.post(f"{worker.url}/items/{item}/like", headers=alice) as resp:
        assert resp.status == 202, await resp.text()
        event_id = (await resp.json())["event_id"]
    # 202 only after Kafka acknowledged: the event is already in the topic.
    events = [orjson.loads(r.value) for r in await read_topic(cluster, cluster.topic)]
    assert [e for e in events if e.get("event_id") == event_id] == [
        {"event_id": event_id, "user_id": "alice", "item_id": item, "action": "like", "ts": ANY_TS}
    ]
    await wait_for_likes(http, worker, item, 1)

    async with http.post(f"{worker.url}/items/{item}/like", headers=alice) as resp:
        assert resp.status == 202
    await cluster.wait_caught_up()
    assert await likes(http, worker, item) == 1
    async with http.get(f"{worker.url}/items/{item}/likes/alice", headers=alice) as resp:
        assert (await resp.json())["liked"] is True

    async with http.delete(f"{worker.url}/items/{item}/like", headers=alice) as resp:
        assert resp.status == 202
    await wait_for_likes(http, worker, item, 0)
    await cluster.wait_caught_up()
    assert await published_counts(cluster, item) == [1, 0]


async def test_refusals(worker: Worker, http: aiohttp.ClientSession) -> None:
    url = f"{worker.url}/items/writes:refused/like"
    async with http.post(url) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="likestream"'
    async with http.post(url, headers=bearer("not.a.token")) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "invalid_token"
        assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    bob = bearer(await cli_token(worker, "bob"))
    async with http.post(f"{worker.url}/items/bad%20item/like", headers=bob) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_item_id"
    async with http.post(url, headers=bob, data=b"x" * 5000) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "too_large"
    assert await likes(http, worker, "writes:refused") == 0


async def test_a_membership_is_read_only_by_its_own_user(
    worker: Worker, http: aiohttp.ClientSession
) -> None:
    item, dana = "writes:private", bearer(await cli_token(worker, "dana@example.com"))
    async with http.post(f"{worker.url}/items/{item}/like", headers=dana) as resp:
        assert resp.status == 202
    await wait_for_likes(http, worker, item, 1)
    url = f"{worker.url}/items/{item}/likes/dana@example.com"
    async with http.get(url, headers=dana) as resp:
        assert (resp.status, (await resp.json())["liked"]) == (200, True)
    async with http.get(url) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="likestream"'
    async with http.get(url, headers=bearer(await cli_token(worker, "eve"))) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "forbidden"
    # The worker's log has the user's keyed hash, never the id (an e-mail address here).
    log = worker.log.read_text()
    assert "dana@example.com" not in log
    assert re.search(r"GET /items/writes:private/likes/u:[0-9a-f]{12} 403 \S+ u:[0-9a-f]{12}", log)


async def test_rate_limit_is_429_with_retry_after(
    worker: Worker, http: aiohttp.ClientSession
) -> None:
    flood = bearer(await cli_token(worker, "flood"))
    statuses = []
    for i in range(BURST + 1):
        async with http.post(f"{worker.url}/items/flood:{i}/like", headers=flood) as resp:
            statuses.append(resp.status)
            retry_after = resp.headers.get("Retry-After")
            body = await resp.json()
    assert statuses == [202] * BURST + [429]
    assert body["error"]["code"] == "rate_limited"
    assert retry_after is not None
    assert 1 <= int(retry_after) <= 100
    # Another user is not limited by flood's bucket.
    other = bearer(await cli_token(worker, "calm"))
    async with http.post(f"{worker.url}/items/flood:0/like", headers=other) as resp:
        assert resp.status == 202


async def test_cors_preflight_and_security_headers(
    worker: Worker, http: aiohttp.ClientSession
) -> None:
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    async with http.options(f"{worker.url}/items/x/like", headers=preflight) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    evil = {**preflight, "Origin": "http://evil.example"}
    async with http.options(f"{worker.url}/items/x/like", headers=evil) as resp:
        assert resp.status == 403
        assert "Access-Control-Allow-Origin" not in resp.headers
    async with http.get(f"{worker.url}/items/x/likes", headers={"Origin": ORIGIN}) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]


def test_dev_secret_was_generated_private(cluster: Cluster, worker: Worker) -> None:
    path = Path(worker.env["LIKESTREAM_CACHE_DIR"]) / "dev-secret"
    assert path.stat().st_mode & 0o777 == 0o600
    assert "LIKESTREAM_SECRET is not set" in worker.log.read_text()
