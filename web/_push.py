"""Live counts over WebSocket (``GET /ws``) and Server-Sent Events (``GET /items/{id}/events``).

Each connection is a :class:`~._hub.Subscriber`: fan-out only marks items dirty,
a per-client timer turns them into at most one frame per item per interval, and
one task writes the bounded queue to the socket. When the queue is full the
client cannot keep up: it is closed (WebSocket code 1013) and counted, and it
never held anyone else up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from likestream._metrics import DROPPED_CLIENTS, PUSHES, SSE_CONNECTIONS, WS_CONNECTIONS
from likestream._schema import is_valid_id

from ._errors import error_frame as _error
from ._hub import Hub, Stamp, Subscriber
from ._limits import RateLimiter
from ._tail import tail_counts
from ._trending import TRENDING, ClientTrending
from ._views import _id

__all__ = ["HUB", "PUSH", "PushSettings", "push_ctx", "push_routes"]

log = logging.getLogger(__name__)

MAX_FRAME = 16 * 1024  # a subscribe of 100 ids of 128 characters fits
HARD_MAX_FRAME = 64 * 1024  # aiohttp closes the connection (1009) above this
CLIENT_RATE, CLIENT_BURST = 10.0, 20  # client frames per second, and at once
# A fixed kernel send buffer per push socket (instead of autotuning up to
# megabytes): bounded memory per client, and a stalled client shows up as a
# full queue after kilobytes rather than megabytes.
SEND_BUFFER = 64 * 1024
RESEED_SECONDS = 1.0
TRY_AGAIN_LATER = 1013


@dataclass(frozen=True)
class PushSettings:
    interval: float
    """Seconds between two frames of one item to one client."""
    max_items: int
    queue: int
    heartbeat: float
    """WebSocket ping interval and SSE keep-alive interval, seconds."""
    kafka: str | None = None
    """Where to tail the counts topic; None: no tail (unit tests feed the hub)."""
    counts_topic: str = "like-counts"
    partitions: int = 1


PUSH = web.AppKey("push", PushSettings)
HUB = web.AppKey("hub", Hub)
_OPEN = web.AppKey("push_open", set[asyncio.Task[Any]])

push_routes = web.RouteTableDef()


async def push_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the tail of the counts topic and the reseeding loop run with the app."""
    push, hub = app[PUSH], app[HUB]
    tasks = [asyncio.create_task(_reseed_forever(hub))]
    if push.kafka is not None:
        tail = tail_counts(push.kafka, push.counts_topic, push.partitions, hub)
        tasks.append(asyncio.create_task(tail))
    yield
    opened: set[asyncio.Task[Any]] = app[_OPEN]
    for task in [*tasks, *opened]:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _on_shutdown(app: web.Application) -> None:
    # Open pushes would keep the server waiting: end them when it shuts down.
    opened: set[asyncio.Task[Any]] = app[_OPEN]
    for task in list(opened):
        task.cancel()


def install(app: web.Application, push: PushSettings, hub: Hub) -> None:
    app[PUSH] = push
    app[HUB] = hub
    app[_OPEN] = set()
    app.add_routes(push_routes)
    app.cleanup_ctx.append(push_ctx)
    app.on_shutdown.append(_on_shutdown)


async def _reseed_forever(hub: Hub) -> None:
    # Polls table state and the replica for subscribed items that had no count yet
    # (recovering, or the partition not read to its end yet).
    while True:
        await asyncio.sleep(RESEED_SECONDS)
        hub.reseed()


def _ws_frame(item: str, stamp: Stamp) -> str:
    return orjson.dumps({"type": "likes", "item_id": item, "likes": stamp.likes}).decode()


def _sse_frame(item: str, stamp: Stamp) -> str:
    data = orjson.dumps({"item_id": item, "likes": stamp.likes}).decode()
    # The id is the source offset: a reconnecting EventSource sends it back.
    return f"id: {stamp.offset}\nevent: likes\ndata: {data}\n\n"


def _small_send_buffer(request: web.Request) -> None:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)


async def _first_done(*aws: Coroutine[Any, Any, object]) -> None:
    """Run until the first finishes, then cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _tracked(request: web.Request, kind: str, body: Awaitable[None]) -> None:
    task = asyncio.current_task()
    assert task is not None
    request.app[_OPEN].add(task)
    connections = WS_CONNECTIONS if kind == "ws" else SSE_CONNECTIONS
    connections.inc()
    try:
        await body
    finally:
        connections.dec()
        request.app[_OPEN].discard(task)


# -- WebSocket ---------------------------------------------------------------


@push_routes.get("/ws")
async def websocket(request: web.Request) -> web.WebSocketResponse:
    push, hub = request.app[PUSH], request.app[HUB]
    ws = web.WebSocketResponse(heartbeat=push.heartbeat, max_msg_size=HARD_MAX_FRAME)
    await ws.prepare(request)
    _small_send_buffer(request)
    sub = Subscriber(_ws_frame, push.interval, push.queue)
    board = request.app.get(TRENDING)
    trends = ClientTrending(board, sub, push.interval) if board is not None else None
    try:
        await _tracked(request, "ws", _serve_ws(ws, sub, hub, push, trends))
    finally:
        hub.drop(sub)
        if trends is not None:
            trends.close()
    if sub.overflow.is_set():
        DROPPED_CLIENTS.inc()
        log.info("push client too slow: closing with 1013")
        await _close_slow(request, ws, push.heartbeat)
    return ws


async def _serve_ws(
    ws: web.WebSocketResponse,
    sub: Subscriber,
    hub: Hub,
    push: PushSettings,
    trends: ClientTrending | None,
) -> None:
    await _first_done(_read_ws(ws, sub, hub, push, trends), _write_ws(ws, sub), sub.overflow.wait())


async def _close_slow(request: web.Request, ws: web.WebSocketResponse, grace: float) -> None:
    # The close frame queues behind what the client has not read yet: give it a
    # heartbeat's time to read up to it, then cut the connection.
    try:
        async with asyncio.timeout(grace):
            await ws.close(code=TRY_AGAIN_LATER, message=b"too slow: frames were piling up")
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()


async def _write_ws(ws: web.WebSocketResponse, sub: Subscriber) -> None:
    while True:
        frame = await sub.queue.get()
        await ws.send_str(frame)
        PUSHES.inc()


async def _read_ws(
    ws: web.WebSocketResponse,
    sub: Subscriber,
    hub: Hub,
    push: PushSettings,
    trends: ClientTrending | None,
) -> None:
    limiter = RateLimiter(CLIENT_RATE, CLIENT_BURST)
    async for msg in ws:
        if msg.type == WSMsgType.ERROR:
            break
        if limiter.take("") > 0:
            sub.put(_error("rate_limited", f"at most {CLIENT_RATE:g} frames per second"))
        elif msg.type != WSMsgType.TEXT:
            sub.put(_error("invalid_frame", "expected JSON text frames"))
        elif len(msg.data) > MAX_FRAME:
            sub.put(_error("frame_too_large", f"frames are at most {MAX_FRAME} bytes"))
        else:
            _handle(msg.data, sub, hub, push.max_items, trends)


TRENDING_OPS = ("subscribe_trending", "unsubscribe_trending")


def _handle(
    data: str, sub: Subscriber, hub: Hub, max_items: int, trends: ClientTrending | None = None
) -> None:
    try:
        frame = orjson.loads(data)
    except orjson.JSONDecodeError:
        sub.put(_error("invalid_json", "frames must be JSON objects"))
        return
    if isinstance(frame, dict) and frame.get("op") in TRENDING_OPS and trends is not None:
        trends.handle(frame)
        return
    if not isinstance(frame, dict) or frame.get("op") not in ("subscribe", "unsubscribe"):
        sub.put(
            _error(
                "invalid_op",
                'expected {"op": "subscribe"|"unsubscribe", "items": [...]} or '
                '{"op": "subscribe_trending"|"unsubscribe_trending", "window": "1h"}',
            )
        )
        return
    items = frame.get("items")
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        sub.put(_error("invalid_items", "items must be a non-empty list of item ids"))
        return
    bad = next((i for i in items if not is_valid_id(i)), None)
    if bad is not None:
        sub.put(_error("invalid_item_id", f"invalid item id {bad[:140]!r}: nothing changed"))
        return
    wanted = list(dict.fromkeys(items))
    if frame["op"] == "unsubscribe":
        _unsubscribe(wanted, sub, hub)
    elif len(sub.items | set(wanted)) > max_items:
        sub.put(
            _error(
                "too_many_items",
                f"at most {max_items} items per connection: nothing subscribed",
            )
        )
    else:
        hub.subscribe(sub, wanted)


def _unsubscribe(items: list[str], sub: Subscriber, hub: Hub) -> None:
    unknown = [i for i in items if i not in sub.items]
    hub.unsubscribe(sub, items)
    if unknown:
        sub.put(_error("not_subscribed", f"not subscribed to {', '.join(unknown)[:300]}"))


# -- Server-Sent Events ------------------------------------------------------


@push_routes.get("/items/{item_id}/events")
async def events(request: web.Request) -> web.StreamResponse:
    item = _id(request, "item_id")  # before the stream starts: a JSON 400
    push, hub = request.app[PUSH], request.app[HUB]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # proxies must not buffer the stream
        }
    )
    await response.prepare(request)
    _small_send_buffer(request)
    sub = Subscriber(_sse_frame, push.interval, push.queue)
    last = _last_event_id(request)
    if last is not None:
        sub.skip_up_to(item, last)
    try:
        await response.write(b"retry: 2000\n\n")
        hub.subscribe(sub, [item])
        await _tracked(request, "sse", _serve_sse(response, sub, push.heartbeat))
    except ConnectionError:
        pass  # the client went away
    finally:
        hub.drop(sub)
    if sub.overflow.is_set():
        DROPPED_CLIENTS.inc()
    return response


def _last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID", "")
    return int(raw) if raw.isdigit() and len(raw) < 19 else None


async def _serve_sse(response: web.StreamResponse, sub: Subscriber, keep_alive: float) -> None:
    await _first_done(_write_sse(response, sub, keep_alive), sub.overflow.wait())


async def _write_sse(response: web.StreamResponse, sub: Subscriber, keep_alive: float) -> None:
    while True:
        try:
            async with asyncio.timeout(keep_alive):
                frame = await sub.queue.get()
        except TimeoutError:
            # A comment keeps proxies from timing the stream out and finds dead peers.
            await response.write(b": keep-alive\n\n")
            continue
        await response.write(frame.encode())
        PUSHES.inc()
