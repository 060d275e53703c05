"""The likes agent: validates events, folds them into the state, publishes counts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol, cast

import faust
import orjson
from faust.transport.consumer import Consumer
from faust.types import TP, EventT, Message, StreamT

from likestream._metrics import DLQ_RECORDS, INVALID_EVENTS, event_folded
from likestream._schema import InvalidEvent, LikeEvent, parse_event
from likestream._settings import Settings
from likestream.tables import LikeTables

from ._confirm import Confirmer, Folded
from ._fold import fold
from ._holes import HoleFiller
from ._positions import Positions, Verdict

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


class Record(Protocol):
    """What the fold needs of a record: faust's Message and aiokafka's ConsumerRecord."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float
    """Seconds for faust's Message; milliseconds for aiokafka's ConsumerRecord (hole reads)."""


def define_agents(app: faust.App, topics: Topics, tables: LikeTables, settings: Settings) -> None:
    """Register the likes agent and its confirmation loop on ``app``."""
    positions = Positions(settings.topic)
    positions.install(cast(Consumer, app.consumer))
    confirmer = Confirmer(tables, positions)
    holes = HoleFiller(settings.kafka, settings.app_id)

    async def fold_record(
        record: Record,
        tp: TP,
        event: EventT[bytes] | None = None,
        stream: StreamT[bytes] | None = None,
    ) -> None:
        futures = await _handle(record, topics, tables)
        epoch = positions.folded(tp, record.offset)
        confirmer.add(Folded(tp, record.offset, epoch, stream, event), futures)

    async def verdict_for(msg: Message) -> Verdict:
        verdict = positions.check(msg.tp, msg.offset)
        if verdict == "unknown":
            # Faust can deliver before it seeks to the committed offset.
            positions.reset(msg.tp, await holes.start_offset(msg.tp))
            verdict = positions.check(msg.tp, msg.offset)
        return verdict

    async def fill_hole(msg: Message) -> None:
        start = positions.next_offset(msg.tp)
        log.warning("faust skipped %s [%d, %d): reading it", msg.tp, start, msg.offset)
        for missing in await holes.read(msg.tp, start, msg.offset):
            await fold_record(missing, msg.tp)

    # One actor folds all of this worker's partitions, each in partition order;
    # faust's isolated_partitions crashes on rebalance (faust issues 181, 529).
    @app.agent(topics.events, name="likes", concurrency=1)
    async def likes(stream: StreamT[bytes]) -> None:
        # StreamT does not declare noack(); agents always receive a faust.Stream.
        acking = cast(faust.Stream[bytes], stream).noack()
        async for event in acking.events():
            verdict = await verdict_for(event.message)
            if verdict == "seen":
                # Folded already; acking cannot commit anything: commits are clamped.
                await acking.ack(event)
                continue
            if verdict == "hole":
                await fill_hole(event.message)
            await fold_record(event.message, event.message.tp, event, acking)
            if confirmer.pending >= MAX_PENDING:
                await confirmer.confirm()

    @app.task  # type: ignore[untyped-decorator]
    async def confirm_forever() -> None:
        # A plain loop rather than app.timer: a slow confirmation just delays the
        # next one instead of overlapping it.
        try:
            while True:
                await asyncio.sleep(settings.commit_interval_ms / 1000)
                await confirmer.confirm()
        finally:
            await holes.close()


async def _handle(record: Record, topics: Topics, tables: LikeTables) -> list[Awaitable[object]]:
    try:
        like = parse_event(record.key, record.value)
    except InvalidEvent as exc:
        return [await _dead_letter(record, topics, str(exc))]
    return await _apply(like, record.offset, topics, tables, _event_time(like, record))


def _event_time(like: LikeEvent, record: Record) -> float:
    """Epoch seconds for the latency metric: the event's ts, else the record's timestamp."""
    if like.ts is not None:
        return like.ts / 1000
    return record.timestamp if isinstance(record, Message) else record.timestamp / 1000


async def _apply(
    like: LikeEvent, offset: int, topics: Topics, tables: LikeTables, event_time: float
) -> list[Awaitable[object]]:
    item, user = like.item_id, like.user_id
    result = fold(tables.count(item), tables.member(item, user), like.liked, offset)
    event_folded(like.action, result.outcome, event_time)
    # Count row first, then member row: agents/_fold.py says why the order matters.
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


async def _dead_letter(record: Record, topics: Topics, reason: str) -> Awaitable[object]:
    source = f"{record.topic}/{record.partition}/{record.offset}"
    log.warning("invalid record %s to DLQ: %s", source, reason)
    INVALID_EVENTS.inc()
    DLQ_RECORDS.inc()
    sent: Awaitable[object] = await topics.dlq.send(
        key=record.key,
        value=record.value,
        headers=[("error", reason.encode()), ("source", source.encode())],
    )
    return sent
