"""The likes agent: validates events and folds them into the state; counts go out per flush."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol, cast

import faust
from faust.transport.consumer import Consumer
from faust.types import TP, EventT, Message, StreamT

from likestream._metrics import DLQ_RECORDS, INVALID_EVENTS, event_folded
from likestream._schema import InvalidEvent, LikeEvent, parse_event
from likestream._sender import KafkaSender, Outgoing, Sender
from likestream._settings import Settings
from likestream.tables import LikeTables

from ._confirm import Confirmer, Folded
from ._fold import fold
from ._holes import HoleFiller
from ._positions import Positions, Verdict

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

    def fold_record(
        record: Record,
        tp: TP,
        event: EventT[bytes] | None = None,
        stream: StreamT[bytes] | None = None,
    ) -> None:
        reason = _fold(record, tp.partition, tables)
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


def _fold(record: Record, partition: int, tables: LikeTables) -> str | None:
    """Fold one record into the tables' pending rows; the reason when it is invalid."""
    try:
        like = parse_event(record.key, record.value)
    except InvalidEvent as exc:
        return str(exc)
    item, user = like.item_id, like.user_id
    count, member = tables.count(item, partition), tables.member(item, user, partition)
    result = fold(count, member, like.liked, record.offset)
    event_folded(like.action, result.outcome, _event_time(like, record))
    if result.count is not None:
        tables.put_count(partition, item, result.count)
    if result.member is not None:
        tables.put_member(partition, item, user, result.member)
    return None


def _event_time(like: LikeEvent, record: Record) -> float:
    """Epoch seconds for the latency metric: the event's ts, else the record's timestamp."""
    if like.ts is not None:
        return like.ts / 1000
    return record.timestamp if isinstance(record, Message) else record.timestamp / 1000


def _dead_letter(record: Record, reason: str) -> Outgoing:
    source = f"{record.topic}/{record.partition}/{record.offset}"
    log.warning("invalid record %s to DLQ: %s", source, reason)
    INVALID_EVENTS.inc()
    DLQ_RECORDS.inc()
    return record.key, record.value, [("error", reason.encode()), ("source", source.encode())]
