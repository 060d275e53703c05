"""Trending for readers: ``GET /trending`` and the WebSocket's trending subscriptions.

Every process reads the compacted trending topic from its beginning and then
follows it (``_tail.py``): per window and partition, the top items the owning
worker published last (``likestream/domain/_top.py``). An answer merges the partitions
of the window in memory: a sort of at most partitions x 100 entries, no table
read, so any process (a worker or a gateway) answers for every partition.
Staleness: the owner publishes at most once per ``LIKESTREAM_TRENDING_INTERVAL_MS``
(1 s), plus the time to read the topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

from likestream.domain._top import PartitionTop, merge_tops
from likestream.domain._window_spec import Window

from ._errors import ApiError, error_frame
from ._hub import Subscriber
from ._json import json_reply

__all__ = [
    "MAX_LIMIT",
    "TRENDING",
    "Board",
    "ClientTrending",
    "TrendingSettings",
    "trending_routes",
]

MAX_LIMIT = 100  # what each partition publishes (agents._trending.MAX_TOP)
DEFAULT_LIMIT = 10


@dataclass(frozen=True)
class TrendingSettings:
    windows: tuple[Window, ...]


class Board:
    """The newest top items of every window and partition, and who watches which window."""

    def __init__(self, windows: tuple[Window, ...]) -> None:
        self.windows = {w.name: w for w in windows}
        self._tops: dict[tuple[str, int], PartitionTop] = {}
        self._watchers: dict[str, set[Callable[[], None]]] = {}

    def update(self, top: PartitionTop) -> None:
        if top.window not in self.windows:
            return  # a window this process is not configured for
        known = self._tops.get((top.window, top.partition))
        if known is not None and top.stamp < known.stamp:
            return  # an earlier owner's, read late
        self._tops[(top.window, top.partition)] = top
        for changed in list(self._watchers.get(top.window, ())):
            changed()

    def top(self, window: str, limit: int) -> list[tuple[str, int]]:
        tops = [t for (w, _), t in self._tops.items() if w == window]
        return merge_tops(self.windows[window], tops, limit)

    def watch(self, window: str, changed: Callable[[], None]) -> None:
        self._watchers.setdefault(window, set()).add(changed)

    def unwatch(self, window: str, changed: Callable[[], None]) -> None:
        self._watchers.get(window, set()).discard(changed)

    def window_named(self, name: object) -> str:
        """The window asked for, or a 400 naming the configured ones."""
        if not isinstance(name, str) or name not in self.windows:
            raise ApiError(
                400, "invalid_window", f"window must be one of {', '.join(self.windows)}"
            )
        return name

    @property
    def default_window(self) -> str:
        return "1h" if "1h" in self.windows else next(iter(self.windows))


def parse_limit(raw: object) -> int:
    if isinstance(raw, str) and raw.isdigit() and len(raw) < 4:
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_LIMIT:
        raise ApiError(400, "invalid_limit", f"limit must be an integer from 1 to {MAX_LIMIT}")
    return raw


def render(window: str, items: list[tuple[str, int]]) -> dict[str, object]:
    return {
        "window": window,
        "items": [{"item_id": item, "likes": likes} for item, likes in items],
    }


TRENDING = web.AppKey("trending", Board)

trending_routes = web.RouteTableDef()


@trending_routes.get("/trending")
async def trending(request: web.Request) -> web.Response:
    board = request.app[TRENDING]
    window = board.window_named(request.query.get("window", board.default_window))
    limit = parse_limit(request.query.get("limit", str(DEFAULT_LIMIT)))
    return json_reply(render(window, board.top(window, limit)))


def install(app: web.Application, settings: TrendingSettings) -> Board:
    board = Board(settings.windows)
    app[TRENDING] = board
    app.add_routes(trending_routes)
    return board


class _Watch:
    """One client's subscription to one window: at most one frame per interval, and only
    when the top items it would get differ from the last ones sent."""

    def __init__(
        self, board: Board, sub: Subscriber, window: str, limit: int, interval: float
    ) -> None:
        self.board, self.sub, self.window, self.limit = board, sub, window, limit
        self._interval = interval
        self._sent: list[tuple[str, int]] | None = None
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def changed(self) -> None:
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(max(loop.time(), self._due), self.flush)

    def flush(self, force: bool = False) -> None:
        self._timer = None
        self._due = asyncio.get_running_loop().time() + self._interval
        items = self.board.top(self.window, self.limit)
        if force or items != self._sent:
            self._sent = items
            frame = {"type": "trending", **render(self.window, items)}
            self.sub.send_text(orjson.dumps(frame).decode())

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class ClientTrending:
    """The trending subscriptions of one WebSocket client."""

    def __init__(self, board: Board, sub: Subscriber, interval: float) -> None:
        self._board = board
        self._sub = sub
        self._interval = interval
        self._watches: dict[str, _Watch] = {}

    def handle(self, frame: dict[str, object]) -> None:
        """``subscribe_trending`` / ``unsubscribe_trending`` of one window; errors as frames."""
        try:
            window = self._board.window_named(frame.get("window"))
            if frame["op"] == "unsubscribe_trending":
                self._unsubscribe(window)
            else:
                self._subscribe(window, parse_limit(frame.get("limit", DEFAULT_LIMIT)))
        except ApiError as exc:
            self._sub.send_text(error_frame(exc.code, exc.message))

    def close(self) -> None:
        for window in list(self._watches):
            self._unsubscribe(window)

    def _subscribe(self, window: str, limit: int) -> None:
        # Subscribing again (another limit) replaces the subscription and sends at once.
        if window in self._watches:
            self._unsubscribe(window)
        watch = _Watch(self._board, self._sub, window, limit, self._interval)
        self._watches[window] = watch
        self._board.watch(window, watch.changed)
        watch.flush(force=True)  # the current top items first, even when empty

    def _unsubscribe(self, window: str) -> None:
        watch = self._watches.pop(window, None)
        if watch is None:
            raise ApiError(400, "not_subscribed", f"not subscribed to trending {window}")
        self._board.unwatch(window, watch.changed)
        watch.close()
