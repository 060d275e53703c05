"""``likestream erase USER``: unlike everything a user likes, through the events topic.

An erase is ordinary ``unlike`` events, so the workers fold them as any other: counts
drop by exactly the user's likes, the changelog records each membership turned off,
``like-counts`` and the pushes follow. Nothing is deleted behind the fold's back.

1. Wait until the workers' group has applied the events topic up to its end as it was
   when the erase began: every like acknowledged before then is in the state.
2. Read the state table's changelog (compacted) from its beginning to its end, keeping
   the user's member rows, the newest stamp of each winning as in recovery.
3. Publish an ``unlike`` per item still liked (acks=all).
4. Wait until the group has applied those too, read the changelog on to its end: no
   item liked, done. An item liked again meanwhile (a like that raced the erase) is
   unliked the same way, until ``limit_s``.

Reading the whole changelog costs about what a worker's recovery reads; it is an
operator's command, not a request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from likestream.client import DeliveryError, LikeClient, new_event
from likestream.config._settings import Settings
from likestream.kafka._factory import KafkaConfig
from likestream.tables import MemberRow, changelog_topic, decode_member, member_of_key

__all__ = ["EraseError", "EraseReport", "EraseUnconfirmed", "UserRows", "erase"]

CONNECT_TIMEOUT = 30.0
POLL_SECONDS = 0.25


class EraseError(Exception):
    """The erase could not run: Kafka unreachable, or no state changelog to read."""


class EraseUnconfirmed(EraseError):
    """Not every membership was seen turned off before the timeout; what was published
    stays published (``str()`` says how many and why)."""


class UserRows:
    """One user's member rows on the changelog: per item the row with the newest
    source-offset stamp (a later record wins a tie), as recovery keeps them."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self._suffix = b"/" + user_id.encode()
        self.rows: dict[str, MemberRow] = {}

    def add(self, key: bytes | None, value: bytes | None) -> None:
        if key is None or not key.endswith(self._suffix):
            return  # cheap: most records are other users' or counts
        member = member_of_key(key)
        if member is None or member[1] != self.user_id:
            return
        item = member[0]
        if value is None:
            self.rows.pop(item, None)
            return
        try:
            row = decode_member(value)
        except ValueError:
            return  # not a row likestream wrote
        current = self.rows.get(item)
        if current is None or row.offset >= current.offset:
            self.rows[item] = row

    def liked(self) -> list[str]:
        return sorted(item for item, row in self.rows.items() if row.liked)


@dataclass
class EraseReport:
    user_id: str
    unliked: list[str] = field(default_factory=list)
    """Items an unlike was published for, in order (twice if liked again meanwhile)."""

    def summary(self) -> str:
        user, items = self.user_id, len(set(self.unliked))
        if not self.unliked:
            return f"erase {user}: {user} liked nothing; no events published"
        again = len(self.unliked) - items
        raced = f", {again} of them liked again during the erase" if again else ""
        return (
            f"erase {user}: {items} items unliked ({len(self.unliked)} unlike events "
            f"published and applied{raced}); {user} likes nothing now"
        )


@dataclass(frozen=True)
class _Kafka:
    consumer: AIOKafkaConsumer
    admin: AIOKafkaAdminClient
    producer: LikeClient


def _kafka_clients(settings: Settings) -> _Kafka:
    """Every Kafka client of an erase, made in this one place."""
    kafka = KafkaConfig.from_settings(settings)
    return _Kafka(
        # No group: it reads by assignment and never commits (not the workers' offsets).
        consumer=kafka.consumer(enable_auto_commit=False),
        admin=kafka.admin(request_timeout_ms=10_000),
        producer=LikeClient(kafka, settings.topic),
    )


@contextlib.asynccontextmanager
async def _connected(settings: Settings) -> AsyncIterator[_Kafka]:
    kafka = _kafka_clients(settings)
    async with contextlib.AsyncExitStack() as stack:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                # Each is closed even when its start failed half-way.
                stack.push_async_callback(kafka.consumer.stop)
                await kafka.consumer.start()
                stack.push_async_callback(kafka.admin.close)
                await kafka.admin.start()
                stack.push_async_callback(kafka.producer.stop)
                await kafka.producer.start()
        except (KafkaError, DeliveryError, TimeoutError) as exc:
            raise EraseError(
                f"cannot reach Kafka at {settings.kafka} (LIKESTREAM_KAFKA): {exc!r}"
            ) from None
        yield kafka


async def erase(settings: Settings, user_id: str, limit_s: float) -> EraseReport:
    """Unlike every item ``user_id`` likes and wait until the workers applied it.

    Raises :class:`EraseUnconfirmed` when that is not seen within ``limit_s`` seconds,
    :class:`EraseError` when Kafka or the changelog cannot be read.
    """
    deadline = time.monotonic() + limit_s
    report = EraseReport(user_id)
    async with _connected(settings) as kafka:
        changelog = changelog_topic(settings.app_id)
        if changelog not in await kafka.consumer.topics():
            raise EraseError(
                f"no changelog topic {changelog!r}: no worker of LIKESTREAM_APP_ID="
                f"{settings.app_id} has run on this cluster"
            )
        events = [TopicPartition(settings.topic, p) for p in range(settings.partitions)]
        logs = [TopicPartition(changelog, p) for p in range(settings.partitions)]
        kafka.consumer.assign(logs)
        await kafka.consumer.seek_to_beginning(*logs)
        rows = UserRows(user_id)
        try:
            while True:
                ends = await kafka.consumer.end_offsets(events)
                await _applied(kafka.admin, settings.app_id, ends, deadline)
                await _read_to_end(kafka.consumer, logs, rows, deadline)
                liked = rows.liked()
                if not liked:
                    return report
                if time.monotonic() > deadline:
                    raise EraseUnconfirmed(
                        f"{len(liked)} items were liked again while erasing; stop the "
                        "user's writes first (see README, Erasing a user)"
                    )
                await kafka.producer.send_many(new_event(user_id, item, "unlike") for item in liked)
                report.unliked += liked
        except EraseUnconfirmed as exc:
            raise EraseUnconfirmed(
                f"{len(report.unliked)} unlike events published, not all seen applied within "
                f"{limit_s:g}s: {exc}. Published events stay in the events topic and apply "
                "when the workers do; run the erase again to check"
            ) from None


async def _applied(
    admin: AIOKafkaAdminClient, group: str, ends: dict[TopicPartition, int], deadline: float
) -> None:
    """Wait until the group's committed offsets reach ``ends``: the workers commit an
    event only once its changelog rows are durable."""
    while True:
        try:
            committed = await admin.list_consumer_group_offsets(group)
        except KafkaError:  # e.g. no coordinator for a moment
            committed = {}
        behind = {
            tp.partition: end - max(0, committed[tp].offset if tp in committed else 0)
            for tp, end in ends.items()
        }
        behind = {p: n for p, n in behind.items() if n > 0}
        if not behind:
            return
        if time.monotonic() > deadline:
            raise EraseUnconfirmed(
                f"the workers (consumer group {group}) have not applied the events topic "
                f"(records behind by partition: {behind}); are they running?"
            )
        await asyncio.sleep(POLL_SECONDS)


async def _read_to_end(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], rows: UserRows, deadline: float
) -> None:
    """Feed ``rows`` from where the consumer is to the current end of ``tps``."""
    ends = await consumer.end_offsets(tps)
    for tp in tps:
        while await consumer.position(tp) < ends[tp]:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            records = batch.get(tp, [])
            for record in records:
                rows.add(record.key, record.value)
            if not records and time.monotonic() > deadline:
                raise EraseUnconfirmed(f"the changelog partition {tp.partition} did not read")
