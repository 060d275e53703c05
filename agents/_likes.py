"""The likes agent: validates events, folds them into the state, publishes counts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import faust
import orjson
from faust.transport.consumer import Consumer
from faust.types import TP, EventT, Message, StreamT

from likestream._metrics import DLQ_RECORDS, INVALID_EVENTS, event_folded
from likestream._schema import InvalidEvent, LikeEvent, parse_event
from likestream._settings import Settings
from likestream._top import encode_top, top_key
from likestream._window_spec import clamp_event_time
from likestream.tables import LikeTables

from ._confirm import Confirmer, Folded
from ._fold import fold
from ._holes import HoleFiller
from ._positions import Positions, Verdict
from ._trending import PartitionTrending, Trending

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
    trending: faust.TopicT | None = None
    """Where the top items of owned partitions go; None: not published (unit tests)."""


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
    trending = Trending(settings.windows, settings.trending_lateness_ms)

    async def fold_record(
        record: Record,
        tp: TP,
        event: EventT[bytes] | None = None,
        stream: StreamT[bytes] | None = None,
    ) -> None:
        futures = await _handle(record, topics, tables, trending)
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

    def forget_revoked(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        # A revoked partition's rows may change on another worker: rebuild when back.
        revoked: set[TP] = args[0] if args else kwargs.get("revoked", set())
        trending.forget(tp.partition for tp in revoked if tp.topic == settings.topic)

    # mode types the handler as a union mypy cannot match a plain function against.
    app.on_partitions_revoked.connect(cast(Any, forget_revoked))

    @app.task  # type: ignore[untyped-decorator]
    async def publish_trending_forever() -> None:
        if topics.trending is not None:
            await _publish_trending(app, topics.trending, tables, trending, settings)

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


async def _handle(
    record: Record, topics: Topics, tables: LikeTables, trending: Trending
) -> list[Awaitable[object]]:
    try:
        like = parse_event(record.key, record.value)
    except InvalidEvent as exc:
        return [await _dead_letter(record, topics, str(exc))]
    record_ms = _record_ms(record)
    return await _apply(
        like,
        record.offset,
        topics,
        tables,
        _event_time(like, record_ms),
        # Trending: the event time the windows use, and the partition's windows.
        clamp_event_time(like.ts, record_ms, trending.lateness_ms),
        trending.partition(record.partition, tables),
    )


def _record_ms(record: Record) -> int:
    return int(record.timestamp * 1000 if isinstance(record, Message) else record.timestamp)


def _event_time(like: LikeEvent, record_ms: int) -> float:
    """Epoch seconds for the latency metric: the event's ts, else the record's timestamp."""
    return (like.ts if like.ts is not None else record_ms) / 1000


async def _apply(
    like: LikeEvent,
    offset: int,
    topics: Topics,
    tables: LikeTables,
    event_time: float,
    event_ms: int,
    windows: PartitionTrending,
) -> list[Awaitable[object]]:
    item, user = like.item_id, like.user_id
    before = tables.member(item, user)
    result = fold(tables.count(item), before, like.liked, offset)
    event_folded(like.action, result.outcome, event_time)
    # Count row first, then member row: agents/_fold.py says why the order matters.
    if result.count is not None:
        tables.put_count(item, result.count)
    # Trending rows between the two: agents/_trending.py says why.
    tables.put_window_rows(windows.apply(item, result, before, like.liked, offset, event_ms))
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


async def _publish_trending(
    app: faust.App,
    topic: faust.TopicT,
    tables: LikeTables,
    trending: Trending,
    settings: Settings,
) -> None:
    """Every interval, publish the top items of the owned partitions that changed.

    Coalesced: at most one record per window and partition per interval. Derived
    data, so not part of any event's acknowledgement: a crash loses at most what
    the next change (or the rebuild after an assignment) publishes again.
    """
    while True:
        await asyncio.sleep(settings.trending_interval_ms / 1000)
        if not tables.ready():
            continue
        owned = {
            tp.partition for tp in app.assignor.assigned_actives() if tp.topic == settings.topic
        }
        trending.forget(set(trending.partitions) - owned)
        for partition in owned:
            trending.partition(partition, tables)  # built from the rows when missing
        for top in trending.changed():
            await topic.send(
                key=top_key(top.window, top.partition),
                value=encode_top(top),
                partition=top.partition,
            )


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
