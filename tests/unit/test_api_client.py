"""The API client's pure parts (backoff, Retry-After, retry decisions, error mapping, the
subscription diff, frames), and its live feed's reconnects against a scripted WebSocket
server on a real socket (the close codes a real worker sends only under load or on
shutdown). The client against a real worker: tests/integration/test_api_client.py."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from likestream.api_client import (
    ApiClient,
    ApiError,
    Backoff,
    BadRequest,
    Count,
    Counts,
    FeedClosed,
    FeedError,
    Forbidden,
    LikesUpdate,
    Membership,
    RateLimited,
    RetryPolicy,
    Subscriptions,
    Trending,
    TrendingItem,
    Unauthorized,
    Unavailable,
    Unreachable,
)
from likestream.domain._api_types import api_error
from likestream.domain._retry import parse_retry_after
from likestream.runtime._live import parse_frame

LIMIT = 20.0  # seconds; only reached when something is broken

# -- backoff and Retry-After ---------------------------------------------------


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(first=0.5, cap=5.0)
    assert [backoff.delay(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff.delay(10_000) == 5.0  # a long outage does not overflow


def test_jitter_takes_up_to_its_share_off() -> None:
    backoff = Backoff(first=1.0, cap=8.0, jitter=0.5)
    assert backoff.delay(3, draw=0.0) == 8.0
    assert backoff.delay(3, draw=0.999) == pytest.approx(4.004)
    draws = {backoff.delay(1) for _ in range(50)}
    assert all(1.0 <= d <= 2.0 for d in draws)
    assert len(draws) > 1  # drawn, not fixed


@pytest.mark.parametrize(
    "bad", [{"first": 0}, {"first": 2, "cap": 1}, {"factor": 0.5}, {"jitter": 1.5}]
)
def test_backoff_refuses_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="bad backoff"):
        Backoff(**bad)


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 120 ") == 120.0
    assert parse_retry_after("Tue, 01 Dec 2026 12:00:07 GMT", now) == 7.0
    assert parse_retry_after("Tue, 01 Dec 2026 11:00:00 GMT", now) == 0.0  # past: at once
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-1") is None


# -- retry decisions -----------------------------------------------------------


def limited(after: float | None) -> RateLimited:
    return RateLimited(429, "rate_limited", "slow down", after)


def unavailable(after: float | None) -> Unavailable:
    return Unavailable(503, "not_acknowledged", "later", after)


def test_a_429_waits_its_retry_after_then_the_attempts_run_out() -> None:
    policy = RetryPolicy(attempts=3)
    assert policy.wait(1, limited(2.0)) == 2.0
    assert policy.wait(2, limited(1.0)) == 1.0
    assert policy.wait(3, limited(1.0)) is None  # three tries made: raise


def test_a_429_raises_at_once_when_told_not_to_wait() -> None:
    assert RetryPolicy(wait_on_429=False).wait(1, limited(1.0)) is None


def test_a_503_backs_off_but_never_sooner_than_retry_after() -> None:
    policy = RetryPolicy(attempts=10, backoff=Backoff(first=0.25, cap=4.0))
    assert [policy.wait(n, unavailable(None)) for n in (1, 2, 3, 6)] == [0.25, 0.5, 1.0, 4.0]
    assert policy.wait(1, unavailable(3.0)) == 3.0
    assert policy.wait(1, Unreachable("connection refused")) == 0.25


def test_a_wait_longer_than_max_wait_raises_instead() -> None:
    policy = RetryPolicy(max_wait=10.0)
    assert policy.wait(1, limited(60.0)) is None
    assert policy.wait(1, unavailable(3600.0)) is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 500])
def test_other_errors_are_never_retried(status: int) -> None:
    error = api_error(status, {"error": {"code": "x", "message": "y"}}, None)
    assert RetryPolicy().wait(1, error) is None


def test_retry_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


# -- errors and results ---------------------------------------------------------


def test_error_bodies_become_typed_exceptions() -> None:
    body = {"error": {"code": "rate_limited", "message": "at most 5 writes"}}
    error = api_error(429, body, 2.0)
    assert isinstance(error, RateLimited)
    assert (error.status, error.code, error.message, error.retry_after) == (
        429,
        "rate_limited",
        "at most 5 writes",
        2.0,
    )
    assert type(api_error(400, body, None)) is BadRequest
    assert type(api_error(401, body, None)) is Unauthorized
    assert type(api_error(403, body, None)) is Forbidden
    assert type(api_error(503, body, 1.0)) is Unavailable
    assert type(api_error(418, body, None)) is ApiError
    assert issubclass(Unreachable, Unavailable)


def test_an_error_without_the_apis_body_keeps_its_status() -> None:
    error = api_error(502, None, None)  # a proxy's HTML page
    assert isinstance(error, Unavailable)
    assert (error.status, error.code) == (502, "http_error")


def test_results_are_their_plain_values_with_staleness() -> None:
    fresh, stale = Count(3), Count(3, stale_ms=250)
    assert fresh == stale == 3
    assert fresh + 1 == 4
    assert (fresh.stale, stale.stale, stale.stale_ms) == (False, True, 250)
    counts = Counts({"a": 1, "b": 0}, stale_ms=40)
    assert counts == {"a": 1, "b": 0}
    assert counts.stale_ms == 40
    assert Membership("a", "alice", True)
    assert not Membership("a", "alice", False)


# -- the live protocol ------------------------------------------------------------


def test_frames_parse_into_updates() -> None:
    assert parse_frame('{"type": "likes", "item_id": "post:9", "likes": 13}') == LikesUpdate(
        "post:9", 13
    )
    trending = '{"type": "trending", "window": "1h", "items": [{"item_id": "a", "likes": 2}]}'
    assert parse_frame(trending) == Trending("1h", (TrendingItem("a", 2),))
    assert parse_frame('{"type": "error", "code": "server_full", "message": "m"}') == FeedError(
        "server_full", "m"
    )
    assert parse_frame('{"type": "news"}') is None
    assert parse_frame("[1, 2]") is None
    assert parse_frame('{"type": "likes", "item_id": "a"}') is None


def test_subscriptions_send_only_what_changed() -> None:
    subs = Subscriptions()
    subs.add(["a", "b", "a"])
    subs.add_trending("1h", 10)
    assert subs.frames() == [
        {"op": "subscribe", "items": ["a", "b"]},
        {"op": "subscribe_trending", "window": "1h", "limit": 10},
    ]
    assert subs.frames() == []
    subs.add(["c"])
    subs.remove(["a"])
    subs.add_trending("1h", 5)  # another limit: subscribing again replaces it
    subs.add_trending("1m", 10)
    subs.remove_trending("1m")  # never sent: nothing to undo
    assert subs.frames() == [
        {"op": "unsubscribe", "items": ["a"]},
        {"op": "subscribe", "items": ["c"]},
        {"op": "subscribe_trending", "window": "1h", "limit": 5},
    ]
    subs.remove_trending("1h")
    assert subs.frames() == [{"op": "unsubscribe_trending", "window": "1h"}]


def test_a_new_connection_resubscribes_everything_in_frames_of_100() -> None:
    subs = Subscriptions()
    items = [f"item:{n}" for n in range(250)]
    subs.add(items)
    subs.add_trending("24h", 3)
    subs.frames()
    subs.reset()  # reconnected
    frames = subs.frames()
    assert [len(f["items"]) for f in frames if f["op"] == "subscribe"] == [100, 100, 50]
    assert [i for f in frames if f["op"] == "subscribe" for i in f["items"]] == items
    assert frames[-1] == {"op": "subscribe_trending", "window": "24h", "limit": 3}


def test_bad_item_ids_are_refused_before_anything_is_sent() -> None:
    subs = Subscriptions()
    with pytest.raises(ValueError, match="invalid item id"):
        subs.add(["ok", "not ok"])
    assert subs.items == {}


# -- reconnects, against a scripted server ---------------------------------------


class Script:
    """A /ws that answers each subscribe with a count, and closes each connection the way
    ``closes`` says, one per connection (then stays open)."""

    def __init__(self, closes: list[int]) -> None:
        self.closes = closes
        self.connections = 0
        self.received: list[list[dict[str, object]]] = []
        self.likes = 0

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        frames: list[dict[str, object]] = []
        self.received.append(frames)
        close = self.closes.pop(0) if self.closes else None
        async for msg in ws:
            frame = orjson.loads(msg.data)
            frames.append(frame)
            for item in frame.get("items", []):
                await ws.send_json({"type": "likes", "item_id": item, "likes": self.likes})
            if close is not None:
                await ws.close(code=close, message=b"scripted")
        return ws


@pytest.fixture
async def script_server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Script, str]]:
    script = Script(list(request.param))
    app = web.Application()
    app.router.add_get("/ws", script.ws)
    async with TestServer(app) as server:
        yield script, str(server.make_url("")).rstrip("/")


FAST = Backoff(first=0.01, cap=0.05)


@pytest.mark.parametrize("script_server", [[1013, 1001, 1011]], indirect=True)
async def test_the_feed_reconnects_and_resubscribes_after_each_close(
    script_server: tuple[Script, str],
) -> None:
    script, url = script_server
    async with ApiClient(url, reconnect=FAST) as api, api.subscribe(["a", "b"]) as feed:
        async with asyncio.timeout(LIMIT):
            seen = [await anext(feed), await anext(feed)]
            assert seen == [LikesUpdate("a", 0), LikesUpdate("b", 0)]
            script.likes = 7
            # Three closes later the fourth connection stays: its subscribe gives 7.
            while seen[-1] != LikesUpdate("b", 7) or script.connections < 4:
                seen.append(await anext(feed))
        assert feed.reconnects == 3
        assert all(
            frames[0] == {"op": "subscribe", "items": ["a", "b"]} for frames in script.received
        )


@pytest.mark.parametrize("script_server", [[1008]], indirect=True)
async def test_a_policy_close_ends_the_feed_with_an_error(
    script_server: tuple[Script, str],
) -> None:
    script, url = script_server
    async with ApiClient(url, reconnect=FAST) as api, api.subscribe(["a"]) as feed:
        async with asyncio.timeout(LIMIT):
            with pytest.raises(FeedClosed, match="1008"):
                async for _ in feed:
                    pass
    assert script.connections == 1


@pytest.mark.parametrize("script_server", [[]], indirect=True)
async def test_added_items_are_subscribed_on_the_live_connection(
    script_server: tuple[Script, str],
) -> None:
    script, url = script_server
    async with ApiClient(url, reconnect=FAST) as api, api.subscribe(["a"]) as feed:
        async with asyncio.timeout(LIMIT):
            assert await anext(feed) == LikesUpdate("a", 0)
            feed.add("b")
            feed.remove("a")
            assert await anext(feed) == LikesUpdate("b", 0)
        assert script.received[0][1:] == [
            {"op": "unsubscribe", "items": ["a"]},
            {"op": "subscribe", "items": ["b"]},
        ]


async def test_nobody_listening_gives_up_after_max_reconnects() -> None:
    with socket_bound() as port:
        async with ApiClient(f"http://127.0.0.1:{port}", reconnect=FAST) as api:
            async with api.subscribe(["a"], max_reconnects=2) as feed, asyncio.timeout(LIMIT):
                with pytest.raises(FeedClosed, match="gave up after 2"):
                    await anext(feed)
            with pytest.raises(Unreachable):
                await ApiClient(
                    f"http://127.0.0.1:{port}", retry=RetryPolicy(attempts=2), session=api.session
                ).count("a")


class socket_bound:
    """A port with nothing listening on it, kept so for the block."""

    def __enter__(self) -> int:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        return int(self._sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


async def test_a_call_needing_a_token_without_one_is_refused_locally() -> None:
    async with aiohttp.ClientSession() as session:
        api = ApiClient("http://127.0.0.1:1", session=session)
        with pytest.raises(Unauthorized, match="needs a token"):
            await api.like("a")
        with pytest.raises(ValueError, match="invalid item id"):
            await api.count("bad id")


class Flaky:
    """GET /items/{id}/likes: 503 with Retry-After ``refusals`` times, then 200 (stale);
    POST like: checks the bearer the token provider gave."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.calls = 0
        self.tokens: list[str] = []

    async def likes(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.calls <= self.refusals:
            body = {"error": {"code": "unavailable", "message": "recovering"}}
            return web.json_response(body, status=503, headers={"Retry-After": "0"})
        headers = {"X-Likestream-Stale": "true", "X-Likestream-Stale-Ms": "120"}
        return web.json_response({"item_id": "a", "likes": 4}, headers=headers)

    async def like(self, request: web.Request) -> web.Response:
        self.tokens.append(request.headers["Authorization"])
        return web.json_response({"event_id": "e1"}, status=202)


@pytest.fixture
async def flaky(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Flaky, str]]:
    server = Flaky(request.param)
    app = web.Application()
    app.router.add_get("/items/{item}/likes", server.likes)
    app.router.add_post("/items/{item}/like", server.like)
    async with TestServer(app) as test_server:
        yield server, str(test_server.make_url("")).rstrip("/")


QUICK = RetryPolicy(attempts=3, backoff=Backoff(first=0.01, cap=0.02))


@pytest.mark.parametrize("flaky", [2], indirect=True)
async def test_503s_are_retried_and_staleness_comes_with_the_answer(
    flaky: tuple[Flaky, str],
) -> None:
    server, url = flaky
    async with ApiClient(url, retry=QUICK) as api:
        count = await api.count("a")
    assert (count, count.stale_ms, server.calls) == (4, 120, 3)


@pytest.mark.parametrize("flaky", [3], indirect=True)
async def test_503s_past_the_attempts_raise_unavailable(flaky: tuple[Flaky, str]) -> None:
    server, url = flaky
    async with ApiClient(url, retry=QUICK) as api:
        with pytest.raises(Unavailable) as raised:
            await api.count("a")
    assert (raised.value.status, raised.value.code, raised.value.retry_after) == (
        503,
        "unavailable",
        0.0,
    )
    assert server.calls == 3


@pytest.mark.parametrize("flaky", [0], indirect=True)
async def test_the_token_provider_is_asked_for_every_write(flaky: tuple[Flaky, str]) -> None:
    server, url = flaky
    issued = iter(["t1", "t2"])

    async def provider() -> str:
        return next(issued)

    async with ApiClient(url, token_provider=provider) as api:
        assert await api.like("a") == "e1"
        assert await api.like("a") == "e1"
    assert server.tokens == ["Bearer t1", "Bearer t2"]
