"""A live feed over ``GET /ws`` that survives the connection: the client side of
``web/_push.py``.

:class:`Subscriptions` (pure) holds what the application wants (items, trending windows)
and what this connection was sent; the frames to send are the difference, so a new
connection (nothing sent yet) gets the whole set again: that is the resubscribe. The server
answers every subscribe with the current count, so after a reconnect the application gets
each item's state again and misses nothing in between.

:class:`Feed` runs one WebSocket at a time: it reconnects with capped, jittered backoff when
the connection drops or the server closes it (1001 going away, 1006 abnormal, 1013 try
again later, ...), and gives up only on a handshake the server refuses for good (a 4xx
such as 403 ``origin_not_allowed``). Updates wait for the application keyed by item (or
window), so a slow reader gets the newest count of each item, never an unbounded queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from likestream.domain._api_types import FeedError, LikesUpdate, Trending, Update
from likestream.domain._retry import Backoff
from likestream.domain._schema import is_valid_id

__all__ = ["FRAME_ITEMS", "Feed", "FeedClosed", "Subscriptions", "parse_frame"]

log = logging.getLogger(__name__)

FRAME_ITEMS = 100  # ids per subscribe frame: 100 ids of 128 characters fit the server's 16 KiB
FRAME_SPACING = 0.1  # seconds between two frames: the server takes 10 a second (bursts of 20)
# A server closing with these says the client's frames are wrong: reconnecting cannot help.
FATAL_CLOSE = frozenset({1003, 1007, 1008, 1009})


def _checked(items: Iterable[str]) -> list[str]:
    items = list(dict.fromkeys(items))
    bad = next((i for i in items if not isinstance(i, str) or not is_valid_id(i)), None)
    if bad is not None:
        raise ValueError(f"invalid item id {bad!r}: 1-128 characters of [A-Za-z0-9._:@-]")
    return items


class Subscriptions:
    """What is wanted, and what the current connection was asked for."""

    def __init__(self) -> None:
        self.items: dict[str, None] = {}  # ordered: resubscribes keep the application's order
        self.windows: dict[str, int] = {}
        self._sent_items: set[str] = set()
        self._sent_windows: dict[str, int] = {}

    def add(self, items: Iterable[str]) -> None:
        self.items.update(dict.fromkeys(_checked(items)))

    def remove(self, items: Iterable[str]) -> None:
        for item in items:
            self.items.pop(item, None)

    def add_trending(self, window: str, limit: int) -> None:
        self.windows[window] = limit

    def remove_trending(self, window: str) -> None:
        self.windows.pop(window, None)

    def reset(self) -> None:
        """A new connection: nothing asked for on it yet."""
        self._sent_items.clear()
        self._sent_windows.clear()

    def frames(self) -> list[dict[str, Any]]:
        """The frames that bring the connection to what is wanted; taken as sent."""
        out: list[dict[str, Any]] = []
        gone = [i for i in self._sent_items if i not in self.items]
        new = [i for i in self.items if i not in self._sent_items]
        for op, items in (("unsubscribe", gone), ("subscribe", new)):
            for at in range(0, len(items), FRAME_ITEMS):
                out.append({"op": op, "items": items[at : at + FRAME_ITEMS]})
        for window in [w for w in self._sent_windows if w not in self.windows]:
            out.append({"op": "unsubscribe_trending", "window": window})
        for window, limit in self.windows.items():
            if self._sent_windows.get(window) != limit:
                out.append({"op": "subscribe_trending", "window": window, "limit": limit})
        self._sent_items = set(self.items)
        self._sent_windows = dict(self.windows)
        return out


def parse_frame(data: str) -> Update | None:
    """The update a server frame carries; None for a frame of a kind this client does not
    know (a newer server's)."""
    try:
        frame = orjson.loads(data)
        kind = frame.get("type")
        if kind == "likes":
            return LikesUpdate(str(frame["item_id"]), int(frame["likes"]))
        if kind == "trending":
            return Trending.from_json(frame)
        if kind == "error":
            return FeedError(str(frame.get("code", "")), str(frame.get("message", "")))
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        log.warning("ignoring a malformed push frame: %.200r", data)
    return None


class FeedClosed(Exception):
    """The feed stopped for good: the server closed it for a reason reconnecting cannot
    fix, or ``max_reconnects`` connections in a row failed."""


class Feed:
    """Live updates for a set of items and trending windows, over one WebSocket.

    ``async with client.subscribe(["post:9"]) as feed: async for update in feed: ...``;
    :meth:`add`, :meth:`remove`, :meth:`add_trending` and :meth:`remove_trending` change
    what it follows while it runs. Iteration ends when the feed is closed; it raises the
    error that stopped the feed for good (:class:`FeedClosed`, or
    :class:`aiohttp.WSServerHandshakeError` for a handshake refused with a 4xx).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        backoff: Backoff,
        heartbeat: float,
        max_reconnects: int | None = None,
    ) -> None:
        self.subscriptions = Subscriptions()
        self.connected = False
        """Whether a WebSocket is open now."""
        self.reconnects = 0
        """Connections opened after the first."""
        self._session, self._url = session, url
        self._backoff, self._heartbeat = backoff, heartbeat
        self._max_reconnects = max_reconnects
        self._pending: dict[tuple[str, str], Update] = {}
        self._errors = itertools.count()
        self._ready = asyncio.Event()  # pending updates, or the feed ended
        self._dirty = asyncio.Event()  # subscriptions changed
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._closed = False

    # -- what to follow ------------------------------------------------------

    def add(self, *items: str) -> None:
        """Follow more items: each one's current count comes first, then its changes."""
        self.subscriptions.add(items)
        self._dirty.set()

    def remove(self, *items: str) -> None:
        self.subscriptions.remove(items)
        for item in items:
            self._pending.pop(("likes", item), None)
        self._dirty.set()

    def add_trending(self, window: str, limit: int = 10) -> None:
        """Follow a trending window's top ``limit`` items (again: another limit)."""
        self.subscriptions.add_trending(window, limit)
        self._dirty.set()

    def remove_trending(self, window: str) -> None:
        self.subscriptions.remove_trending(window)
        self._pending.pop(("trending", window), None)
        self._dirty.set()

    # -- running -------------------------------------------------------------

    async def __aenter__(self) -> Feed:
        self._task = asyncio.create_task(self._run(), name="likestream-feed")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        self._ready.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def __aiter__(self) -> Feed:
        return self

    async def __anext__(self) -> Update:
        while not self._pending:
            if self._closed:
                if self._failure is not None:
                    raise self._failure
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        key = next(iter(self._pending))
        return self._pending.pop(key)

    def _deliver(self, update: Update) -> None:
        if isinstance(update, LikesUpdate):
            if update.item_id not in self.subscriptions.items:
                return  # in flight when it was removed
            key = ("likes", update.item_id)
        elif isinstance(update, Trending):
            if update.window not in self.subscriptions.windows:
                return
            key = ("trending", update.window)
        else:
            key = ("error", str(next(self._errors)))
        self._pending.pop(key, None)  # the newest goes to the back
        self._pending[key] = update
        self._ready.set()

    async def _run(self) -> None:
        failures = 0
        opened = 0
        try:
            while True:
                try:
                    ws = await self._session.ws_connect(
                        self._url, heartbeat=self._heartbeat, autoclose=True
                    )
                except aiohttp.WSServerHandshakeError as exc:
                    if 400 <= exc.status < 500 and exc.status not in (408, 429):
                        raise  # refused for good (403 origin, 404 no /ws here)
                    log.info("live feed: handshake refused (%s)", exc.status)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    log.info("live feed: cannot connect: %s", exc)
                else:
                    opened += 1
                    self.reconnects = opened - 1
                    if await self._serve(ws):
                        failures = 0  # it worked for a while: start the backoff over
                if self._max_reconnects is not None and failures >= self._max_reconnects:
                    raise FeedClosed(f"gave up after {failures} failed connections")
                delay = self._backoff.delay(failures)
                failures += 1
                log.info("live feed: reconnecting in %.2fs", delay)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failure = exc
            self._closed = True
            self._ready.set()

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Run one connection until it ends; whether any frame came from the server."""
        self.connected = True
        self.subscriptions.reset()
        self._dirty.set()
        sender = asyncio.create_task(self._send(ws))
        heard = False
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    heard = True
                    update = parse_frame(msg.data)
                    if update is not None:
                        self._deliver(update)
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    break
        finally:
            self.connected = False
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
                await sender
            if not ws.closed:
                await ws.close()
        code = ws.close_code
        log.info("live feed: connection closed (%s)", code)
        if code in FATAL_CLOSE:
            raise FeedClosed(f"the server closed the live feed with {code}: {ws.exception()}")
        return heard

    async def _send(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            for frame in self.subscriptions.frames():
                await ws.send_str(orjson.dumps(frame).decode())
                await asyncio.sleep(FRAME_SPACING)
