"""The likes agent: validates events and folds them into the state; counts go out per flush."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol, cast

import faust
from faust.transport.consumer import Consumer
from faust.types import TP, EventT, Message, StreamT

from likestream._metrics import DLQ_RECORDS, INVALID_EVENTS, event_folded
from likestream._schema import InvalidEvent, LikeEvent, parse_event
from likestream._sender import KafkaSender, Outgoing, Sender
from likestream._settings import Settings
from likestream._top import encode_top, top_key
from likestream._window_spec import clamp_event_time
from likestream.tables import LikeTables

from ._confirm import Confirmer, Folded
from ._fold import fold
from ._holes import HoleFiller
from ._positions import Positions, Verdict
from ._trending import Trending

__all__ = ["Topics", "define_agents"]

log = logging.getLogger(__name__)

# Past this many unconfirmed events the agent flushes and waits for confirmation
# itself, which bounds memory and the replay after a crash.
MAX_PENDING = 20_000
# How long a stopping worker waits for its last flush to be confirmed.
FINAL_FLUSH_S = 5.0


@dataclass(frozen=True)
class Topics:
    events: faust.TopicT
    counts: str
    dlq: str
    trending: str | None = None
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


def define_agents(
    app: faust.App,
    topics: Topics,
    tables: LikeTables,
    settings: Settings,
    sender: Sender | None = None,
) -> Confirmer:
    """Register the likes agent and its confirmation loop on ``app``.

    ``sender`` writes the changelog, counts and dead letters (tests pass their own).
    Returns the confirmer, whose :meth:`~Confirmer.confirm` flushes what was folded.
    """
    positions = Positions(settings.topic)
    positions.install(cast(Consumer, app.consumer))
    sender = sender or KafkaSender(settings.kafka)
    confirmer = Confirmer(tables, positions, sender, topics.counts, topics.dlq)
    holes = HoleFiller(settings.kafka, settings.app_id)
    trending = Trending(settings.windows, settings.trending_lateness_ms)

    def fold_record(
        record: Record,
        tp: TP,
        event: EventT[bytes] | None = None,
        stream: StreamT[bytes] | None = None,
    ) -> None:
        reason = _fold(record, tp.partition, tables, trending)
        if reason is not None:
            confirmer.dead_letter(tp.partition, _dead_letter(record, reason))
        epoch = positions.folded(tp, record.offset)
        confirmer.add(Folded(tp, record.offset, epoch, stream, event))

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
            fold_record(missing, msg.tp)

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
            fold_record(event.message, event.message.tp, event, acking)
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
            await _publish_trending(app, topics.trending, sender, tables, trending, settings)

    @app.task  # type: ignore[untyped-decorator]
    async def confirm_forever() -> None:
        # A plain loop rather than app.timer: a slow confirmation just delays the
        # next one instead of overlapping it.
        try:
            while True:
                await asyncio.sleep(settings.commit_interval_ms / 1000)
                await confirmer.confirm()
        finally:
            try:
                # A clean stop commits what was folded, so a restart replays nothing.
                await asyncio.wait_for(confirmer.confirm(), FINAL_FLUSH_S)
            except Exception as exc:
                log.warning("last flush on stop failed (%r): a restart replays it", exc)
            finally:
                await sender.stop()
                await holes.close()

    return confirmer


def _fold(record: Record, partition: int, tables: LikeTables, trending: Trending) -> str | None:
    """Fold one record into the tables' pending rows; the reason when it is invalid."""
    try:
        like = parse_event(record.key, record.value)
    except InvalidEvent as exc:
        return str(exc)
    item, user, offset = like.item_id, like.user_id, record.offset
    record_ms = _record_ms(record)
    before = tables.member(item, user, partition)
    result = fold(tables.count(item, partition), before, like.liked, offset)
    event_folded(like.action, result.outcome, _event_time(like, record_ms))
    # Count row, then trending rows, then member row: agents/_fold.py and
    # agents/_trending.py say why the order matters.
    if result.count is not None:
        tables.put_count(partition, item, result.count)
    # The event time the windows use: ts, bounded by the record's timestamp.
    event_ms = clamp_event_time(like.ts, record_ms, trending.lateness_ms)
    windows = trending.partition(partition, tables)
    tables.put_window_rows(
        partition, windows.apply(item, result, before, like.liked, offset, event_ms)
    )
    if result.member is not None:
        tables.put_member(partition, item, user, result.member)
    return None


def _record_ms(record: Record) -> int:
    return int(record.timestamp * 1000 if isinstance(record, Message) else record.timestamp)


def _event_time(like: LikeEvent, record_ms: int) -> float:
    """Epoch seconds for the latency metric: the event's ts, else the record's timestamp."""
    return (like.ts if like.ts is not None else record_ms) / 1000


async def _publish_trending(
    app: faust.App,
    topic: str,
    sender: Sender,
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
        await sender.start()
        for top in trending.changed():
            record: Outgoing = (top_key(top.window, top.partition), encode_top(top), [])
            await sender.send(topic, top.partition, [record])


def _dead_letter(record: Record, reason: str) -> Outgoing:
    source = f"{record.topic}/{record.partition}/{record.offset}"
    log.warning("invalid record %s to DLQ: %s", source, reason)
    INVALID_EVENTS.inc()
    DLQ_RECORDS.inc()
    return record.key, record.value, [("error", reason.encode()), ("source", source.encode())]
