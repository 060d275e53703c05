"""Acknowledge events only once everything they wrote is durable in Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass

from faust.types import TP, EventT, StreamT

from likestream._metrics import agent_producer_error
from likestream.tables import LikeTables

from ._positions import Positions

__all__ = ["Confirmer", "Folded"]


@dataclass(frozen=True, slots=True)
class Folded:
    """A folded event. ``event`` is None for one read past faust to fill a hole."""

    tp: TP
    offset: int
    epoch: int
    stream: StreamT[bytes] | None = None
    event: EventT[bytes] | None = None


class Confirmer:
    """Holds folded events until their table, count and DLQ writes are acknowledged.

    The stream runs with acks disabled; :meth:`confirm` (called on a short timer
    and whenever too much is pending) waits for the delivery futures, then
    advances the durable positions, acks the events and commits. Nothing is
    committed whose writes a crash could still lose.
    """

    def __init__(self, tables: LikeTables, positions: Positions) -> None:
        self._tables = tables
        self._positions = positions
        self._folded: list[Folded] = []
        self._futures: list[Awaitable[object]] = []
        self._lock = asyncio.Lock()

    @property
    def pending(self) -> int:
        return len(self._folded)

    def add(self, folded: Folded, futures: list[Awaitable[object]]) -> None:
        """Record a folded event; call after all its writes were issued."""
        self._futures.extend(futures)
        self._folded.append(folded)

    async def confirm(self) -> None:
        async with self._lock:
            # Snapshot events and futures together, with no await in between, so
            # every event taken has all its writes among the futures taken.
            folded, self._folded = self._folded, []
            futures = [*self._futures, *self._tables.take_unconfirmed()]
            self._futures = []
            if futures:
                try:
                    await asyncio.gather(*futures)
                except Exception:
                    agent_producer_error()
                    raise
            for item in folded:
                self._positions.confirmed(item.tp, item.offset, item.epoch)
                if item.stream is not None and item.event is not None:
                    await item.stream.ack(item.event)
            await self._positions.commit_durable()
