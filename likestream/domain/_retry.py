"""Waiting before trying again: the two loops everything that retries or polls uses.

:func:`retrying` tries one step until it succeeds, for a while: start-up steps while Kafka
is unreachable (it may be restarting). :func:`poll_forever` runs a step periodically until
cancelled, connecting again after a failure: the background reads of Kafka (owners,
changelog ends, the ``like-counts`` tail, the metrics sampler).

:class:`Backoff` is capped exponential backoff with optional jitter; :func:`retrying` uses
it, and the API client (``likestream/api_client.py``) for 503s and WebSocket reconnects,
where the server's ``Retry-After`` (:func:`parse_retry_after`) comes first.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

__all__ = ["STARTUP_LIMIT_S", "Backoff", "parse_retry_after", "poll_forever", "retrying"]

T = TypeVar("T")
C = TypeVar("C")
log = logging.getLogger(__name__)

STARTUP_LIMIT_S = 120.0


@dataclass(frozen=True)
class Backoff:
    """Delays of ``first * factor**attempt`` seconds, at most ``cap``; ``jitter`` is the
    share of each delay drawn at random (0: none; 0.5: between half and all of it), so that
    clients that failed together do not all come back at the same moment."""

    first: float = 0.5
    cap: float = 5.0
    factor: float = 2.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap or self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError(f"bad backoff {self}: need 0 < first <= cap, factor >= 1, jitter 0-1")

    def delay(self, attempt: int, draw: float | None = None) -> float:
        """The wait after failed attempt number ``attempt`` (0 for the first failure);
        ``draw`` in [0, 1) replaces the random draw (tests)."""
        # min() before the power would overflow for a long outage's attempt numbers.
        base = self.first * self.factor ** min(attempt, 64)
        base = min(base, self.cap)
        u = random.random() if draw is None else draw
        return base * (1 - self.jitter * u)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110 section 10.2.3: delay-seconds
    or an HTTP-date); None when absent or unreadable, 0 for a date already past."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an obsolete date form without a zone: HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


STARTUP_BACKOFF = Backoff(first=0.5, cap=5.0)


async def retrying(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    errors: tuple[type[BaseException], ...],
    limit_s: float = STARTUP_LIMIT_S,
) -> T:
    """``attempt()`` until it succeeds, with backoff; after ``limit_s`` the error stands."""
    deadline = time.monotonic() + limit_s
    failures = 0
    while True:
        try:
            return await attempt()
        except errors as exc:
            delay = STARTUP_BACKOFF.delay(failures)
            if time.monotonic() + delay > deadline:
                log.error("%s: %s; giving up after %.0fs", what, exc, limit_s)
                raise
            log.warning("%s: %s; retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            failures += 1


async def poll_forever(
    what: str,
    interval: float,
    new: Callable[[], C],
    start: Callable[[C], Awaitable[object]],
    close: Callable[[C], Awaitable[object]],
    step: Callable[[C], Awaitable[None]],
    retry: float | None = None,
) -> None:
    """``step(client)`` every ``interval`` seconds until cancelled (0: at once, letting the
    rest of the process have a turn). The client is ``new()``, unstarted, then
    ``start(client)``. A failure, of the start or of a step, closes the client (a new one
    is made and started after ``retry`` seconds, default ``interval``) and is logged once
    per streak: Kafka away for an hour is one warning, and never ends the loop."""
    client: C | None = None
    failing = False
    try:
        while True:
            try:
                if client is None:
                    # Held before it starts: a start that fails or is cancelled may
                    # leave connections open (aiokafka's clients), so it is closed too.
                    client = new()
                    await start(client)
                await step(client)
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.log(logging.DEBUG if failing else logging.WARNING, "%s: %r", what, exc)
                failing = True
                if client is not None:
                    await close(client)
                    client = None
                await asyncio.sleep(interval if retry is None else retry)
                continue
            await asyncio.sleep(interval)
    finally:
        if client is not None:
            await close(client)
