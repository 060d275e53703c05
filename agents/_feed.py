"""The events partitions this worker owns, read in whole fetched batches.

Faust assigns the partitions (its group member, assignor, standbys and recovery
stay as they are) but no longer delivers the events topic message by message:
its member's consumer has those partitions paused (``likestream/kafka/_internals.py``)
and this feed reads them with a plain aiokafka consumer outside the group,
``getmany`` batches straight to the fold. Commits still go through the member.

Every change of what is read (an assignment, a revocation, a rewind after a failed
delivery) bumps :attr:`EventsFeed.epoch`; a fetch that was under way across one
is dropped, so records read before a seek never reach the fold after it.

A rewind's seek is only recorded, and made by the next :meth:`EventsFeed.fetch` before
its ``getmany``: aiokafka (0.14) can lose a seek made while a ``getmany`` waits, and the
consumer then goes on from where it was, past the events the rewind meant to read again
(tests/integration/test_faults.py found it: likes lost after a refused flush; outside
likestream, seeking back while a getmany waited left 189 of 1,880 fetches starting past
the sought offset, and none of 3,309 with the seeks made between fetches).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from faust.types import TP

from likestream.domain._retry import retrying
from likestream.kafka._factory import KafkaConfig

__all__ = ["Batches", "EventsFeed"]

log = logging.getLogger(__name__)

Batches = dict[TP, list[ConsumerRecord[bytes, bytes]]]

FETCH_MAX_RECORDS = 4_000
"""Records folded between two yields to the event loop (web requests wait that long)."""


class EventsFeed:
    def __init__(self, kafka: KafkaConfig, group: str) -> None:
        self._kafka = kafka
        self._group = group
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._seeks: dict[TP, int] = {}  # made by the next fetch (see the module docstring)
        self.epoch = 0

    async def _started(self) -> tuple[AIOKafkaConsumer, AIOKafkaAdminClient]:
        if self._consumer is None or self._admin is None:
            # No group id: the consumer never talks to the group coordinator, whose
            # background routine asserts on an assignment replaced while it waits (aiokafka
            # issue 796, seen in failovers). The group's committed offsets come from the
            # admin client instead, and the positions are set by hand.
            consumer = self._kafka.consumer(
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                max_partition_fetch_bytes=4 << 20,
                fetch_max_bytes=32 << 20,
            )
            admin = self._kafka.admin()
            await consumer.start()
            await admin.start()
            self._consumer, self._admin = consumer, admin
        return self._consumer, self._admin

    async def assign(self, tps: set[TP]) -> dict[TP, int]:
        """Read ``tps`` (and only them) from the group's committed offsets; returns those
        offsets (the earliest where none is committed); empty when a rebalance or a stop
        came meanwhile (the next assignment starts over)."""
        self.epoch += 1
        epoch = self.epoch
        consumer, admin = await self._started()
        parts = {TopicPartition(tp.topic, tp.partition): tp for tp in tps}
        # The coordinator may be moving or loading (a failover): retried like start-up.
        committed = await retrying(
            "reading the committed offsets",
            lambda: admin.list_consumer_group_offsets(self._group, partitions=list(parts)),
            (KafkaError,),
        )
        earliest = await consumer.beginning_offsets(list(parts))
        if epoch != self.epoch:
            return {}
        consumer.assign(list(parts))
        self._seeks.clear()
        starts: dict[TP, int] = {}
        for part, tp in parts.items():
            mark = committed.get(part)
            # None committed: from the start; committed below the log start: from there.
            offset = max(mark.offset if mark is not None else -1, earliest[part])
            consumer.seek(part, offset)
            starts[tp] = offset
        self.epoch += 1
        return starts

    def unassign(self) -> None:
        self.epoch += 1
        self._seeks.clear()
        if self._consumer is not None:
            self._consumer.assign([])

    def seek(self, offsets: Mapping[TP, int]) -> None:
        """Read the partitions again from ``offsets``; anything fetched before is dropped.
        The next :meth:`fetch` seeks, before it asks for records (see the module docstring)."""
        self.epoch += 1
        self._seeks.update(offsets)

    async def fetch(self, timeout_ms: int) -> Batches:
        """The next fetched records of every assigned partition, in offset order; empty
        if the assignment or positions changed meanwhile (see the module docstring)."""
        consumer = self._consumer
        if consumer is None or not consumer.assignment():
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        if self._seeks:
            assigned = consumer.assignment()
            for tp, offset in self._seeks.items():
                part = TopicPartition(tp.topic, tp.partition)
                if part in assigned:
                    consumer.seek(part, offset)
            self._seeks.clear()
        epoch = self.epoch
        fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=FETCH_MAX_RECORDS)
        if epoch != self.epoch:
            return {}
        return {TP(part.topic, part.partition): records for part, records in fetched.items()}

    async def stop(self) -> None:
        self.epoch += 1
        consumer, admin = self._consumer, self._admin
        self._consumer = self._admin = None
        if consumer is not None:
            await consumer.stop()
        if admin is not None:
            await admin.close()
