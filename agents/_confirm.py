"""Acknowledge events only once everything they wrote is durable in Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from faust.types import EventT, StreamT

from likestream._metrics import agent_producer_error
from likestream.tables import LikeTables

from ._positions import Positions

__all__ = ["Confirmer"]


class Confirmer:
    """Holds processed events until their table, count and DLQ writes are acknowledged.

    The stream runs with acks disabled; :meth:`confirm` (called on a short timer
    and whenever too much is pending) waits for the delivery futures, then acks
    the events, which lets Faust commit their offsets. Nothing is acked whose
    writes a crash could still lose.
    """

    def __init__(self, tables: LikeTables, positions: Positions) -> None:
        self._tables = tables
        self._positions = positions
        self._events: list[tuple[StreamT[bytes], EventT[bytes], int]] = []
        self._futures: list[Awaitable[object]] = []
        self._lock = asyncio.Lock()

    @property
    def pending(self) -> int:
        return len(self._events)

    def add(
        self,
        stream: StreamT[bytes],
        event: EventT[bytes],
        futures: list[Awaitable[object]],
        epoch: int,
    ) -> None:
        """Record a folded event; call after all its writes were issued."""
        self._futures.extend(futures)
        self._events.append((stream, event, epoch))

    async def confirm(self) -> None:
        async with self._lock:
            # Snapshot events and futures together, with no await in between, so
            # every event taken has all its writes among the futures taken.
            events, self._events = self._events, []
            futures = [*self._futures, *self._tables.take_unconfirmed()]
            self._futures = []
            if futures:
                try:
                    await asyncio.gather(*futures)
                except Exception:
                    agent_producer_error()
                    raise
            for stream, event, epoch in events:
                self._positions.confirmed(event.message.tp, event.message.offset, epoch)
                await stream.ack(event)
            await self._positions.commit_durable()
