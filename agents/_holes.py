"""Read a partition's missing events straight from Kafka.

After a rebalance faust can skip a partition's first events (fetched while its
flow was paused, or of a stale generation) and go on with later ones. The agent
then reads the missing range itself, with a plain consumer outside the group,
and folds it before the event that revealed the hole.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from faust.types import TP

__all__ = ["HoleFiller"]

READ_LIMIT_S = 60.0


class HoleFiller:
    def __init__(self, bootstrap: str, group: str) -> None:
        self._bootstrap = bootstrap
        self._group = group
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def start_offset(self, tp: TP) -> int:
        """Where the group resumes ``tp``: its committed offset, else the earliest."""
        part = TopicPartition(tp.topic, tp.partition)
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(self._group, partitions=[part])
        finally:
            await admin.close()
        if part in committed and committed[part].offset >= 0:
            return int(committed[part].offset)
        async with self._lock:
            consumer = await self._started()
            earliest = await consumer.beginning_offsets([part])
        return int(earliest[part])

    async def read(self, tp: TP, start: int, end: int) -> list[ConsumerRecord[bytes, bytes]]:
        """The records of ``tp`` with ``start <= offset < end``, in offset order."""
        async with self._lock:
            consumer = await self._started()
            part = TopicPartition(tp.topic, tp.partition)
            consumer.assign([part])
            consumer.seek(part, start)
            records: list[ConsumerRecord[bytes, bytes]] = []
            deadline = time.monotonic() + READ_LIMIT_S
            while await consumer.position(part) < end:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"could not read {tp} [{start}, {end}) within {READ_LIMIT_S}s"
                    )
                batch = await consumer.getmany(part, timeout_ms=1000)
                records += [r for r in batch.get(part, []) if r.offset < end]
            return records

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap, enable_auto_commit=False, group_id=None
            )
            await self._consumer.start()
        return self._consumer

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
