"""One token bucket per user across every process: the owner of the user's partition keeps it.

A user id hashes, with the events' partitioner and partition count, to one partition;
the worker that owns that partition (its active assignment in the consumer group) keeps
the user's bucket (``_limits.RateLimiter``) in its memory. A process taking a write:

- takes the token itself when it owns that partition;
- otherwise asks the owner (from the group, ``_owners.py``) with
  ``POST /internal/limits`` (the user id in the body, so out of access logs), proven like
  a forwarded read (``_reads.forwarding_proof``); the owner answers from its bucket, never
  forwards;
- otherwise refuses (:class:`LimitUnavailable`, a 503): no known owner, the owner did not
  answer within the timeout, or answered that it no longer owns the partition. Failing
  closed: a limit is never loosened because a peer is away.

So while ownership is stable a user gets at most one bucket's worth across all gateways
and workers. A partition that changes owner starts a fresh (full) bucket on the new
owner: at most one extra burst per change. Only the owner's own assignment makes it
answer, never a gateway's view of the group, so a stale view costs a 503, not a second
bucket.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from likestream.domain._partition import partition_for
from likestream.domain._schema import is_valid_id
from likestream.runtime._metrics import rate_limit_check

from ._errors import ApiError
from ._json import json_reply
from ._limits import RateLimiter
from ._owners import Owners
from ._reads import DOWN_SECONDS, FORWARDED, carries_proof, forwarding_proof

__all__ = [
    "LIMITS",
    "LIMITS_PATH",
    "Here",
    "LimitSettings",
    "LimitUnavailable",
    "Limits",
    "Nowhere",
    "Owner",
    "limit_routes",
    "limits_ctx",
    "route",
]

log = logging.getLogger(__name__)

LIMITS_PATH = "/internal/limits"
MAX_BODY = 1024
RETRY_AFTER = {"Retry-After": "1"}


@dataclass(frozen=True)
class LimitSettings:
    partitions: int
    """Partitions of the events topic: users hash over them as items do."""
    url: str | None
    """This process's advertised URL; None for a gateway."""
    secret: str
    """The secret of :func:`forwarding_proof`, shared by every process."""
    timeout: float
    """Seconds to wait for the owner's answer (``LIKESTREAM_LIMIT_TIMEOUT_MS``)."""
    holds: Callable[[int], bool]
    """Whether this process owns an events partition (a worker's active assignment; a
    gateway's owns none)."""


class LimitUnavailable(Exception):
    """No bucket could be asked: the write is refused rather than let through unlimited."""


@dataclass(frozen=True)
class Here:
    """This process keeps the bucket."""


@dataclass(frozen=True)
class Owner:
    url: str


@dataclass(frozen=True)
class Nowhere:
    reason: str


def route(
    partition: int, holds: bool, owner: str | None, me: str | None, down: bool
) -> Here | Owner | Nowhere:
    """Where the bucket of a user of ``partition`` is: here when this process holds the
    partition, else at its ``owner`` as the group names it, unless that is unknown, is this
    process (named, but not holding it: mid-rebalance) or did not answer a moment ago."""
    if holds:
        return Here()
    if owner is None:
        return Nowhere(f"no worker owns partition {partition} now (the group is forming)")
    if owner == me:
        return Nowhere(f"partition {partition} is moving (rebalancing)")
    if down:
        return Nowhere(f"the owner of partition {partition} did not answer a moment ago")
    return Owner(owner)


class Limits:
    """Takes write tokens from the one bucket of each user, here or at its owner."""

    def __init__(self, buckets: RateLimiter, owners: Owners, settings: LimitSettings) -> None:
        self.buckets = buckets
        self.owners = owners
        self.settings = settings
        self.http: aiohttp.ClientSession | None = None
        self._proof = forwarding_proof(settings.secret)
        self._down: dict[str, float] = {}

    def partition(self, user_id: str) -> int:
        return partition_for(user_id.encode(), self.settings.partitions)

    def _holds(self, partition: int) -> bool:
        return self.settings.holds(partition)

    def where(self, user_id: str) -> Here | Owner | Nowhere:
        partition = self.partition(user_id)
        owner = self.owners.placement.active.get(partition)
        down = owner is not None and self._down.get(owner, 0.0) > time.monotonic()
        return route(partition, self._holds(partition), owner, self.settings.url, down)

    async def take(self, user_id: str) -> float:
        """0.0 when ``user_id`` may write now, else the seconds until a token is free.
        Raises :class:`LimitUnavailable` when the bucket cannot be reached."""
        where = self.where(user_id)
        if isinstance(where, Here):
            rate_limit_check("here")
            return self.buckets.take(user_id)
        if isinstance(where, Owner):
            wait = await self._ask(where.url, user_id)
            if wait is not None:
                rate_limit_check("owner")
                return wait
            where = Nowhere(f"the owner of partition {self.partition(user_id)} did not answer")
        rate_limit_check("unavailable")
        raise LimitUnavailable(where.reason)

    def take_here(self, user_id: str) -> float | None:
        """The internal endpoint's answer: a token from the bucket kept here, or None when
        this process does not own the user's partition (it never asks further)."""
        if not self._holds(self.partition(user_id)):
            return None
        return self.buckets.take(user_id)

    def proven(self, request: web.Request) -> bool:
        """Whether ``request`` comes from a process that shares the secret."""
        return carries_proof(request, self._proof)

    async def _ask(self, url: str, user_id: str) -> float | None:
        """The owner's answer; None when there was none (the owner is then skipped for a
        moment if it could not be reached)."""
        if self.http is None:
            return None
        try:
            async with self.http.post(
                url + LIMITS_PATH,
                json={"user_id": user_id},
                headers={FORWARDED: self._proof},
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
            ) as response:
                if response.status == 200:
                    wait = (await response.json()).get("wait")
                    if isinstance(wait, int | float) and math.isfinite(wait) and wait >= 0:
                        return float(wait)
                    log.warning("the rate limit owner %s answered %.200r", url, wait)
                else:
                    # Alive, but not the owner any more (or refusing): the group's next
                    # description names the new owner.
                    log.info("rate limit owner %s: HTTP %d", url, response.status)
                return None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        log.warning("rate limit owner %s unreachable (%s): refusing its users' writes", url, reason)
        self._down[url] = time.monotonic() + DOWN_SECONDS
        return None


LIMITS = web.AppKey("limits", Limits)

limit_routes = web.RouteTableDef()


@limit_routes.post(LIMITS_PATH)
async def take_token(request: web.Request) -> web.Response:
    """Internal: a token from the bucket this process keeps; only for peers."""
    limits = request.app[LIMITS]
    if not limits.proven(request):
        raise ApiError(403, "forbidden", "internal endpoint, for likestream processes only")
    user = await _user_of(request)
    wait = limits.take_here(user)
    if wait is None:
        raise ApiError(
            503,
            "not_owner",
            f"partition {limits.partition(user)} is not owned by this process",
            RETRY_AFTER,
        )
    return json_reply({"wait": wait}, headers={"Cache-Control": "no-store"})


async def _user_of(request: web.Request) -> str:
    bad = ApiError(400, "invalid_user_id", 'expected {"user_id": "<a valid id>"}')
    if (request.content_length or 0) > MAX_BODY:
        raise bad
    try:
        body = await request.json()
    except ValueError:
        raise bad from None
    user = body.get("user_id") if isinstance(body, dict) else None
    if not is_valid_id(user):
        raise bad
    return str(user)


async def limits_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the session for asking owners."""
    limits = app[LIMITS]
    limits.http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit_per_host=32), raise_for_status=False
    )
    yield
    await limits.http.close()
