"""Batched sends to one topic partition: one delivery future per batch, not per record.

The agent writes a few records per event (changelog rows, a count, rarely a dead
letter). aiokafka's per-record ``send`` costs a future and a lookup per record;
filling a :class:`BatchBuilder` per partition is several times cheaper and keeps
the records' order, which the changelog relies on (``agents/_fold.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

__all__ = ["KafkaSender", "Outgoing", "Sender"]

Outgoing = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]
"""One record: key, value (None deletes under compaction), headers."""


class Sender(Protocol):
    async def start(self) -> None:
        """Connect; a no-op when started."""
        ...

    async def stop(self) -> None: ...

    async def send(
        self, topic: str, partition: int, records: Sequence[Outgoing]
    ) -> list[asyncio.Future[RecordMetadata]]:
        """Queue ``records`` in order; one future per batch, resolved when Kafka has it.

        A batch's future gives the offset of its first record.
        """
        ...


class KafkaSender:
    """A Sender over its own idempotent producer (acks=all); start before use."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is None:
            # Created here: aiokafka wants a running loop.
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                acks="all",
                enable_idempotence=True,
                linger_ms=0,  # callers hand over whole batches already
                max_batch_size=1 << 20,
            )
            await producer.start()
            self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def send(
        self, topic: str, partition: int, records: Sequence[Outgoing]
    ) -> list[asyncio.Future[RecordMetadata]]:
        producer = self._producer
        if producer is None:
            raise RuntimeError("KafkaSender.send before start")
        futures: list[asyncio.Future[RecordMetadata]] = []
        batch = producer.create_batch()
        for key, value, headers in records:
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    raise ValueError(f"a record for {topic} does not fit in one batch")
        if batch.record_count():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures
