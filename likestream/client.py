"""Producer client: publishes like events keyed by item, confirmed by Kafka.

It writes to Kafka directly, without tokens or rate limits: for trusted back ends and
tools. Applications acting for users go through the API with
:mod:`likestream.api_client` instead.

Every record follows docs/ARCHITECTURE.md#events: key = the item id as UTF-8, value = the
event as JSON, partition = Kafka's default murmur2 of the key (the same one Java
clients and librdkafka's ``murmur2_random`` pick), acks from all in-sync
replicas, and an idempotent producer so that its own retries never duplicate.

Example::

    import asyncio
    from likestream.client import KafkaConfig, LikeClient

    async def main() -> None:
        async with LikeClient(KafkaConfig("localhost:9092")) as client:
            await client.like("alice", "post:9")   # returns once Kafka acknowledged it

    asyncio.run(main())

Without asyncio, :class:`SyncLikeClient` does the same with plain calls. A secured
cluster takes its security options in the :class:`KafkaConfig` (``protocol``,
``username``, ``password``, ``ca_file``; see ``likestream/kafka/_factory.py``).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterable
from types import TracebackType

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from likestream.domain._partition import partition_for
from likestream.domain._schema import Action, LikeEvent, encode_event
from likestream.kafka._factory import KafkaConfig

__all__ = [
    "DeliveryError",
    "KafkaConfig",
    "LikeClient",
    "RecordMetadata",
    "SyncLikeClient",
    "by_item",
    "new_event",
]


class DeliveryError(Exception):
    """Kafka did not acknowledge an event; it may or may not have been written."""


def new_event(user_id: str, item_id: str, action: Action) -> LikeEvent:
    """An event with a fresh ``event_id`` and the current time."""
    return LikeEvent(user_id, item_id, action, uuid.uuid4().hex, int(time.time() * 1000))


def by_item(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka partitioner: Kafka's default murmur2 of the key, as Java computes it."""
    if key is None:  # only raw test records; events are always keyed
        return random.choice(available or all_partitions)
    return sorted(all_partitions)[partition_for(key, len(all_partitions))]


class LikeClient:
    """Async producer of like events (acks=all, idempotent, murmur2 keyed by item_id).

    Use as ``async with``, or call :meth:`start` and :meth:`stop`. Not shared
    across event loops.
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        topic: str = "likes",
        linger_ms: int = 5,
        request_timeout_ms: int = 30_000,
    ) -> None:
        self.topic = topic
        self._kafka = kafka
        self._config = {
            "linger_ms": linger_ms,
            "request_timeout_ms": request_timeout_ms,
        }
        self._started: AIOKafkaProducer | None = None

    async def start(self) -> None:
        # aiokafka binds a producer to the running loop, so it is made here.
        producer = self._kafka.producer(
            **self._config, acks="all", enable_idempotence=True, partitioner=by_item
        )
        # aiokafka retries the idempotent producer's id (InitProducerId) for as long as
        # the broker answers with an error or not at all (seen after a broker crash),
        # so start() could wait forever: bounded, by the bootstrap's request and the
        # id's, one request timeout each.
        limit_s = 2 * self._config["request_timeout_ms"] / 1000
        try:
            await asyncio.wait_for(producer.start(), limit_s)
        except (KafkaError, TimeoutError) as exc:
            await producer.stop()
            reason = str(exc) or f"no producer id within {limit_s:g}s"
            raise DeliveryError(f"cannot reach Kafka: {reason}") from exc
        self._started = producer

    async def stop(self) -> None:
        """Wait for what is queued to be delivered, then disconnect."""
        if self._started is not None:
            producer, self._started = self._started, None
            await producer.stop()

    async def __aenter__(self) -> LikeClient:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def _producer(self) -> AIOKafkaProducer:
        if self._started is None:
            raise RuntimeError("LikeClient is not started: use `async with` or start()")
        return self._started

    async def like(self, user_id: str, item_id: str) -> RecordMetadata:
        """Publish a like; returns where Kafka stored it once acknowledged."""
        return await self.publish(new_event(user_id, item_id, "like"))

    async def unlike(self, user_id: str, item_id: str) -> RecordMetadata:
        return await self.publish(new_event(user_id, item_id, "unlike"))

    async def publish(self, event: LikeEvent) -> RecordMetadata:
        """Publish ``event`` and wait for the acknowledgement; :class:`DeliveryError` if none."""
        return (await self.send_many([event]))[0]

    async def send_many(self, events: Iterable[LikeEvent]) -> list[RecordMetadata]:
        """Publish ``events`` in batches; returns once every one is acknowledged, in order.

        Raises :class:`DeliveryError` if any was not; the others may have been written.
        """
        try:
            pending = [await self.send(event) for event in events]
            return list(await asyncio.gather(*pending))
        except KafkaError as exc:
            raise DeliveryError(f"Kafka did not acknowledge: {exc!r}") from exc

    async def send(self, event: LikeEvent) -> asyncio.Future[RecordMetadata]:
        """Queue ``event``; the returned future resolves once Kafka acknowledged it."""
        fut: asyncio.Future[RecordMetadata] = await self._producer.send(
            self.topic, encode_event(event), key=event.item_id.encode()
        )
        return fut

    async def send_raw(self, key: bytes | None, value: bytes | None) -> RecordMetadata:
        """Publish arbitrary bytes (for tests of the dead-letter path)."""
        result: RecordMetadata = await self._producer.send_and_wait(self.topic, value, key=key)
        return result

    async def flush(self) -> None:
        await self._producer.flush()


class SyncLikeClient:
    """:class:`LikeClient` for code without asyncio; each call returns once acknowledged.

    It runs its own event loop in the calling thread, so use it from one thread
    and not inside a running event loop::

        with SyncLikeClient(KafkaConfig("localhost:9092")) as client:
            client.like("alice", "post:9")
    """

    def __init__(self, kafka: KafkaConfig, topic: str = "likes", linger_ms: int = 5) -> None:
        self._runner = asyncio.Runner()
        self._client = LikeClient(kafka, topic, linger_ms)
        try:
            self._runner.run(self._client.start())
        except BaseException:
            self._runner.close()
            raise

    def like(self, user_id: str, item_id: str) -> RecordMetadata:
        return self._runner.run(self._client.like(user_id, item_id))

    def unlike(self, user_id: str, item_id: str) -> RecordMetadata:
        return self._runner.run(self._client.unlike(user_id, item_id))

    def send_many(self, events: Iterable[LikeEvent]) -> list[RecordMetadata]:
        return self._runner.run(self._client.send_many(events))

    def close(self) -> None:
        try:
            self._runner.run(self._client.stop())
        finally:
            self._runner.close()

    def __enter__(self) -> SyncLikeClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
