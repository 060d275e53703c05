"""The web layer's inputs from Kafka, started by the runtime beside the app.

A worker's and a gateway's app both read four topics while they run: the workers' group
(who owns which partition: forwarded reads), the changelogs' ends (how stale a copy is),
``like-counts`` (the replica and the pushes) and ``like-trending`` (``GET /trending``).
The runtime appends :func:`kafka_feeds` to the app it builds
(``likestream/runtime/_faust_app.py``, ``likestream/runtime/_gateway.py``); unit tests
leave it out and feed the owners, hub and board themselves, so the web code has no branch
for running without Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web
from aiokafka import ConsumerRecord

from likestream.domain._top import parse_top
from likestream.kafka._factory import KafkaConfig

from ._copies import sample_forever
from ._owners import watch_owners
from ._push import HUB
from ._reads import READER
from ._tail import tail_counts, tail_topic
from ._trending import TRENDING, Board

__all__ = ["KafkaFeeds", "kafka_feeds"]


@dataclass(frozen=True)
class KafkaFeeds:
    kafka: KafkaConfig
    group: str
    """The workers' consumer group: whose assignment says who owns a partition."""
    events_topic: str
    counts_topic: str
    trending_topic: str
    partitions: int


def kafka_feeds(feeds: KafkaFeeds) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx running the four feeds of an app built by ``create_app`` with pushes
    and trending, until the app stops."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        reader, hub, board = app[READER], app[HUB], app[TRENDING]
        kafka, parts = feeds.kafka, feeds.partitions
        loops = [
            watch_owners(kafka, feeds.group, feeds.events_topic, reader.owners),
            sample_forever(kafka, reader.state, reader.copies),
            tail_counts(kafka, feeds.counts_topic, parts, hub),
            tail_topic(kafka, feeds.trending_topic, parts, _to_board(board)),
        ]
        tasks = [asyncio.create_task(loop) for loop in loops]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return ctx


def _to_board(board: Board) -> Callable[[ConsumerRecord[bytes, bytes]], None]:
    def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        top = parse_top(record.value)
        if top is not None:
            board.update(top)

    return handle
