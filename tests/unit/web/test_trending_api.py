"""``GET /trending`` and the trending pushes on a real aiohttp server; the board is fed
directly with what the trending topic would carry (the integration test reads the topic)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from fakes import web_app

from likestream.domain._top import PartitionTop
from likestream.domain._window_spec import parse_windows
from likestream.web import PushSettings, TrendingSettings
from likestream.web._trending import TRENDING, Board

from .test_push import State, frame

WINDOWS = parse_windows("1m:10s,1h:5m")
T0 = 1_764_000_000_000


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    push = PushSettings(interval=0.05, max_items=5, backlog=64 * 1024, heartbeat=30.0)
    app = web_app(State(), push=push, trending=TrendingSettings(WINDOWS))
    async with TestClient(TestServer(app)) as http:
        yield http


def board_of(client: TestClient) -> Board:
    return client.server.app[TRENDING]


def top(window: str, partition: int, stamp: int, items: list[tuple[str, int]], at: int = T0):
    return PartitionTop(window, partition, stamp, at, tuple(items))


async def get(client: TestClient, query: str) -> tuple[int, dict[str, object]]:
    async with client.get(f"/trending{query}") as resp:
        return resp.status, await resp.json()


def listed(pairs: list[tuple[str, int]]) -> list[dict[str, object]]:
    return [{"item_id": i, "likes": n} for i, n in pairs]


async def test_merges_partitions_by_likes_then_id(client: TestClient) -> None:
    board = board_of(client)
    board.update(top("1h", 0, 5, [("a", 9), ("c", 3), ("d", 1)]))
    board.update(top("1h", 1, 7, [("b", 9), ("e", 4)]))
    board.update(top("1m", 1, 7, [("e", 1)]))
    assert await get(client, "?window=1h&limit=3") == (
        200,
        {"window": "1h", "items": listed([("a", 9), ("b", 9), ("e", 4)])},
    )
    assert (await get(client, ""))[1]["items"] == listed(
        [("a", 9), ("b", 9), ("e", 4), ("c", 3), ("d", 1)]
    )
    assert (await get(client, "?window=1m"))[1]["items"] == listed([("e", 1)])


async def test_older_records_and_quiet_partitions_are_left_out(client: TestClient) -> None:
    board = board_of(client)
    board.update(top("1h", 0, 9, [("a", 2)]))
    board.update(top("1h", 0, 8, [("old", 50)]))  # an earlier owner's, read late
    board.update(top("1h", 1, 3, [("stale", 7)], at=T0 - 3_600_000))  # a window behind
    assert (await get(client, "?window=1h"))[1]["items"] == listed([("a", 2)])


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("?window=2h", "invalid_window"),
        ("?window=", "invalid_window"),
        ("?limit=0", "invalid_limit"),
        ("?limit=101", "invalid_limit"),
        ("?limit=ten", "invalid_limit"),
        ("?limit=-1", "invalid_limit"),
    ],
)
async def test_bad_queries_are_json_400s(client: TestClient, query: str, code: str) -> None:
    status, body = await get(client, query)
    assert status == 400
    assert body["error"]["code"] == code  # type: ignore[index]


def pushed(window: str, pairs: list[tuple[str, int]]) -> dict[str, object]:
    return {"type": "trending", "window": window, "items": listed(pairs)}


async def test_subscribe_trending_gets_the_top_then_coalesced_changes(client: TestClient) -> None:
    board = board_of(client)
    board.update(top("1h", 0, 1, [("a", 1)]))
    async with client.ws_connect("/ws") as ws:
        await ws.send_json({"op": "subscribe_trending", "window": "1h", "limit": 2})
        assert await frame(ws) == pushed("1h", [("a", 1)])
        for n in range(2, 200):  # within one interval: one frame with the newest
            board.update(top("1h", 0, n, [("a", n), ("b", 1), ("c", 1)]))
        assert await frame(ws) == pushed("1h", [("a", 199), ("b", 1)])
        board.update(top("1m", 0, 300, [("z", 5)]))  # another window: nothing
        board.update(top("1h", 0, 301, [("a", 199), ("b", 1), ("d", 1)]))  # top 2 unchanged
        board.update(top("1h", 1, 302, [("e", 500)]))
        assert await frame(ws) == pushed("1h", [("e", 500), ("a", 199)])
        await ws.send_json({"op": "unsubscribe_trending", "window": "1h"})
        await ws.send_json({"op": "unsubscribe_trending", "window": "1h"})
        assert (await frame(ws))["code"] == "not_subscribed"
        board.update(top("1h", 1, 400, [("e", 501)]))
        await ws.send_json({"op": "subscribe_trending", "window": "1m"})
        assert await frame(ws) == pushed("1m", [("z", 5)])  # nothing of 1h came in between


@pytest.mark.parametrize(
    ("op", "code"),
    [
        ({"op": "subscribe_trending", "window": "2h"}, "invalid_window"),
        ({"op": "subscribe_trending"}, "invalid_window"),
        ({"op": "subscribe_trending", "window": "1h", "limit": 1000}, "invalid_limit"),
        ({"op": "subscribe_trending", "window": "1h", "limit": True}, "invalid_limit"),
        ({"op": "trending"}, "invalid_op"),
    ],
)
async def test_bad_trending_ops_are_error_frames(
    client: TestClient, op: dict[str, object], code: str
) -> None:
    async with client.ws_connect("/ws") as ws:
        await ws.send_json(op)
        assert (await frame(ws))["code"] == code
