"""Flush folded rows in batches and acknowledge events only once all they wrote is durable."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass

import orjson
from faust.types import TP, EventT, StreamT

from likestream._metrics import agent_producer_error
from likestream._sender import Outgoing, Sender
from likestream.tables import Flushed, LikeTables

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
    and whenever too much is pending) flushes the rows folded so far to RocksDB
    and Kafka (changelog, then ``like-counts``, then dead letters), waits for the
    deliveries, then advances the durable positions, acks the events and commits.
    Nothing is committed whose writes a crash could still lose.
    """

    def __init__(
        self,
        tables: LikeTables,
        positions: Positions,
        sender: Sender,
        counts_topic: str,
        dlq_topic: str,
    ) -> None:
        self._tables = tables
        self._positions = positions
        self._sender = sender
        self._counts_topic = counts_topic
        self._dlq_topic = dlq_topic
        self._folded: list[Folded] = []
        self._dead: defaultdict[int, list[Outgoing]] = defaultdict(list)
        self._lock = asyncio.Lock()

    @property
    def pending(self) -> int:
        return len(self._folded)

    def add(self, folded: Folded) -> None:
        """Record a folded event; call after its rows were put to the tables."""
        self._folded.append(folded)

    def dead_letter(self, partition: int, record: Outgoing) -> None:
        """Send ``record`` to the DLQ with the next flush."""
        self._dead[partition].append(record)

    async def confirm(self) -> None:
        async with self._lock:
            await self._sender.start()
            # Take events, rows and dead letters together, with no await in
            # between, so every event taken has all its writes among them.
            folded, self._folded = self._folded, []
            dead, self._dead = self._dead, defaultdict(list)
            flushed = self._tables.flush()
            futures = await self._send(flushed, dead)
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

    async def _send(
        self, flushed: list[Flushed], dead: dict[int, list[Outgoing]]
    ) -> list[Awaitable[object]]:
        futures: list[Awaitable[object]] = []
        futures += await self._tables.send_changelog(self._sender, flushed)
        for batch in flushed:
            counts = [
                _count_record(item, row.likes, row.offset) for item, row in batch.counts.items()
            ]
            futures += await self._sender.send(self._counts_topic, batch.partition, counts)
        for partition, records in dead.items():
            futures += await self._sender.send(self._dlq_topic, partition, records)
        return futures


def _count_record(item: str, likes: int, offset: int) -> Outgoing:
    value = orjson.dumps({"item_id": item, "likes": likes})
    return item.encode(), value, [("source-offset", str(offset).encode())]
