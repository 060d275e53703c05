"""Producer client: publishes like events keyed by item, confirmed by Kafka.

Example::

    import asyncio
    from likestream.client import LikeClient

    async def main() -> None:
        async with LikeClient("localhost:9092") as client:
            await client.like("alice", "post:9")   # returns once Kafka acknowledged it

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import time
import uuid
from types import TracebackType

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from ._schema import Action, LikeEvent, encode_event

__all__ = ["LikeClient", "new_event"]


def new_event(user_id: str, item_id: str, action: Action) -> LikeEvent:
    """An event with a fresh ``event_id`` and the current time."""
    return LikeEvent(user_id, item_id, action, uuid.uuid4().hex, int(time.time() * 1000))


class LikeClient:
    """Async producer of like events (acks=all, idempotent, murmur2 keyed by item_id)."""

    def __init__(self, bootstrap: str, topic: str = "likes", linger_ms: int = 5) -> None:
        self.topic = topic
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=linger_ms,
            request_timeout_ms=30_000,
        )

    async def __aenter__(self) -> LikeClient:
        await self._producer.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._producer.stop()

    async def like(self, user_id: str, item_id: str) -> RecordMetadata:
        return await (await self.send(new_event(user_id, item_id, "like")))

    async def unlike(self, user_id: str, item_id: str) -> RecordMetadata:
        return await (await self.send(new_event(user_id, item_id, "unlike")))

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
