"""The likes agent: validates events, folds them into the state, publishes counts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import cast

import faust
import orjson
from faust.transport.consumer import Consumer
from faust.types import EventT, StreamT

from likestream._metrics import DLQ_RECORDS, INVALID_EVENTS, event_folded
from likestream._schema import InvalidEvent, LikeEvent, parse_event
from likestream._settings import Settings
from likestream.tables import LikeTables

from ._confirm import Confirmer
from ._fold import fold
from ._positions import Positions

__all__ = ["Topics", "define_agents"]

log = logging.getLogger(__name__)

# Past this many unconfirmed events the agent waits for confirmation itself,
# which bounds memory and the replay after a crash.
MAX_PENDING = 5000


@dataclass(frozen=True)
class Topics:
    events: faust.TopicT
    counts: faust.TopicT
    dlq: faust.TopicT


def define_agents(app: faust.App, topics: Topics, tables: LikeTables, settings: Settings) -> None:
    """Register the likes agent and its confirmation timer on ``app``."""
    positions = Positions(settings.topic)
    positions.install(cast(Consumer, app.consumer))
    confirmer = Confirmer(tables, positions)

    # One actor folds all of this worker's partitions, each in partition order;
    # faust's isolated_partitions crashes on rebalance (faust issues 181, 529).
    @app.agent(topics.events, name="likes", concurrency=1)
    async def likes(stream: StreamT[bytes]) -> None:
        # StreamT does not declare noack(); agents always receive a faust.Stream.
        acking = cast(faust.Stream[bytes], stream).noack()
        async for event in acking.events():
            tp, offset = event.message.tp, event.message.offset
            verdict = positions.check(tp, offset)
            if verdict != "fold":
                if verdict == "hole":
                    await positions.rewind(app.consumer, tp)
                # Nothing folded, so acking cannot commit it: commits are clamped.
                await acking.ack(event)
                continue
            futures = await _handle(event, topics, tables)
            confirmer.add(acking, event, futures, positions.folded(tp, offset))
            if confirmer.pending >= MAX_PENDING:
                await confirmer.confirm()

    @app.task  # type: ignore[untyped-decorator]
    async def confirm_forever() -> None:
        # A plain loop rather than app.timer: a slow confirmation just delays the
        # next one instead of overlapping it.
        while True:
            await asyncio.sleep(settings.commit_interval_ms / 1000)
            await confirmer.confirm()


async def _handle(
    event: EventT[bytes], topics: Topics, tables: LikeTables
) -> list[Awaitable[object]]:
    msg = event.message
    try:
        like = parse_event(msg.key, msg.value)
    except InvalidEvent as exc:
        return [await _dead_letter(event, topics, str(exc))]
    # Event time for the latency metric: the event's ts, else the record's timestamp.
    event_time = like.ts / 1000 if like.ts is not None else msg.timestamp
    return await _apply(like, msg.offset, topics, tables, event_time)


async def _apply(
    like: LikeEvent, offset: int, topics: Topics, tables: LikeTables, event_time: float
) -> list[Awaitable[object]]:
    item, user = like.item_id, like.user_id
    result = fold(tables.count(item), tables.member(item, user), like.liked, offset)
    event_folded(like.action, result.outcome, event_time)
    if result.count is not None:
        tables.put_count(item, result.count)
    if result.member is not None:
        tables.put_member(item, user, result.member)
    if result.count is None:
        return []
    sent = await topics.counts.send(
        key=item.encode(),
        value=orjson.dumps({"item_id": item, "likes": result.count.likes}),
        headers=[("source-offset", str(result.count.offset).encode())],
    )
    return [sent]


async def _dead_letter(event: EventT[bytes], topics: Topics, reason: str) -> Awaitable[object]:
    msg = event.message
    log.warning("invalid record %s[%d]@%d to DLQ: %s", msg.topic, msg.partition, msg.offset, reason)
    INVALID_EVENTS.inc()
    DLQ_RECORDS.inc()
    source = f"{msg.topic}/{msg.partition}/{msg.offset}".encode()
    sent: Awaitable[object] = await topics.dlq.send(
        key=msg.key,
        value=msg.value,
        headers=[("error", reason.encode()), ("source", source)],
    )
    return sent
