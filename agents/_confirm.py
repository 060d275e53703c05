"""Flush folded rows in batches; commit events only once all they wrote is durable.

:meth:`Confirmer.flush` (on a short timer, and whenever too much is pending) takes,
in one step with no await, every row folded so far and how far each partition was
folded (its marks), writes the rows to RocksDB and hands them to the producer
(changelog, then ``like-counts``, then dead letters) without waiting for Kafka: the
fold goes on meanwhile, and several flushes can be in flight.

:meth:`Confirmer.settle` confirms the flushes one at a time, in the order they were
taken: once every delivery of the oldest one succeeded, the durable positions move
to its marks, and what is durable is committed. A flush with a failed delivery
confirms nothing, and neither does any flush after it: ``on_failure`` (the agent's
rewind) drops every row folded since and reads the partitions again from their
durable positions, as a restart would, and the flushes still in flight are
forgotten (their marks belong to an older epoch, ``_positions.py``). So positions
move only contiguously (``tests/unit/agents/test_confirm.py``), and the replay rewrites
whatever the failure lost: the fold writes a replayed event's rows again
(``_fold.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import orjson
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata
from faust.types import TP

from likestream.kafka._sender import Outgoing, Sender
from likestream.runtime._metrics import FLUSHES_IN_FLIGHT, agent_producer_error
from likestream.tables import Flushed, LikeTables

from ._positions import Mark, Positions

__all__ = ["MAX_IN_FLIGHT", "Confirmer", "DeliveryFailed"]

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 8
"""Flushes handed to the producer and not yet confirmed; a flush past it waits."""


class DeliveryFailed(Exception):
    """A flush's writes did not all reach Kafka; its events are read again."""


@dataclass
class _InFlight:
    marks: dict[TP, Mark]
    futures: list[asyncio.Future[RecordMetadata]] = field(default_factory=list)
    error: BaseException | None = None
    """Raised while handing the rows over (before any future existed)."""

    @property
    def done(self) -> bool:
        return all(future.done() for future in self.futures)

    async def wait(self) -> BaseException | None:
        """Wait for every delivery; the first failure, if any."""
        if self.futures:
            await asyncio.wait(self.futures)
        for future in self.futures:
            if future.cancelled():
                return asyncio.CancelledError("delivery cancelled")
            if future.exception() is not None:
                return future.exception()
        return self.error


class Confirmer:
    def __init__(
        self,
        tables: LikeTables,
        positions: Positions,
        sender: Sender,
        counts_topic: str,
        dlq_topic: str,
        commit: Callable[[Mapping[TP, int]], Awaitable[bool]],
        seal: Callable[[], None],
        on_failure: Callable[[], Awaitable[None]],
    ) -> None:
        """``commit``: commits offsets as the group member (False: refused);
        ``seal``: puts the rows encoded once per flush (trending) to the tables;
        ``on_failure``: after a failed delivery, drops what was folded since and
        rewinds (the agent's)."""
        self._tables = tables
        self._positions = positions
        self._sender = sender
        self._counts_topic = counts_topic
        self._dlq_topic = dlq_topic
        self._commit = commit
        self._seal = seal
        self._on_failure = on_failure
        self._dead: defaultdict[int, list[Outgoing]] = defaultdict(list)
        self._in_flight: deque[_InFlight] = deque()
        self._flushing = asyncio.Lock()
        self._settling = asyncio.Lock()
        self._flushed = asyncio.Event()
        self._room = asyncio.Event()  # set whenever flushes leave the in-flight queue
        self._broken: BaseException | None = None
        """Why the tables could not write a flush: raised by every later call."""
        self.pending = 0
        """Events folded since the last flush was taken."""

    def dead_letter(self, partition: int, record: Outgoing) -> None:
        """Send ``record`` to the DLQ with the next flush."""
        self._dead[partition].append(record)

    def discard(self, partitions: set[int]) -> None:
        """Drop the dead letters of ``partitions`` folded but not flushed."""
        for partition in partitions:
            self._dead.pop(partition, None)

    async def flush(self) -> None:
        """Take what was folded and hand it to Kafka; :meth:`settle` confirms it."""
        while len(self._in_flight) >= MAX_IN_FLIGHT:
            self._room.clear()
            await self._room.wait()
        async with self._flushing:
            self._check_broken()
            # Rows, dead letters and marks together, with no await in between, so
            # that every event the marks cover has all its writes in this flush.
            self._seal()
            flight = _InFlight(self._positions.marks())
            dead, self._dead = self._dead, defaultdict(list)
            self.pending = 0
            try:
                flushed = self._tables.flush()
            except Exception as exc:
                # The marks are taken and the rows gone: a later flush must never
                # commit past them. Raised from the fold, faust would restart the agent
                # and fold on; so every call raises it from now on, settle_forever
                # too, which stops the worker (tables/_state.py StateLost).
                self._broken = exc
                self._flushed.set()
                raise
            try:
                await self._sender.start()
                await self._send(flushed, dead, flight.futures)
            except Exception as exc:
                flight.error = exc
            # Queued once every record is handed over (flushes are taken one at a
            # time, so the queue keeps their order).
            self._in_flight.append(flight)
            self._count_in_flight()
            self._flushed.set()

    async def settle(self) -> None:
        """Confirm the flushes taken so far, oldest first, and commit what is durable;
        raises :class:`DeliveryFailed` (after ``on_failure``) if one failed."""
        async with self._settling:
            self._check_broken()
            confirmed = False
            while self._in_flight:
                flight = self._in_flight[0]
                if confirmed and not flight.done:
                    # Commit what is durable before waiting: while flushes keep coming
                    # faster than Kafka acknowledges them the queue never empties, and
                    # committing only once it did committed nothing for as long as that
                    # lasted (tests/unit/agents/test_confirm.py).
                    await self._commit_durable()
                    confirmed = False
                error = await flight.wait()
                if error is not None and not isinstance(error, KafkaError):
                    raise error  # a bug, not Kafka: stop loudly rather than retry forever
                if error is not None:
                    await self._failed(error)
                    raise DeliveryFailed(str(error)) from error
                self._in_flight.popleft()
                self._count_in_flight()
                self._room.set()
                self._positions.confirmed(flight.marks)
                confirmed = True
            if confirmed:
                await self._commit_durable()

    async def _commit_durable(self) -> None:
        offsets = self._positions.to_commit()
        if offsets and await self._commit(offsets):
            self._positions.committed(offsets)

    async def confirm(self) -> None:
        """Flush, then wait until everything folded so far is confirmed and committed."""
        await self.flush()
        await self.settle()

    async def settle_forever(self) -> None:
        """Confirm flushes as they are taken (the agent runs this beside its flushes);
        only an error that is not Kafka's ends it."""
        while True:
            await self._flushed.wait()
            self._flushed.clear()
            try:
                await self.settle()
            except DeliveryFailed:
                await asyncio.sleep(1.0)  # rewound; Kafka may be away: not every flush

    async def _failed(self, error: BaseException) -> None:
        agent_producer_error()
        log.warning("a flush's delivery failed (%r): reading its events again", error)
        async with self._flushing:  # no flush is taken while the folded rows are dropped
            for flight in self._in_flight:
                for future in flight.futures:
                    # Nobody waits for these any more; their outcome is moot.
                    future.add_done_callback(_consume)
            self._in_flight.clear()
            self._count_in_flight()
            self._room.set()
            self._dead.clear()
            self.pending = 0
            await self._on_failure()

    def _check_broken(self) -> None:
        if self._broken is not None:
            raise self._broken

    def _count_in_flight(self) -> None:
        # Flushes with rows only: an empty one is confirmed at once and would make the
        # gauge flicker; a stuck one is what an operator (or a fault test) looks for.
        FLUSHES_IN_FLIGHT.set(sum(1 for flight in self._in_flight if flight.futures))

    async def _send(
        self,
        flushed: list[Flushed],
        dead: dict[int, list[Outgoing]],
        futures: list[asyncio.Future[RecordMetadata]],
    ) -> None:
        futures += await self._tables.send_changelog(self._sender, flushed)
        for batch in flushed:
            counts = [
                _count_record(item, row.likes, row.offset) for item, row in batch.counts.items()
            ]
            futures += await self._sender.send(self._counts_topic, batch.partition, counts)
        for partition, records in dead.items():
            futures += await self._sender.send(self._dlq_topic, partition, records)


def _consume(future: asyncio.Future[RecordMetadata]) -> None:
    if not future.cancelled():
        future.exception()


def _count_record(item: str, likes: int, offset: int) -> Outgoing:
    value = orjson.dumps({"item_id": item, "likes": likes})
    return item.encode(), value, [("source-offset", str(offset).encode())]
