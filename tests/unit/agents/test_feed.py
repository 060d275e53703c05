"""The events feed's rewinds: never a seek while a getmany waits.

aiokafka (0.14) can lose a seek made while a ``getmany`` waits: the consumer goes on
from where it was, and a rewind after a failed delivery skipped the events it meant
to read again (tests/integration/test_faults.py, the refused-writes fault, lost likes).
The feed records a rewind and seeks in its next fetch, before asking for records.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from faust.types import TP

from likestream.agents._feed import EventsFeed
from likestream.kafka._factory import KafkaConfig

EVENTS = "likes"


class StubConsumer:
    """Records the calls the feed makes; ``getmany`` waits until released."""

    def __init__(self, parts: list[TopicPartition]) -> None:
        self.parts = set(parts)
        self.calls: list[tuple[str, Any]] = []
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    def assignment(self) -> set[TopicPartition]:
        return self.parts

    def seek(self, part: TopicPartition, offset: int) -> None:
        self.calls.append(("seek", (part.partition, offset)))

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        self.calls.append(("getmany", None))
        self.waiting.set()
        await self.release.wait()
        self.release.clear()
        return {}


def feed_with(consumer: StubConsumer) -> EventsFeed:
    feed = EventsFeed(KafkaConfig("localhost:1"), "group")
    feed._consumer = consumer  # type: ignore[assignment]
    feed._admin = object()  # type: ignore[assignment]
    return feed


async def test_a_rewind_during_a_fetch_seeks_in_the_next_fetch_first() -> None:
    consumer = StubConsumer([TopicPartition(EVENTS, 0), TopicPartition(EVENTS, 1)])
    feed = feed_with(consumer)
    fetching = asyncio.create_task(feed.fetch(100))
    await consumer.waiting.wait()
    feed.seek({TP(EVENTS, 0): 7, TP(EVENTS, 3): 9})  # 3: no longer assigned here
    assert consumer.calls == [("getmany", None)], "no seek while a getmany waits"
    consumer.release.set()
    assert await fetching == {}  # what it fetched predates the rewind
    consumer.waiting.clear()
    second = asyncio.create_task(feed.fetch(100))
    await consumer.waiting.wait()
    assert consumer.calls[1:] == [("seek", (0, 7)), ("getmany", None)]
    consumer.release.set()
    await second
    third = asyncio.create_task(feed.fetch(100))
    consumer.release.set()
    await third
    assert consumer.calls[3:] == [("getmany", None)], "each rewind seeks once"


async def test_an_unassignment_forgets_a_rewind_not_made_yet() -> None:
    consumer = StubConsumer([TopicPartition(EVENTS, 0)])
    feed = feed_with(consumer)
    feed.seek({TP(EVENTS, 0): 7})
    consumer.assign = lambda parts: consumer.calls.append(("assign", parts))  # type: ignore[attr-defined]
    feed.unassign()
    consumer.release.set()
    await feed.fetch(100)
    assert ("seek", (0, 7)) not in consumer.calls
