"""The push protocol on a real aiohttp server and real sockets; the hub is fed directly.

The Kafka tail is covered by the integration tests; here counts enter through
``Hub.update`` (what the tail calls) so every edge case is deterministic.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import struct
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import ConsumerRecord
from fakes import Publisher, Reads, web_app, writes_of

from likestream.domain._tokens import Tokens
from likestream.tables import NO_COUNT, CountRow, NotServable
from likestream.web import HUB, Auth, Hub, PushSettings, RateLimiter
from likestream.web import _push as push_module
from likestream.web._tail import parse_count

SECRET = "unit-test-secret-" + "0123456789abcdef" * 2
AUTH = Auth(Tokens(SECRET))
MAX_ITEMS = 5
LIMIT = 20.0  # seconds; generous, only hit when something is broken


class State(Reads):
    """Owns every item except those starting with ``remote:``."""

    def __init__(self) -> None:
        self.rows: dict[str, CountRow] = {"post:9": CountRow(12, 40)}

    def likes(self, item_id: str) -> int:
        return self.stamped(item_id).likes

    def stamped(self, item_id: str) -> CountRow:
        if item_id.startswith("remote:"):
            raise NotServable("partition 1 is served by another worker")
        return self.rows.get(item_id, NO_COUNT)

    def liked(self, item_id: str, user_id: str) -> bool:
        return False

    def ready(self) -> bool:
        return True


def push_settings(interval: float = 0.01, backlog: int = 64 * 1024, **caps: int) -> PushSettings:
    return PushSettings(
        interval=interval, max_items=MAX_ITEMS, backlog=backlog, heartbeat=30.0, **caps
    )


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    writes = writes_of(Publisher(), RateLimiter(1, 1), timeout=1)
    app = web_app(State(), writes, push=push_settings(), dev_tokens=True, auth=AUTH)
    async with TestClient(TestServer(app)) as http:
        yield http


def hub_of(client: TestClient) -> Hub:
    return client.server.app[HUB]


async def frame(ws: aiohttp.ClientWebSocketResponse) -> dict[str, object]:
    msg = await ws.receive(timeout=LIMIT)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    body = orjson.loads(msg.data)
    assert isinstance(body, dict)
    return body


async def send(ws: aiohttp.ClientWebSocketResponse, op: str, items: list[str]) -> None:
    await ws.send_str(orjson.dumps({"op": op, "items": items}).decode())


def likes(item: str, n: int) -> dict[str, object]:
    return {"type": "likes", "item_id": item, "likes": n}


async def test_subscribe_gets_the_table_count_then_changes(client: TestClient) -> None:
    async with client.ws_connect("/ws") as ws:
        await send(ws, "subscribe", ["post:9"])
        assert await frame(ws) == likes("post:9", 12)
        hub_of(client).update("post:9", CountRow(13, 41))
        assert await frame(ws) == likes("post:9", 13)


async def test_older_and_repeated_offsets_never_reach_the_client(client: TestClient) -> None:
    hub = hub_of(client)
    async with client.ws_connect("/ws") as ws:
        await send(ws, "subscribe", ["post:9"])
        assert await frame(ws) == likes("post:9", 12)  # stamped 40 in table state
        hub.update("post:9", CountRow(11, 39))  # reordered: older than what the client has
        hub.update("post:9", CountRow(12, 40))  # re-published after a crash: same offset
        hub.update("post:9", CountRow(14, 42))
        assert await frame(ws) == likes("post:9", 14)


async def test_changes_are_coalesced_per_item(client: TestClient) -> None:
    hub = hub_of(client)
    async with client.ws_connect("/ws") as ws:
        await send(ws, "subscribe", ["post:1"])
        assert await frame(ws) == likes("post:1", 0)
        for n in range(1, 501):  # all within one event-loop turn: one frame
            hub.update("post:1", CountRow(n, n))
        assert await frame(ws) == likes("post:1", 500)
        hub.update("post:1", CountRow(501, 501))
        assert await frame(ws) == likes("post:1", 501)


async def test_item_owned_elsewhere_starts_with_the_last_value_seen(client: TestClient) -> None:
    hub = hub_of(client)
    async with client.ws_connect("/ws") as ws:
        await send(ws, "subscribe", ["remote:a", "post:2"])
        # Not owned and never seen: no count yet, the next change is the first frame.
        assert await frame(ws) == likes("post:2", 0)
        hub.update("remote:a", CountRow(7, 3))
        assert await frame(ws) == likes("remote:a", 7)
    async with client.ws_connect("/ws") as ws:
        await send(ws, "subscribe", ["remote:a"])
        assert await frame(ws) == likes("remote:a", 7)


async def test_subscribe_twice_sends_the_current_count_again(client: TestClient) -> None:
    async with client.ws_connect("/ws") as ws:
        await send(ws, "subscribe", ["post:9"])
        await send(ws, "subscribe", ["post:9", "post:9"])
        assert await frame(ws) == likes("post:9", 12)
        assert await frame(ws) == likes("post:9", 12)
        hub_of(client).update("post:9", CountRow(13, 41))
        assert await frame(ws) == likes("post:9", 13)  # one subscription, one frame


async def test_unsubscribe_stops_changes_and_unknown_is_an_error(client: TestClient) -> None:
    hub = hub_of(client)
    async with client.ws_connect("/ws") as ws:
        await send(ws, "subscribe", ["post:1", "post:2"])
        assert {(await frame(ws))["item_id"] for _ in range(2)} == {"post:1", "post:2"}
        await send(ws, "unsubscribe", ["post:1", "post:3"])
        error = await frame(ws)
        assert (error["type"], error["code"]) == ("error", "not_subscribed")
        assert "post:3" in str(error["message"])
        hub.update("post:1", CountRow(5, 5))
        hub.update("post:2", CountRow(6, 6))
        assert await frame(ws) == likes("post:2", 6)
    await no_subscribers(hub)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_op"),
        ('{"op": "delete", "items": ["a"]}', "invalid_op"),
        ('{"items": ["a"]}', "invalid_op"),
        ('{"op": "subscribe"}', "invalid_items"),
        ('{"op": "subscribe", "items": "post:1"}', "invalid_items"),
        ('{"op": "subscribe", "items": []}', "invalid_items"),
        ('{"op": "subscribe", "items": [1]}', "invalid_items"),
        ('{"op": "subscribe", "items": ["ok", "not valid"]}', "invalid_item_id"),
        ('{"op": "subscribe", "items": ["' + "x" * 129 + '"]}', "invalid_item_id"),
        ('{"op": "subscribe", "items": ["a/b"]}', "invalid_item_id"),
        ('{"op": "subscribe", "items": ["a", "b", "c", "d", "e", "f"]}', "too_many_items"),
        ('{"op": "subscribe", "items": ["' + "a" * 20_000 + '"]}', "frame_too_large"),
    ],
)
async def test_bad_frames_get_an_error_frame_and_the_connection_lives(
    client: TestClient, raw: str, code: str
) -> None:
    async with client.ws_connect("/ws") as ws:
        await ws.send_str(raw)
        error = await frame(ws)
        assert (error["type"], error["code"]) == ("error", code)
        assert error["message"]
        await send(ws, "subscribe", ["post:9"])  # nothing half-done, and still served
        assert await frame(ws) == likes("post:9", 12)


async def test_binary_frames_are_refused(client: TestClient) -> None:
    async with client.ws_connect("/ws") as ws:
        await ws.send_bytes(b'{"op": "subscribe", "items": ["post:9"]}')
        error = await frame(ws)
        assert error["code"] == "invalid_frame"


async def test_too_many_items_counts_existing_subscriptions(client: TestClient) -> None:
    async with client.ws_connect("/ws") as ws:
        await send(ws, "subscribe", [f"i:{n}" for n in range(MAX_ITEMS)])
        for _ in range(MAX_ITEMS):
            await frame(ws)
        await send(ws, "subscribe", ["i:0", "i:1"])  # already subscribed: allowed
        await frame(ws)
        await frame(ws)
        await send(ws, "subscribe", ["one:more"])
        assert (await frame(ws))["code"] == "too_many_items"


async def test_frames_per_second_are_limited(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The connection's limiter on a clock that stands still: no token comes back
    # however slowly the machine handles the frames.
    monkeypatch.setattr(
        push_module, "RateLimiter", lambda rate, burst: RateLimiter(rate, burst, lambda: 0.0)
    )
    async with client.ws_connect("/ws") as ws:
        for _ in range(2 * push_module.CLIENT_BURST):
            await ws.send_str("{}")
        codes = [(await frame(ws))["code"] for _ in range(2 * push_module.CLIENT_BURST)]
        assert codes == ["invalid_op"] * push_module.CLIENT_BURST + ["rate_limited"] * (
            push_module.CLIENT_BURST
        )


# -- SSE ----------------------------------------------------------------------


async def sse_events(resp: aiohttp.ClientResponse, count: int) -> list[dict[str, str]]:
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    async with asyncio.timeout(LIMIT):
        while len(events) < count:
            line = (await resp.content.readline()).decode().rstrip("\n")
            if not line:
                if "data" in fields:
                    events.append(fields)
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
    return events


async def test_sse_sends_the_count_then_changes_with_offsets_as_ids(client: TestClient) -> None:
    async with client.get("/items/post:9/events") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        [first] = await sse_events(resp, 1)
        assert first == {
            "id": "40",
            "event": "likes",
            "data": '{"item_id":"post:9","likes":12}',
        }
        hub_of(client).update("post:9", CountRow(13, 41))
        [second] = await sse_events(resp, 1)
        assert (second["id"], orjson.loads(second["data"])["likes"]) == ("41", 13)


async def test_streamed_responses_carry_the_security_headers_and_request_id(
    client: TestClient,
) -> None:
    # Their headers leave before the handler returns: the handler adds them itself.
    handshake = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }
    async with (
        client.get("/items/post:9/events", headers={"X-Request-Id": "sse-1"}) as sse,
        client.get("/ws", headers={**handshake, "X-Request-Id": "ws-1"}) as ws,
    ):
        assert (sse.status, ws.status) == (200, 101)
        for resp, rid in ((sse, "sse-1"), (ws, "ws-1")):
            assert resp.headers["X-Request-Id"] == rid
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]


async def test_sse_last_event_id_skips_what_the_client_has(client: TestClient) -> None:
    headers = {"Last-Event-ID": "40"}
    async with client.get("/items/post:9/events", headers=headers) as resp:
        hub_of(client).update("post:9", CountRow(15, 44))
        [event] = await sse_events(resp, 1)  # not the count at 40 again
        assert (event["id"], orjson.loads(event["data"])["likes"]) == ("44", 15)


async def test_sse_bad_item_is_a_json_400(client: TestClient) -> None:
    async with client.get("/items/bad%20id/events") as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_item_id"


# -- caps and the Origin check ---------------------------------------------------


async def refused(http: TestClient, reason: str) -> float:
    resp = await http.get("/metrics")
    for line in (await resp.text()).splitlines():
        if line.startswith(f'likestream_push_refused_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    msg = await ws.receive(timeout=LIMIT)
    assert msg.type == aiohttp.WSMsgType.CLOSE, msg
    return ws.close_code


@pytest.mark.parametrize(
    ("cap", "reason"), [("max_connections", "connections"), ("max_per_address", "address")]
)
async def test_a_full_process_closes_new_websockets_with_1013_and_sse_gets_503(
    cap: str, reason: str
) -> None:
    app = web_app(State(), push=push_settings(**{cap: 2}))
    async with TestClient(TestServer(app)) as http:
        async with http.ws_connect("/ws") as one, http.get("/items/post:9/events") as two:
            assert two.status == 200
            await send(one, "subscribe", ["post:9"])
            assert await frame(one) == likes("post:9", 12)
            before = await refused(http, reason)
            async with http.ws_connect("/ws") as three:
                assert await closed_with(three) == 1013
            async with http.get("/items/post:9/events") as four:
                assert four.status == 503
                assert four.headers["Retry-After"] == "5"
                assert (await four.json())["error"]["code"] == "server_full"
            assert await refused(http, reason) == before + 2
            hub_of(http).update("post:9", CountRow(13, 41))  # the ones held are served
            assert await frame(one) == likes("post:9", 13)
        async with http.ws_connect("/ws") as again:  # room once they left
            await send(again, "subscribe", ["post:9"])
            assert await frame(again) == likes("post:9", 13)


async def test_failed_handshakes_hold_no_place_under_the_cap() -> None:
    app = web_app(State(), push=push_settings(max_connections=1))
    async with TestClient(TestServer(app)) as http:
        for _ in range(3):
            async with http.get("/ws") as plain:  # no Upgrade: not a WebSocket
                assert plain.status == 400
        async with http.ws_connect("/ws") as ws:
            await send(ws, "subscribe", ["post:9"])
            assert await frame(ws) == likes("post:9", 12)


async def test_subscriptions_past_the_process_cap_are_refused_with_an_error_frame() -> None:
    app = web_app(State(), push=push_settings(max_subscriptions=3))
    async with TestClient(TestServer(app)) as http, http.ws_connect("/ws") as ws:
        await send(ws, "subscribe", ["post:1", "post:2"])
        assert [await frame(ws), await frame(ws)] == [likes("post:1", 0), likes("post:2", 0)]
        await send(ws, "subscribe", ["post:3", "post:4"])
        error = await frame(ws)
        assert error["type"] == "error"
        assert error["code"] == "server_full"
        async with http.get("/items/post:5/events") as sse:
            assert sse.status == 200  # the third fits
        # A stream's end is noticed at its next write (a change, or the keep-alive).
        hub = hub_of(http)
        hub.update("post:5", CountRow(1, 1))
        async with asyncio.timeout(LIMIT):
            while True:
                if hub.subscriptions == 2:
                    break
                await asyncio.sleep(0.01)
        await send(ws, "subscribe", ["post:4"])
        assert await frame(ws) == likes("post:4", 0)
        async with http.get("/items/post:6/events") as sse:
            assert sse.status == 503


@pytest.mark.parametrize(
    ("origin", "allowed", "status"),
    [
        (None, (), 101),  # not a browser
        ("same", (), 101),
        ("http://evil.example", (), 403),
        ("https://app.example", ("https://app.example",), 101),
        ("https://app.example", ("*",), 101),
        ("null", (), 403),
    ],
)
async def test_live_routes_refuse_pages_of_other_origins(
    origin: str | None, allowed: tuple[str, ...], status: int
) -> None:
    app = web_app(State(), cors_origins=allowed, push=push_settings())
    async with TestClient(TestServer(app)) as http:
        host = f"{http.host}:{http.port}"
        headers = (
            {} if origin is None else {"Origin": f"http://{host}" if origin == "same" else origin}
        )
        for path, ok in (("/ws", 101), ("/items/post:9/events", 200)):
            upgrade = (
                {
                    "Upgrade": "websocket",
                    "Connection": "Upgrade",
                    "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
                }
                if path == "/ws"
                else {}
            )
            async with http.get(path, headers={**headers, **upgrade}) as resp:
                assert resp.status == (ok if status == 101 else status), path
                if status == 403:
                    assert (await resp.json())["error"]["code"] == "origin_not_allowed"


# -- a client that cannot keep up ---------------------------------------------


class RawSocketClient:
    """A WebSocket client on a socket with a tiny receive buffer that reads only when told."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> RawSocketClient:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: sticks
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        # A small limit: the stream stops reading from the socket past 2 x limit.
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def send_text(self, text: str) -> None:
        data, mask = text.encode(), os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        length = len(data)
        header = (
            bytes([0x81, 0x80 | length])
            if length < 126
            else struct.pack("!BBH", 0x81, 0xFE, length)
        )
        self.writer.write(header + mask + masked)
        await self.writer.drain()

    async def read_until_close(self) -> tuple[int, int]:
        """Read frames to the close frame: (the largest count in its frames, close code)."""
        newest = 0
        while True:
            b0, b1 = await self.reader.readexactly(2)
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(length)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                return newest, struct.unpack("!H", payload[:2])[0]
            if opcode == 0x1:
                newest = max(newest, orjson.loads(payload).get("likes", 0))


async def test_slow_client_is_closed_with_1013_and_others_keep_receiving() -> None:
    state = State()
    app = web_app(state, push=push_settings(interval=0.001, backlog=32 * 1024))
    hub = app[HUB]
    items = [f"hot:{n}" for n in range(MAX_ITEMS)]
    async with TestClient(TestServer(app)) as http:
        assert http.port is not None
        slow = await RawSocketClient.connect(http.port)
        await slow.send_text(orjson.dumps({"op": "subscribe", "items": items}).decode())
        async with http.ws_connect("/ws") as fast:
            await send(fast, "subscribe", ["hot:0"])
            assert await frame(fast) == likes("hot:0", 0)
            offset = 0
            before = await _dropped(http)
            # The slow client reads nothing: its socket's buffers and then its backlog fill up.
            while await _dropped(http) == before:
                offset += 1
                assert offset < 200_000, "the slow client was never dropped"
                for item in items:
                    hub.update(item, CountRow(offset, offset))
                # Paced by the fast client: it gets every change while the slow one lags.
                while (await frame(fast))["likes"] != offset:
                    pass
            for more in range(offset + 1, offset + 4):
                hub.update("hot:0", CountRow(more, more))
                assert await frame(fast) == likes("hot:0", more)
        newest, code = await asyncio.wait_for(slow.read_until_close(), LIMIT)
        assert code == 1013
        assert newest <= offset  # nothing written to it once it was found too slow
        slow.writer.close()
        await no_subscribers(hub)


async def _dropped(http: TestClient) -> float:
    """Slow clients dropped so far, from the worker's own metrics."""
    resp = await http.get("/metrics")
    for line in (await resp.text()).splitlines():
        if line.startswith("likestream_dropped_clients_total "):
            return float(line.split()[-1])
    return 0.0


async def no_subscribers(hub: Hub) -> None:
    """The server notices closed connections on its own schedule: wait for it."""
    async with asyncio.timeout(LIMIT):
        while True:
            if not hub.subscribers():
                return
            await asyncio.sleep(0.01)


# -- the page and dev tokens -----------------------------------------------------


async def test_page_and_its_modules_are_served_with_a_page_csp(client: TestClient) -> None:
    resp = await client.get("/")
    assert resp.status == 200
    assert '<script type="module" src="/static/app.js">' in await resp.text()
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    resp = await client.get("/static/app.js")
    assert resp.status == 200
    assert resp.content_type == "text/javascript"
    for bad in ("/static/..%2F_page.py", "/static/.hidden", "/static/nope.js"):
        resp = await client.get(bad)
        assert resp.status == 404, bad
        assert (await resp.json())["error"]["code"] == "not_found"


async def test_the_like_button_module_loads_from_any_origin(client: TestClient) -> None:
    # <script type="module"> fetches with CORS, and so does each import of the module.
    source = await (await client.get("/static/like-button.js")).text()
    imports = re.findall(r'^import .* from "\./([\w-]+\.js)";$', source, re.MULTILINE)
    assert imports == ["api.js", "feed.js"]
    for name in ["like-button.js", *imports]:
        resp = await client.get(f"/static/{name}", headers={"Origin": "https://blog.example"})
        assert resp.status == 200, name
        assert resp.content_type == "text/javascript"
        assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_dev_token_mints_a_token_the_write_api_takes(client: TestClient) -> None:
    resp = await client.post("/dev/token", json={"user_id": "alice"})
    assert resp.status == 200
    body = await resp.json()
    assert (body["user_id"], body["expires_in"]) == ("alice", 900)
    resp = await client.post(
        "/items/post:9/like", headers={"Authorization": f"Bearer {body['token']}"}
    )
    assert resp.status == 202
    for bad in ({"user_id": "no spaces"}, {}, [1]):
        resp = await client.post("/dev/token", json=bad)
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_user_id"


async def test_no_dev_tokens_unless_asked() -> None:
    writes = writes_of(Publisher(), RateLimiter(1, 1), timeout=1)
    async with TestClient(TestServer(web_app(State(), writes, auth=AUTH))) as http:
        resp = await http.post("/dev/token", json={"user_id": "alice"})
        assert resp.status in (404, 405)


# -- the like-counts records the tail reads -------------------------------------------


def counts_record(value: bytes | None, headers: list[tuple[str, bytes]]) -> ConsumerRecord:  # type: ignore[type-arg]
    return ConsumerRecord("like-counts", 0, 5, 0, 0, b"post:9", value, None, 0, 0, headers)


def test_counts_records_are_parsed_and_anything_else_ignored() -> None:
    good = b'{"item_id": "post:9", "likes": 3}'
    offset = [("source-offset", b"41")]
    assert parse_count(counts_record(good, offset)) == ("post:9", CountRow(3, 41))
    for value, headers in [
        (good, []),
        (good, [("source-offset", b"x")]),
        (None, offset),
        (b"not json", offset),
        (b'{"item_id": "bad id", "likes": 3}', offset),
        (b'{"item_id": "post:9", "likes": "3"}', offset),
        (b'{"item_id": "post:9", "likes": true}', offset),
        (b'{"item_id": "post:9"}', offset),
        (b"[1]", offset),
    ]:
        assert parse_count(counts_record(value, headers)) is None, (value, headers)
