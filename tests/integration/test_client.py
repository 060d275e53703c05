"""The producer client on the real broker: records land where Java's partitioner puts them."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from likestream.client import DeliveryError, KafkaConfig, LikeClient, SyncLikeClient, new_event
from likestream.devtools._broker import Broker
from likestream.domain._partition import partition_for

pytestmark = pytest.mark.integration

# Item ids of tests/unit/domain/test_partition.py with the partition (of 8) that Java's
# default partitioner picks for them.
JAVA_OF_8 = [
    ("21", 4),
    ("foobar", 6),
    ("a-little-bit-long-string", 0),
    ("post:9", 1),
    ("item:0", 2),
    ("u42", 7),
    ("x", 6),
]


async def new_topic(broker: Broker, partitions: int) -> str:
    name = f"client-{partitions}-{uuid.uuid4().hex[:8]}"
    admin = broker.kafka.admin()
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


async def records_by_partition(
    broker: Broker, topic: str, partitions: int
) -> dict[int, list[tuple[bytes, dict[str, object]]]]:
    consumer = broker.kafka.consumer(enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found: dict[int, list[tuple[bytes, dict[str, object]]]] = {}
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    assert record.key is not None
                    assert record.value is not None
                    found.setdefault(tp.partition, []).append(
                        (record.key, orjson.loads(record.value))
                    )
        return found
    finally:
        await consumer.stop()


@pytest.fixture
async def topic8(broker: Broker) -> str:
    return await new_topic(broker, 8)


async def test_records_land_on_the_java_partition(broker: Broker, topic8: str) -> None:
    async with LikeClient(broker.kafka, topic8) as client:
        for item, java in JAVA_OF_8:
            stored = await client.like("u1", item)
            assert stored.partition == java == partition_for(item.encode(), 8)

    found = await records_by_partition(broker, topic8, 8)
    landed = {key.decode(): p for p, records in found.items() for key, _ in records}
    assert landed == dict(JAVA_OF_8)
    for records in found.values():
        for key, value in records:
            assert value["item_id"] == key.decode()
            assert (value["user_id"], value["action"]) == ("u1", "like")


async def test_batches_are_confirmed_and_keyed(broker: Broker) -> None:
    topic = await new_topic(broker, 12)
    events = [new_event(f"u{i % 7}", f"item:{i}", "like") for i in range(500)]
    async with LikeClient(broker.kafka, topic) as client:
        stored = await client.send_many(events)
    assert [s.partition for s in stored] == [partition_for(e.item_id.encode(), 12) for e in events]

    found = await records_by_partition(broker, topic, 12)
    assert sum(len(records) for records in found.values()) == len(events)
    for partition, records in found.items():
        assert all(partition_for(key, 12) == partition for key, _ in records)
    ids = {str(value["event_id"]) for records in found.values() for _, value in records}
    assert ids == {e.event_id for e in events}


async def test_sync_client(broker: Broker, topic8: str) -> None:
    def use() -> list[int]:
        with SyncLikeClient(broker.kafka, topic8) as client:
            liked = client.like("alice", "post:9")
            unliked = client.unlike("alice", "post:9")
            many = client.send_many([new_event("bob", "x", "like")])
        return [liked.partition, unliked.partition, many[0].partition]

    assert await asyncio.to_thread(use) == [1, 1, 6]
    found = await records_by_partition(broker, topic8, 8)
    assert [v["action"] for _, v in found[1]] == ["like", "unlike"]


async def test_unknown_topic_is_a_delivery_error(broker: Broker) -> None:
    async with LikeClient(broker.kafka, "no-such-topic", request_timeout_ms=1000) as client:
        with pytest.raises(DeliveryError):
            await client.like("alice", "post:9")


async def test_unreachable_kafka_is_a_delivery_error() -> None:
    with pytest.raises(DeliveryError, match="cannot reach Kafka"):
        await LikeClient(KafkaConfig("localhost:9")).start()


class _FreezeAfterBootstrap(logging.Handler):
    """Freezes the broker (SIGSTOP) once aiokafka has its bootstrap metadata: the
    producer then asks a broker that never answers for its id, as after a crash."""

    def __init__(self, pid: int) -> None:
        super().__init__(logging.DEBUG)
        self.pid = pid
        self.frozen = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.frozen and record.getMessage().startswith("Received cluster metadata"):
            os.kill(self.pid, signal.SIGSTOP)
            self.frozen = True


async def test_start_gives_up_when_the_broker_stops_answering_after_bootstrap(
    broker: Broker,
) -> None:
    """aiokafka retries an idempotent producer's id forever; start() must not."""
    pid = broker.pid()
    assert pid is not None
    logger = logging.getLogger("aiokafka")
    hook = _FreezeAfterBootstrap(pid)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(hook)
    try:
        client = LikeClient(broker.kafka, request_timeout_ms=1000)
        # Generous: the bound is 2 s; without one, start() never returns.
        with pytest.raises(DeliveryError, match="cannot reach Kafka"):
            await asyncio.wait_for(client.start(), 120)
        assert hook.frozen, "the bootstrap never got the broker's metadata"
    finally:
        logger.removeHandler(hook)
        logger.setLevel(level)
        os.kill(pid, signal.SIGCONT)
    async with LikeClient(broker.kafka, await new_topic(broker, 1)) as client:  # thawed
        assert (await client.like("alice", "post:9")).offset == 0
