"""Async client for applications: the HTTP and WebSocket API of a worker or gateway.

Example::

    import asyncio
    from likestream.api_client import ApiClient

    async def main() -> None:
        async with ApiClient("http://localhost:6066", token="<JWT of alice>") as api:
            await api.like("post:9")                  # 202 once Kafka acknowledged it
            print(await api.count("post:9"))          # an int (with .stale_ms)
            print(await api.counts(["post:9", "post:10"]))
            async with api.subscribe(["post:9"]) as feed:
                async for update in feed:             # LikesUpdate, Trending, FeedError
                    print(update)

    asyncio.run(main())

Every call retries what is worth retrying: a 429 after its ``Retry-After`` (or raises
:class:`RateLimited` when ``RetryPolicy(wait_on_429=False)``), a 503 or a failed connection
with capped, jittered backoff that honours ``Retry-After``; at most
``RetryPolicy.attempts`` tries. Writes are safe to retry: a like is a membership, the same
like twice is one like. Other refusals raise at once as :class:`ApiError` subclasses
carrying the status, the error ``code`` and ``message``.

Unlike :mod:`likestream.client` (a Kafka producer for trusted back ends, no tokens), this
client goes through the public API: tokens, rate limits, CORS-free server-side use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from likestream.domain._api_types import (
    ApiError,
    BadRequest,
    Count,
    Counts,
    FeedError,
    Forbidden,
    LikesUpdate,
    Membership,
    RateLimited,
    RetryPolicy,
    Trending,
    TrendingItem,
    Unauthorized,
    Unavailable,
    Unreachable,
    Update,
    api_error,
)
from likestream.domain._retry import Backoff, parse_retry_after
from likestream.domain._schema import is_valid_id
from likestream.runtime._live import Feed, FeedClosed, Subscriptions

__all__ = [
    "ApiClient",
    "ApiError",
    "Backoff",
    "BadRequest",
    "Count",
    "Counts",
    "Feed",
    "FeedClosed",
    "FeedError",
    "Forbidden",
    "LikesUpdate",
    "Membership",
    "RateLimited",
    "RetryPolicy",
    "Subscriptions",
    "Trending",
    "TrendingItem",
    "Unauthorized",
    "Unavailable",
    "Unreachable",
    "Update",
]

MAX_BATCH = 100  # the server's limit of items per GET /likes (web/_views.py)
STALE_MS = "X-Likestream-Stale-Ms"
TokenProvider = Callable[[], Awaitable[str]]


def _checked(item: str, what: str = "item id") -> str:
    if not isinstance(item, str) or not is_valid_id(item):
        raise ValueError(f"invalid {what} {item!r}: 1-128 characters of [A-Za-z0-9._:@-]")
    return item


def _stale_ms(headers: Any) -> int | None:
    raw = headers.get(STALE_MS)
    return int(raw) if raw is not None and raw.isdigit() else None


class ApiClient:
    """The likestream API for one base URL (a worker, a gateway, or the Ingress in front).

    ``token`` is the Bearer JWT of the user the application acts for; or ``token_provider``,
    an async callable asked before every request that needs one (so it can refresh tokens).
    Reads of counts and trending need none; writes and membership reads do. Use as
    ``async with``; a ``session`` passed in is used and left open.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
        reconnect: Backoff | None = None,
        heartbeat: float = 30.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if token is not None and token_provider is not None:
            raise ValueError("give token or token_provider, not both")
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.reconnect = reconnect or Backoff(first=0.5, cap=15.0, jitter=0.5)
        """Waits between WebSocket reconnects."""
        self.heartbeat = heartbeat
        """Seconds between pings on a live feed: a dead connection is noticed within two."""
        self._token, self._provider = token, token_provider
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._own_session = session is None
        self._session = session

    async def __aenter__(self) -> ApiClient:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("ApiClient is not open: use `async with ApiClient(...)`")
        return self._session

    # -- writes --------------------------------------------------------------

    async def like(self, item: str, *, token: str | None = None) -> str:
        """Like ``item`` as the token's user; returns the event id once Kafka acknowledged
        it. Liking an item already liked changes nothing (and is not an error)."""
        path = f"/items/{_checked(item)}/like"
        body, _ = await self._call("POST", path, auth=True, token=token)
        return str(body["event_id"])

    async def unlike(self, item: str, *, token: str | None = None) -> str:
        """Take the token's user's like of ``item`` back; returns the event id."""
        path = f"/items/{_checked(item)}/like"
        body, _ = await self._call("DELETE", path, auth=True, token=token)
        return str(body["event_id"])

    # -- reads ---------------------------------------------------------------

    async def count(self, item: str) -> Count:
        """``item``'s likes (0 for an item never liked)."""
        body, stale = await self._call("GET", f"/items/{_checked(item)}/likes")
        return Count(int(body["likes"]), stale)

    async def counts(self, items: Iterable[str]) -> Counts:
        """The likes of each of ``items``; any number of them, asked for in batches of the
        server's limit (100) at once."""
        wanted = list(dict.fromkeys(_checked(i) for i in items))
        batches = [wanted[at : at + MAX_BATCH] for at in range(0, len(wanted), MAX_BATCH)]
        answers = await asyncio.gather(
            *(self._call("GET", "/likes", params={"items": ",".join(b)}) for b in batches)
        )
        likes: dict[str, int] = {}
        stale: int | None = None
        for body, batch_stale in answers:
            likes.update({str(k): int(v) for k, v in body["likes"].items()})
            if batch_stale is not None:
                stale = max(stale or 0, batch_stale)
        return Counts({item: likes[item] for item in wanted}, stale)

    async def liked(self, item: str, user: str, *, token: str | None = None) -> Membership:
        """Whether ``user`` likes ``item`` (true in a boolean context when so). Needs a token
        of ``user`` unless the server makes memberships public (403 :class:`Forbidden`
        with another user's)."""
        path = f"/items/{_checked(item)}/likes/{_checked(user, 'user id')}"
        body, stale = await self._call("GET", path, auth=True, token=token)
        return Membership(item, user, bool(body["liked"]), stale)

    async def trending(self, window: str | None = None, limit: int = 10) -> Trending:
        """The ``limit`` items (1-100) with the most likes gained in ``window`` (one of the
        server's ``LIKESTREAM_TRENDING_WINDOWS``; None: its default, ``1h``)."""
        params = {"limit": str(limit)}
        if window is not None:
            params["window"] = window
        body, _ = await self._call("GET", "/trending", params=params)
        return Trending.from_json(body)

    # -- live ----------------------------------------------------------------

    def subscribe(
        self,
        items: Iterable[str] = (),
        *,
        trending: Iterable[str] = (),
        trending_limit: int = 10,
        max_reconnects: int | None = None,
    ) -> Feed:
        """A live feed of ``items``' counts and the ``trending`` windows' top items over one
        WebSocket: ``async with api.subscribe([...]) as feed: async for update in feed``.

        It reconnects by itself (capped, jittered backoff, :attr:`reconnect`) and
        resubscribes to what it follows then; each (re)subscribe first yields the current
        count. ``max_reconnects``: failed connections in a row before it gives up
        (:class:`FeedClosed`); None: never.
        """
        ws_url = "ws" + self.base_url.removeprefix("http") + "/ws"
        feed = Feed(self.session, ws_url, self.reconnect, self.heartbeat, max_reconnects)
        feed.subscriptions.add(items)
        for window in trending:
            feed.subscriptions.add_trending(window, trending_limit)
        return feed

    # -- plumbing ------------------------------------------------------------

    async def _bearer(self, token: str | None) -> dict[str, str]:
        if token is None:
            token = self._token if self._provider is None else await self._provider()
        if token is None:
            raise Unauthorized(401, "unauthorized", "this call needs a token: none was given")
        return {"Authorization": f"Bearer {token}"}

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        auth: bool = False,
        token: str | None = None,
    ) -> tuple[Any, int | None]:
        """The JSON body and staleness of a successful answer, retried as the policy says."""
        failures = 0
        while True:
            try:
                headers = await self._bearer(token) if auth else {}
                return await self._once(method, path, params, headers)
            except ApiError as exc:
                failures += 1
                wait = self.retry.wait(failures, exc)
                if wait is None:
                    raise
            await asyncio.sleep(wait)

    async def _once(
        self, method: str, path: str, params: dict[str, str] | None, headers: dict[str, str]
    ) -> tuple[Any, int | None]:
        url = self.base_url + path
        try:
            async with self.session.request(
                method, url, params=params, headers=headers, timeout=self._timeout
            ) as resp:
                raw = await resp.read()
                status, answer_headers = resp.status, resp.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unreachable(f"{method} {url}: {exc or type(exc).__name__}") from exc
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        if status >= 400:
            retry_after = parse_retry_after(answer_headers.get("Retry-After"))
            raise api_error(status, body, retry_after)
        if not isinstance(body, dict):
            raise ApiError(status, "bad_response", f"{method} {url}: not a JSON object")
        return body, _stale_ms(answer_headers)
