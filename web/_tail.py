"""Every process tails the compacted ``like-counts`` topic and feeds its push hub.

The consumer has no group: each process reads every partition from its
beginning (the topic is compacted, so that is about one record per item) and
then follows it, so a client connected to any process gets the current count and
the changes of items owned by any other. For owned items table state is newer
still, and wins by its source offset. The same copy is the read replica
(``_replica.py``): after each fetch the tail notes which partitions it has read
to their end, which is what bounds the age of a count read from it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from likestream.domain._retry import poll_forever
from likestream.domain._schema import is_valid_id
from likestream.kafka._factory import KafkaConfig
from likestream.tables import CountRow

from ._hub import Hub

__all__ = ["parse_count", "tail_counts", "tail_topic"]

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0


def parse_count(record: ConsumerRecord[bytes, bytes]) -> tuple[str, CountRow] | None:
    """The item and stamped count of a ``like-counts`` record; None for anything else."""
    headers = dict(record.headers or ())
    try:
        offset = int(headers["source-offset"])
        body = orjson.loads(record.value or b"")
        item, likes = body["item_id"], body["likes"]
    except (KeyError, ValueError, TypeError, orjson.JSONDecodeError):
        return None
    if not is_valid_id(item) or not isinstance(likes, int) or isinstance(likes, bool):
        return None
    return item, CountRow(likes, offset)


async def tail_counts(kafka: KafkaConfig, topic: str, partitions: int, hub: Hub) -> None:
    """Feed ``hub`` from ``topic`` until cancelled; reconnects when Kafka goes away."""

    def handle(record: ConsumerRecord[bytes, bytes]) -> None:
        parsed = parse_count(record)
        if parsed is not None:
            hub.update(*parsed)

    await tail_topic(kafka, topic, partitions, handle, hub.replica.caught_up)


Handle = Callable[[ConsumerRecord[bytes, bytes]], None]
CaughtUp = Callable[[int, float], None]


async def tail_topic(
    kafka: KafkaConfig,
    topic: str,
    partitions: int,
    handle: Handle,
    caught_up: CaughtUp | None = None,
) -> None:
    """Every record of ``topic`` from its beginning, then as they come, to ``handle``;
    until cancelled, reconnecting when Kafka goes away. ``caught_up(partition, at)``
    after each fetch that reached a partition's end (``at``: the fetch's epoch seconds)."""
    tps = [TopicPartition(topic, p) for p in range(partitions)]

    def new() -> AIOKafkaConsumer:
        return kafka.consumer(enable_auto_commit=False, fetch_max_wait_ms=250)

    async def start(consumer: AIOKafkaConsumer) -> None:
        await consumer.start()
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        log.info("reading %s for pushes and replica reads", topic)

    async def step(consumer: AIOKafkaConsumer) -> None:
        # A short wait keeps the catch-up times (the replica's age) current when idle.
        batches = await consumer.getmany(timeout_ms=250, max_records=5000)
        for records in batches.values():
            for record in records:
                handle(record)
        if caught_up is None:
            return
        for tp in tps:
            # The high watermark and its time come from the same fetch response.
            end, at = consumer.highwater(tp), consumer.last_poll_timestamp(tp)
            if end is not None and at is not None and await consumer.position(tp) >= end:
                caught_up(tp.partition, at / 1000)

    # Interval 0: getmany does not suspend while records are buffered, so catching up from
    # the beginning held the loop for seconds at start, and the table's start, group join
    # and bulk restore waited behind it (tables/_restore.py yields the same way).
    await poll_forever(
        f"tail of {topic}", 0, new, start, AIOKafkaConsumer.stop, step, retry=RETRY_SECONDS
    )
