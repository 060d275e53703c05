"""Live counts over WebSocket (``GET /ws``) and Server-Sent Events (``GET /items/{id}/events``).

Each connection is a :class:`~._hub.Subscriber`; the hub writes count frames straight to
its socket once per interval (``_hub.py``), so a connection costs no task or queue of
its own beyond its handler, which reads the client's frames (WebSocket) or writes
keep-alive comments (SSE). A client whose socket stops taking frames is ended (WebSocket
close code 1013) and counted, and it never held anyone else up.

Before a connection is accepted: the Origin check (``_headers.check_origin``) and the
caps of ``_admission.py``; a subscribe past ``LIKESTREAM_PUSH_MAX_SUBSCRIPTIONS`` is
refused with an error frame (SSE: 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import HttpVersion11, WSMsgType, web

from likestream.domain._schema import is_valid_id
from likestream.runtime._metrics import (
    DROPPED_CLIENTS,
    PUSH_REFUSED,
    SSE_CONNECTIONS,
    WS_CONNECTIONS,
    push_connection_ended,
)

from ._admission import Admission
from ._errors import ApiError
from ._errors import error_frame as _error
from ._headers import check_origin, stream_headers
from ._hub import Full, Hub, Kind, Subscriber
from ._limits import RateLimiter
from ._trending import TRENDING, ClientTrending
from ._views import _id
from ._wire import sse_bytes

__all__ = ["HUB", "PUSH", "PUSH_PATHS", "PushSettings", "push_ctx", "push_routes"]

log = logging.getLogger(__name__)

MAX_FRAME = 16 * 1024  # a subscribe of 100 ids of 128 characters fits
HARD_MAX_FRAME = 64 * 1024  # aiohttp closes the connection (1009) above this
CLIENT_RATE, CLIENT_BURST = 10.0, 20  # client frames per second, and at once
# A fixed kernel send buffer per push socket (instead of autotuning up to
# megabytes): bounded memory per client, and a stalled client shows up as a
# full backlog after kilobytes rather than megabytes.
SEND_BUFFER = 64 * 1024
RESEED_SECONDS = 1.0
TRY_AGAIN_LATER = 1013
FULL_RETRY_AFTER = {"Retry-After": "5"}


@dataclass(frozen=True)
class PushSettings:
    interval: float
    """Seconds between two frames of one item to one client."""
    max_items: int
    """Items one WebSocket connection may be subscribed to."""
    backlog: int
    """Bytes written to a client and not yet taken by its socket before it is too slow."""
    heartbeat: float
    """WebSocket ping interval and SSE keep-alive interval, seconds."""
    max_connections: int = 0
    """Push connections of this process at once; 0: no cap."""
    max_per_address: int = 0
    """Push connections from one client address at once; 0: no cap."""
    max_subscriptions: int = 0
    """(connection, item) subscriptions of this process at once; 0: no cap."""


PUSH = web.AppKey("push", PushSettings)
HUB = web.AppKey("hub", Hub)
ADMISSION = web.AppKey("push_admission", Admission)
_OPEN = web.AppKey("push_open", set[asyncio.Task[Any]])

push_routes = web.RouteTableDef()


async def push_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the reseeding loop runs with the app (the hub is fed by ``_feeds.py``)."""
    hub = app[HUB]
    tasks = [asyncio.create_task(_reseed_forever(hub))]
    yield
    opened: set[asyncio.Task[Any]] = app[_OPEN]
    for task in [*tasks, *opened]:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    hub.close()


async def _on_shutdown(app: web.Application) -> None:
    # Open pushes would keep the server waiting: end them when it shuts down.
    opened: set[asyncio.Task[Any]] = app[_OPEN]
    for task in list(opened):
        task.cancel()


def install(app: web.Application, push: PushSettings, hub: Hub) -> None:
    app[PUSH] = push
    app[HUB] = hub
    app[ADMISSION] = Admission(push.max_connections, push.max_per_address)
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


def _small_send_buffer(request: web.Request) -> None:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)


def _address(request: web.Request) -> str:
    # The TCP peer (aiohttp's remote without a forwarding middleware), never a header.
    return request.remote or "unknown"


async def _served(request: web.Request, kind: str, sub: Subscriber, body: Awaitable[None]) -> None:
    """Run ``body`` until it ends, the client is ended (:meth:`Subscriber.end` cancels the
    handler's task) or the server shuts down; counted and cancellable at shutdown."""
    task = asyncio.current_task()
    assert task is not None
    request.app[_OPEN].add(task)
    connections = WS_CONNECTIONS if kind == "ws" else SSE_CONNECTIONS
    connections.inc()
    began = time.perf_counter()
    try:
        await body
    except asyncio.CancelledError:
        if sub.ended is None:
            raise  # shutdown
        task.uncancel()  # the hub ended the client: close it below
    except ConnectionError:
        pass  # the client went away
    finally:
        connections.dec()
        push_connection_ended(kind, time.perf_counter() - began)
        request.app[_OPEN].discard(task)


# -- WebSocket ---------------------------------------------------------------


@push_routes.get("/ws")
async def websocket(request: web.Request) -> web.WebSocketResponse:
    check_origin(request)
    push, hub, admission = request.app[PUSH], request.app[HUB], request.app[ADMISSION]
    # No compression: the hub writes frames it encoded once, as they are (``_wire.py``).
    ws = web.WebSocketResponse(
        heartbeat=push.heartbeat, max_msg_size=HARD_MAX_FRAME, compress=False
    )
    stream_headers(request, ws)
    await ws.prepare(request)  # a bad handshake raises here, before anything is counted
    address = _address(request)
    refused = admission.enter(address)
    if refused is not None:
        # A browser sees no status of a refused handshake, but it sees a close code.
        PUSH_REFUSED.labels(refused).inc()
        await ws.close(code=TRY_AGAIN_LATER, message=_full_message(refused).encode())
        return ws
    try:
        await _serve_ws(request, ws, push, hub)
    finally:
        admission.leave(address)
    return ws


def _full_message(reason: str) -> str:
    if reason == "address":
        return "too many live connections from this address"
    return f"this server holds all the live {reason} it can; try another or later"


async def _serve_ws(
    request: web.Request, ws: web.WebSocketResponse, push: PushSettings, hub: Hub
) -> None:
    _small_send_buffer(request)
    assert request.transport is not None
    sub = Subscriber(Kind.WS, request.transport, push.backlog, asyncio.current_task())
    board = request.app.get(TRENDING)
    trends = ClientTrending(board, sub, push.interval) if board is not None else None
    try:
        await _served(request, "ws", sub, _read_ws(ws, sub, hub, push, trends))
    finally:
        hub.drop(sub)
        if trends is not None:
            trends.close()
    if sub.ended == "slow":
        DROPPED_CLIENTS.inc()
        log.info("push client too slow: closing with 1013")
        await _close_slow(request, ws, push.heartbeat)


async def _close_slow(request: web.Request, ws: web.WebSocketResponse, grace: float) -> None:
    # The close frame queues behind what the client has not read yet: give it a
    # heartbeat's time to read up to it, then cut the connection.
    try:
        async with asyncio.timeout(grace):
            await ws.close(code=TRY_AGAIN_LATER, message=b"too slow: frames were piling up")
    except TimeoutError:
        if request.transport is not None:
            request.transport.abort()


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
            sub.send_text(_error("rate_limited", f"at most {CLIENT_RATE:g} frames per second"))
        elif msg.type != WSMsgType.TEXT:
            sub.send_text(_error("invalid_frame", "expected JSON text frames"))
        elif len(msg.data) > MAX_FRAME:
            sub.send_text(_error("frame_too_large", f"frames are at most {MAX_FRAME} bytes"))
        else:
            _handle(msg.data, sub, hub, push.max_items, trends)
        if sub.ended is not None:
            break  # ended by a write of this very task (nothing cancelled it): close it


TRENDING_OPS = ("subscribe_trending", "unsubscribe_trending")


def _handle(
    data: str, sub: Subscriber, hub: Hub, max_items: int, trends: ClientTrending | None = None
) -> None:
    try:
        frame = orjson.loads(data)
    except orjson.JSONDecodeError:
        sub.send_text(_error("invalid_json", "frames must be JSON objects"))
        return
    if isinstance(frame, dict) and frame.get("op") in TRENDING_OPS and trends is not None:
        trends.handle(frame)
        return
    if not isinstance(frame, dict) or frame.get("op") not in ("subscribe", "unsubscribe"):
        sub.send_text(
            _error(
                "invalid_op",
                'expected {"op": "subscribe"|"unsubscribe", "items": [...]} or '
                '{"op": "subscribe_trending"|"unsubscribe_trending", "window": "1h"}',
            )
        )
        return
    items = frame.get("items")
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        sub.send_text(_error("invalid_items", "items must be a non-empty list of item ids"))
        return
    bad = next((i for i in items if not is_valid_id(i)), None)
    if bad is not None:
        sub.send_text(_error("invalid_item_id", f"invalid item id {bad[:140]!r}: nothing changed"))
        return
    wanted = list(dict.fromkeys(items))
    if frame["op"] == "unsubscribe":
        _unsubscribe(wanted, sub, hub)
    elif len(sub.items | set(wanted)) > max_items:
        sub.send_text(
            _error(
                "too_many_items",
                f"at most {max_items} items per connection: nothing subscribed",
            )
        )
    else:
        try:
            hub.subscribe(sub, wanted)
        except Full as exc:
            PUSH_REFUSED.labels("subscriptions").inc()
            sub.send_text(_error("server_full", f"{exc}: nothing subscribed; try later"))


def _unsubscribe(items: list[str], sub: Subscriber, hub: Hub) -> None:
    unknown = [i for i in items if i not in sub.items]
    hub.unsubscribe(sub, items)
    if unknown:
        sub.send_text(_error("not_subscribed", f"not subscribed to {', '.join(unknown)[:300]}"))


# -- Server-Sent Events ------------------------------------------------------

KEEP_ALIVE = b": keep-alive\n\n"


@push_routes.get("/items/{item_id}/events")
async def events(request: web.Request) -> web.StreamResponse:
    item = _id(request, "item_id")  # before the stream starts: a JSON 400
    check_origin(request)
    push, hub, admission = request.app[PUSH], request.app[HUB], request.app[ADMISSION]
    address = _address(request)
    refused = "subscriptions" if not hub.room(1) else admission.enter(address)
    if refused is not None:
        PUSH_REFUSED.labels(refused).inc()
        raise ApiError(503, "server_full", _full_message(refused), FULL_RETRY_AFTER)
    try:
        return await _serve_sse(request, item, push, hub)
    finally:
        admission.leave(address)


async def _serve_sse(
    request: web.Request, item: str, push: PushSettings, hub: Hub
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # proxies must not buffer the stream
        }
    )
    if request.version >= HttpVersion11:
        response.enable_chunked_encoding()  # explicit: the hub frames its events to match
    stream_headers(request, response)
    await response.prepare(request)
    _small_send_buffer(request)
    await response.write(b"retry: 2000\n\n")  # also sends the headers: raw writes follow
    assert request.transport is not None
    kind = Kind.SSE_CHUNKED if response.chunked else Kind.SSE
    sub = Subscriber(kind, request.transport, push.backlog, asyncio.current_task())
    last = _last_event_id(request)
    if last is not None:
        sub.sent[item] = last  # the client has the count at that offset
    try:
        hub.subscribe(sub, [item])
        keep_alive = sse_bytes(KEEP_ALIVE, chunked=kind is Kind.SSE_CHUNKED)
        await _served(request, "sse", sub, _keep_alive(sub, keep_alive, push.heartbeat))
    except Full:
        PUSH_REFUSED.labels("subscriptions").inc()  # filled up since the check: end it
    finally:
        hub.drop(sub)
    if sub.ended == "slow":
        DROPPED_CLIENTS.inc()
        if request.transport is not None:
            request.transport.abort()
    return response


def _last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID", "")
    return int(raw) if raw.isdigit() and len(raw) < 19 else None


async def _keep_alive(sub: Subscriber, comment: bytes, interval: float) -> None:
    # A comment keeps proxies from timing the stream out and finds dead peers.
    while sub.ended is None:  # the first count's write may have ended it already
        await asyncio.sleep(interval)
        sub.write(comment)


PUSH_PATHS = frozenset(r.path for r in push_routes if isinstance(r, web.RouteDef))
"""Routes of live connections: they last as long as the client stays, so they are left out
of the request-duration histogram (``_app.py``) and timed by their own."""
