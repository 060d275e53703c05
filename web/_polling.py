"""One loop for the background reads of Kafka metadata (owners, changelog ends)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["poll_forever"]

log = logging.getLogger(__name__)

C = TypeVar("C")


async def poll_forever(
    what: str,
    interval: float,
    connect: Callable[[], Awaitable[C]],
    close: Callable[[C], Awaitable[object]],
    step: Callable[[C], Awaitable[None]],
) -> None:
    """``step(client)`` every ``interval`` seconds until cancelled. A failure drops the
    client (connected again next time) and is logged once per streak: Kafka away for an
    hour is one warning, and never ends the loop."""
    client: C | None = None
    failing = False
    try:
        while True:
            try:
                if client is None:
                    client = await connect()
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
            await asyncio.sleep(interval)
    finally:
        if client is not None:
            await close(client)
