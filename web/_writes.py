"""The write API: like and unlike over HTTP, answered 202 only once Kafka acknowledged.

``POST /items/{item_id}/like`` and ``DELETE /items/{item_id}/like``, for the user
named by the bearer token, within that user's rate limit. The event goes to Kafka
through a :class:`Publisher` (``likestream.client.LikeClient`` in a worker, a fake
in unit tests). A 503 means "not confirmed", never "dropped for sure": the event
may still land once Kafka is back. Retrying is safe because a like is membership:
the same like twice is a no-op, and events of one process reach a partition in
the order they were sent. The user's token comes from the one bucket the user has
across all processes (``_quota.py``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from likestream.client import DeliveryError, new_event
from likestream.domain._retry import retrying
from likestream.domain._schema import Action, LikeEvent
from likestream.runtime._metrics import RATE_LIMITED, http_producer_error

from ._auth import authenticate
from ._errors import ApiError
from ._json import json_reply
from ._limits import RateLimiter
from ._quota import LIMITS, Limits, LimitSettings, LimitUnavailable
from ._views import _id

__all__ = ["MAX_BODY", "WRITES", "Publisher", "Writes", "publisher_ctx", "write_routes"]

log = logging.getLogger(__name__)

MAX_BODY = 1024  # writes need no body; a small one (e.g. "{}") is read and ignored


class Publisher(Protocol):
    """Where writes go. Started and stopped with the web app."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, event: LikeEvent) -> object:
        """Return once Kafka acknowledged ``event``; raise ``DeliveryError`` if it did not."""
        ...


@dataclass(frozen=True)
class Writes:
    publisher: Publisher
    limiter: RateLimiter
    """The buckets this process keeps: of the users whose partitions it owns."""
    timeout: float
    """Seconds to wait for Kafka's acknowledgement before answering 503."""
    limits: LimitSettings
    """Where the other users' buckets are."""


WRITES = web.AppKey("writes", Writes)

write_routes = web.RouteTableDef()


@write_routes.post("/items/{item_id}/like")
async def like(request: web.Request) -> web.Response:
    return await _write(request, "like")


@write_routes.delete("/items/{item_id}/like")
async def unlike(request: web.Request) -> web.Response:
    return await _write(request, "unlike")


async def _write(request: web.Request, action: Action) -> web.Response:
    writes = request.app[WRITES]
    user = await authenticate(request)
    item = _id(request, "item_id")
    await _read_small_body(request)
    await _take_token(request.app[LIMITS], user)
    event = new_event(user, item, action)
    await _publish(writes, event)
    return json_reply(
        {"event_id": event.event_id}, status=202, headers={"Cache-Control": "no-store"}
    )


async def _read_small_body(request: web.Request) -> None:
    too_large = ApiError(413, "too_large", f"request body over {MAX_BODY} bytes")
    if (request.content_length or 0) > MAX_BODY:
        raise too_large
    size = 0
    async for chunk in request.content.iter_any():  # chunked bodies have no length
        size += len(chunk)
        if size > MAX_BODY:
            raise too_large


async def _take_token(limits: Limits, user: str) -> None:
    try:
        wait = await limits.take(user)
    except LimitUnavailable as exc:
        log.debug("a write refused: its rate limit is unavailable: %s", exc)
        raise ApiError(
            503,
            "rate_limit_unavailable",
            f"the user's rate limit cannot be checked now ({exc}); retry later",
            {"Retry-After": "1"},
        ) from None
    limiter = limits.buckets
    if wait > 0:
        RATE_LIMITED.inc()
        raise ApiError(
            429,
            "rate_limited",
            f"at most {limiter.rate:g} writes per second per user, {limiter.burst} at once; "
            f"retry in {wait:.1f}s",
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )


async def _publish(writes: Writes, event: LikeEvent) -> None:
    retry = {"Retry-After": str(max(1, math.ceil(writes.timeout)))}
    try:
        async with asyncio.timeout(writes.timeout):
            await writes.publisher.publish(event)
    except TimeoutError:
        http_producer_error("timeout")
        log.warning("event %s not acknowledged in %.1fs: 503", event.event_id, writes.timeout)
        raise ApiError(
            503,
            "not_acknowledged",
            f"Kafka did not acknowledge the event within {writes.timeout:g}s; retry later",
            retry,
        ) from None
    except DeliveryError as exc:
        http_producer_error("refused")
        log.warning("event %s not delivered: %s: 503", event.event_id, exc)
        raise ApiError(
            503, "not_acknowledged", f"Kafka did not take the event: {exc}", retry
        ) from None


async def publisher_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the publisher runs while the app runs, and flushes when it stops."""
    publisher = app[WRITES].publisher
    # A worker restarted while Kafka restarts waits for it instead of exiting.
    await retrying("starting the write producer", publisher.start, (DeliveryError,))
    yield
    await publisher.stop()
