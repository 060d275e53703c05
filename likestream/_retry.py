"""Retry start-up steps while Kafka is unreachable (it may be restarting)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["STARTUP_LIMIT_S", "retrying"]

T = TypeVar("T")
log = logging.getLogger(__name__)

STARTUP_LIMIT_S = 120.0


async def retrying(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    errors: tuple[type[BaseException], ...],
    limit_s: float = STARTUP_LIMIT_S,
) -> T:
    """``attempt()`` until it succeeds, with backoff; after ``limit_s`` the error stands."""
    deadline = time.monotonic() + limit_s
    delay = 0.5
    while True:
        try:
            return await attempt()
        except errors as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s: %s; retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
