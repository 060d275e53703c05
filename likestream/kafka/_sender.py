"""Batched sends to one topic partition: one delivery future per batch, not per record.

The agent writes a few records per event (changelog rows, a count, rarely a dead
letter). aiokafka's per-record ``send`` costs a future and a lookup per record;
filling a :class:`BatchBuilder` per partition is several times cheaper and keeps
the records' order; and the changelog relies on groups of records never being cut
between two batches (``tables/_state.py`` ``Flushed``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import RecordMetadata

from likestream.kafka._factory import KafkaConfig

__all__ = [
    "MAX_BATCH_BYTES",
    "NO_HEADERS",
    "REQUEST_TIMEOUT_MS",
    "KafkaSender",
    "Outgoing",
    "Sender",
]

size_of = DefaultRecordBatchBuilder.size_of

Outgoing = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]]
"""One record: key, value (None deletes under compaction), headers."""

NO_HEADERS: list[tuple[str, bytes]] = []
"""Shared by records without headers (aiokafka wants a list, and never changes it)."""


class Sender(Protocol):
    async def start(self) -> None:
        """Connect; a no-op when started."""
        ...

    async def stop(self) -> None: ...

    async def send(
        self,
        topic: str,
        partition: int,
        records: Sequence[Outgoing],
        ends: Sequence[int] | None = None,
    ) -> list[asyncio.Future[RecordMetadata]]:
        """Queue ``records`` in order; one future per batch, resolved when Kafka has it.

        ``ends``: where each group of records ends; a group is never split between
        two batches (Kafka appends a batch whole). None: every record on its own.
        A batch's future gives the offset of its first record.
        """
        ...


MAX_BATCH_BYTES = 1 << 20
"""The producer's batch size, and so the largest group (the broker takes 1 MiB)."""
REQUEST_TIMEOUT_MS = 40_000
"""The producer's request timeout (aiokafka's default, stated so that
tests/integration/test_faults.py can outlast it): a produce request unanswered this long
is sent again, and a flush that waits this long for room in the producer's queue fails,
so the agent rewinds (agents/_confirm.py). A batch already handed over is retried past it
(an idempotent producer never expires one) until Kafka answers."""
_SLACK = 64  # bytes per record that ``size_of`` leaves out (varints, batch header share)


class KafkaSender:
    """A Sender over its own idempotent producer (acks=all); start before use."""

    def __init__(self, kafka: KafkaConfig) -> None:
        self._kafka = kafka
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        async with self._starting:  # the flush and the trending publisher both start it
            await self._start()

    async def _start(self) -> None:
        if self._producer is None:
            # Created here: aiokafka wants a running loop.
            producer = self._kafka.producer(
                acks="all",
                enable_idempotence=True,
                linger_ms=0,  # callers hand over whole batches already
                max_batch_size=MAX_BATCH_BYTES,
                request_timeout_ms=REQUEST_TIMEOUT_MS,
            )
            await producer.start()
            self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def send(
        self,
        topic: str,
        partition: int,
        records: Sequence[Outgoing],
        ends: Sequence[int] | None = None,
    ) -> list[asyncio.Future[RecordMetadata]]:
        producer = self._producer
        if producer is None:
            raise RuntimeError("KafkaSender.send before start")
        futures: list[asyncio.Future[RecordMetadata]] = []
        batch = producer.create_batch()
        start = 0
        for end in ends if ends is not None else range(1, len(records) + 1):
            group = records[start:end]
            if batch.record_count() and batch.size() > MAX_BATCH_BYTES // 2:
                # Near full: cut before the group unless all of it surely fits.
                need = sum(size_of(k, v, h) + _SLACK for k, v, h in group)
                if batch.size() + need > MAX_BATCH_BYTES:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
            for n, (key, value, headers) in enumerate(group):
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    if n:
                        raise ValueError(
                            f"a group of {len(group)} records for {topic} does not fit in one batch"
                        )
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                        raise ValueError(f"a record for {topic} does not fit in one batch")
            start = end
        if batch.record_count():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures
