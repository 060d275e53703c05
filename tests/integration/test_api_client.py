"""likestream.api_client against a real worker process (real broker, RocksDB, HTTP and
WebSocket): every call, a 429 waited out or raised, a live feed seeing another client's
like, and a feed that resumes by itself after the worker restarts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from conftest import Cluster, Worker

from likestream.api_client import (
    ApiClient,
    ApiError,
    Backoff,
    BadRequest,
    Feed,
    Forbidden,
    LikesUpdate,
    RateLimited,
    RetryPolicy,
    Trending,
    Unauthorized,
    Update,
)

pytestmark = pytest.mark.integration

BURST = 3
LIMIT = 120.0  # seconds; generous for a shared two-core machine
FAST_RECONNECT = Backoff(first=0.2, cap=2.0, jitter=0.5)
# Right after a worker (re)starts, writes get 503 until its group has formed: keep trying.
PATIENT = RetryPolicy(attempts=60, backoff=Backoff(first=0.2, cap=2.0, jitter=0.5))


@pytest.fixture(scope="module")
async def worker(cluster: Cluster) -> AsyncIterator[Worker]:
    instance = cluster.worker(
        "w1",
        rate="1",  # a token a second: a 429 says Retry-After: 1
        burst=str(BURST),
        trending_windows="1m:10s,1h:5m",
        trending_interval_ms="200",
    )
    async with instance.running():
        yield instance


def token(cluster: Cluster, user: str) -> str:
    return cluster.bearer(user)["Authorization"].removeprefix("Bearer ")


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + LIMIT
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"not {what} within {LIMIT}s")


async def next_where(feed: Feed, wanted: Callable[[Update], bool]) -> Update:
    """The next update ``wanted`` accepts (others are skipped), within the limit."""
    async with asyncio.timeout(LIMIT):
        async for update in feed:
            if wanted(update):
                return update
    raise AssertionError("the feed ended")


async def test_like_count_counts_liked_trending_unlike(cluster: Cluster, worker: Worker) -> None:
    item = "api:round"
    others = [f"api:never:{n}" for n in range(150)]  # over the server's 100 per request
    async with (
        ApiClient(worker.url, token=token(cluster, "alice"), retry=PATIENT) as alice,
        ApiClient(worker.url, token=token(cluster, "bob")) as bob,
    ):
        assert await alice.count(item) == 0
        event_id = await alice.like(item)
        assert isinstance(event_id, str)
        assert event_id

        async def counted(n: int) -> bool:
            return await alice.count(item) == n

        await until(lambda: counted(1), "the like counted")
        counts = await alice.counts([item, *others, item])
        assert counts == {item: 1, **dict.fromkeys(others, 0)}
        assert list(counts) == [item, *others]
        assert counts.stale_ms is None  # one worker owns every partition: fresh

        assert (await alice.liked(item, "alice")).liked is True
        assert not await bob.liked(item, "bob")
        with pytest.raises(Forbidden) as forbidden:
            await bob.liked(item, "alice")  # another user's membership
        assert (forbidden.value.status, forbidden.value.code) == (403, "forbidden")

        async def trending_lists_it() -> bool:
            top = await bob.trending("1m", limit=5)
            return any(i.item_id == item and i.likes == 1 for i in top.items)

        await until(trending_lists_it, "trending lists the item")
        assert (await bob.trending()).window == "1h"  # the server's default window
        with pytest.raises(BadRequest) as bad:
            await bob.trending("1w")
        assert bad.value.code == "invalid_window"

        assert await alice.unlike(item) != event_id
        await until(lambda: counted(0), "the unlike counted")
        assert not await alice.liked(item, "alice")

    async with ApiClient(worker.url, token="not-a-jwt") as stranger:
        with pytest.raises(Unauthorized) as refused:
            await stranger.like(item)
        assert (refused.value.status, refused.value.code) == (401, "invalid_token")


@dataclass(frozen=True)
class Recording(RetryPolicy):
    """The retry policy, remembering every error it was asked about."""

    seen: list[ApiError] = field(default_factory=list)

    def wait(self, failures: int, error: ApiError, draw: float | None = None) -> float | None:
        self.seen.append(error)
        return super().wait(failures, error, draw)


async def test_a_429_is_raised_when_asked_and_waited_out_otherwise(
    cluster: Cluster, worker: Worker
) -> None:
    carol = token(cluster, "carol")
    refusal: RateLimited | None = None
    async with ApiClient(worker.url, token=carol, retry=RetryPolicy(wait_on_429=False)) as hasty:
        for n in range(BURST * 10):  # the burst, and a refill if the machine is slow
            try:
                await hasty.like(f"api:burst:{n}")
            except RateLimited as exc:
                refusal = exc
                break
    assert refusal is not None, "never rate limited"
    assert (refusal.status, refusal.code) == (429, "rate_limited")
    assert refusal.retry_after is not None
    assert refusal.retry_after >= 1

    # Writes as fast as they go until one is refused: that one waits and is made.
    policy = Recording(attempts=5)
    async with ApiClient(worker.url, token=carol, retry=policy) as patient:
        for n in range(BURST * 10):
            assert await patient.like(f"api:wait:{n}")  # every call succeeds
            if policy.seen:
                break
    assert policy.seen, "never rate limited"
    assert all(isinstance(e, RateLimited) for e in policy.seen)


async def test_a_feed_sees_another_clients_like(cluster: Cluster, worker: Worker) -> None:
    item, later = "api:live", "api:live:added"
    async with (
        ApiClient(worker.url) as reader,
        ApiClient(worker.url, token=token(cluster, "dave"), retry=PATIENT) as dave,
        reader.subscribe([item], trending=["1m"], trending_limit=100) as feed,
    ):
        first = await next_where(feed, lambda u: isinstance(u, LikesUpdate))
        assert first == LikesUpdate(item, 0)  # the current count comes first

        await dave.like(item)
        assert await next_where(feed, lambda u: isinstance(u, LikesUpdate)) == LikesUpdate(item, 1)
        top = await next_where(
            feed, lambda u: isinstance(u, Trending) and any(i.item_id == item for i in u.items)
        )
        assert isinstance(top, Trending)
        assert top.window == "1m"

        feed.add(later)  # on the open connection
        await dave.like(later)
        assert await next_where(
            feed, lambda u: isinstance(u, LikesUpdate) and u.item_id == later and u.likes == 1
        ) == LikesUpdate(later, 1)
        assert feed.reconnects == 0


async def test_a_feed_resumes_after_the_worker_restarts(cluster: Cluster, worker: Worker) -> None:
    item = "api:restart"
    async with (
        ApiClient(worker.url, reconnect=FAST_RECONNECT) as reader,
        ApiClient(worker.url, token=token(cluster, "erin"), retry=PATIENT) as erin,
        reader.subscribe([item]) as feed,
    ):
        await erin.like(item)
        await next_where(feed, lambda u: u == LikesUpdate(item, 1))

        await asyncio.to_thread(worker.stop)
        await until(lambda: _false_when(feed.connected), "disconnected")
        worker.start()
        await worker.wait_ready()

        await erin.unlike(item)  # made by the restarted worker
        assert await next_where(feed, lambda u: u == LikesUpdate(item, 0)) == LikesUpdate(item, 0)
        assert feed.reconnects >= 1
        assert feed.connected


async def _false_when(connected: bool) -> bool:
    return not connected
