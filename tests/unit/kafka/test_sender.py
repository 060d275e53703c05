"""The sender never cuts a group of records between two record batches."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from likestream.kafka._factory import KafkaConfig
from likestream.kafka._sender import MAX_BATCH_BYTES, KafkaSender, Outgoing


class Producer:
    """aiokafka's own batch builder; sending only counts each batch's records."""

    def __init__(self) -> None:
        self._real = KafkaConfig("127.0.0.1:1").producer(max_batch_size=MAX_BATCH_BYTES)
        self.batches: list[int] = []

    def create_batch(self) -> Any:
        return self._real.create_batch()

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
        self.batches.append(batch.record_count())
        return asyncio.get_running_loop().create_future()


def sender_with(producer: Producer) -> KafkaSender:
    sender = KafkaSender(KafkaConfig("127.0.0.1:1"))
    sender._producer = producer  # type: ignore[assignment]
    return sender


def records(n: int, size: int) -> list[Outgoing]:
    return [(b"k%d" % i, b"v" * size, []) for i in range(n)]


async def test_groups_stay_whole_across_batches() -> None:
    producer = Producer()
    # 40 groups of 50 records of ~1 KiB: about 2 MiB, so at least two batches.
    rows = records(2000, 1000)
    ends = list(range(50, 2001, 50))
    futures = await sender_with(producer).send("t", 0, rows, ends)
    assert len(futures) == len(producer.batches) >= 2
    assert sum(producer.batches) == 2000
    # Every batch ends where a group ends.
    cuts, total = [], 0
    for count in producer.batches:
        total += count
        cuts.append(total)
    assert set(cuts) <= set(ends)


async def test_without_groups_batches_fill_up() -> None:
    producer = Producer()
    await sender_with(producer).send("t", 0, records(2000, 1000))
    assert sum(producer.batches) == 2000
    assert producer.batches[0] > 900  # filled to the limit, not cut early


async def test_a_group_larger_than_a_batch_is_refused() -> None:
    producer = Producer()
    with pytest.raises(ValueError, match="does not fit in one batch"):
        await sender_with(producer).send("t", 0, records(1500, 1000), [1500])
