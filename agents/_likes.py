"""The likes agent: folds whole fetched batches of the events partitions this worker owns.

How an event travels (the guarantees are in ``_fold.py`` and ``_confirm.py``):

1. Faust assigns the partitions. On every assignment, before faust's recovery can
   resume them, the events partitions are paused in faust's own consumer
   (``likestream/kafka/_internals.py``): faust never delivers them one by one.
2. Once the tables are recovered, the feed (``_feed.py``) reads each owned partition
   from the group's committed offset, in whole fetched batches.
3. A batch is folded synchronously: decoded, its member rows read with one RocksDB
   multi-get, counts kept in memory, rows put to the tables' pending batch. No task,
   future or await per record; metrics are counted per batch.
4. Every ``LIKESTREAM_COMMIT_INTERVAL_MS`` (and whenever too much is pending, on a
   revocation and on stop) the confirmer flushes the rows, waits for Kafka, and only
   then commits, through faust's group member.

A failed delivery rewinds: what was folded since is dropped and the partitions are
read again from their durable positions, as after a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import faust
from aiokafka.errors import KafkaError
from faust.types import TP, StreamT

from likestream.config._settings import Settings
from likestream.domain._schema import InvalidEvent, parse_event
from likestream.domain._top import encode_top, top_key
from likestream.domain._window_spec import clamp_event_time
from likestream.kafka import _internals as internals
from likestream.kafka._factory import KafkaConfig
from likestream.kafka._sender import Outgoing, Sender
from likestream.runtime._metrics import DLQ_RECORDS, HOLE_FILLS, INVALID_EVENTS, events_folded
from likestream.tables import ITEM_ROWS_MAX, LikeTables
from likestream.tables._rows import member_key

from ._confirm import Confirmer, DeliveryFailed
from ._feed import EventsFeed
from ._fold import fold
from ._positions import Positions
from ._trending import Trending

__all__ = ["LikesAgent", "Record", "Topics"]

log = logging.getLogger(__name__)

# Past this many events folded since the last flush the agent flushes at once: it
# bounds memory, the replay after a crash, and the rows of one item in one flush,
# which must fit in one record batch (likestream/kafka/_sender.py MAX_BATCH_BYTES).
MAX_PENDING = 10_000
# How long a revocation or a stop waits for the last flush to be confirmed.
FINAL_FLUSH_S = 5.0
FETCH_WAIT_MS = 100


@dataclass(frozen=True)
class Topics:
    events: faust.TopicT
    counts: str
    dlq: str


class Record(Protocol):
    """What the fold needs of a record (aiokafka's ConsumerRecord)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int:
        """Milliseconds."""
        ...


class LikesAgent:
    """The agent, its feed, its positions and its confirmer; :meth:`install` wires them
    into the faust app."""

    def __init__(
        self,
        app: faust.App,
        topics: Topics,
        tables: LikeTables,
        settings: Settings,
        sender: Sender,
        commit: Callable[[Mapping[TP, int]], Awaitable[bool]],
    ) -> None:
        """``sender`` writes the changelog, counts and dead letters (the runtime's is a
        ``KafkaSender``); ``commit`` commits offsets (the runtime's, as faust's group
        member: ``likestream.kafka._internals.commit``)."""
        self.app = app
        self.topics = topics
        self.tables = tables
        self.settings = settings
        kafka = KafkaConfig.from_settings(settings)
        self.sender = sender
        self.positions = Positions()
        self.trending = Trending(settings.windows, settings.trending_lateness_ms)
        self.feed = EventsFeed(kafka, settings.app_id)
        self.confirmer = Confirmer(
            tables,
            self.positions,
            self.sender,
            topics.counts,
            topics.dlq,
            commit=commit,
            seal=self._seal,
            on_failure=self._rewind,
        )
        self._wanted: set[TP] | None = None  # assigned, not read from yet
        self._generation = 0  # bumped by every assignment and revocation

    # -- wiring ------------------------------------------------------------------------

    def install(self) -> None:
        """Register the agent, its hooks and its timers on the app."""
        self.tables.table.on_assigned = self._on_assigned
        self.tables.table.on_stopping = self._on_stopping
        internals.on_partitions_revoked(self.app, self._on_revoked)

        # One actor folds all of this worker's partitions, each in offset order.
        @self.app.agent(self.topics.events, name="likes", concurrency=1)
        async def likes(stream: StreamT[bytes]) -> None:
            await asyncio.gather(self._fold_forever(), _refuse(stream))

        @self.app.task  # type: ignore[untyped-decorator]
        async def confirm_forever() -> None:
            await self._confirm_forever()

        @self.app.task  # type: ignore[untyped-decorator]
        async def publish_trending_forever() -> None:
            await self._publish_trending(self.settings.trending_topic)

    # -- assignment ----------------------------------------------------------------------

    async def _on_assigned(self, assigned: set[TP]) -> None:
        """First thing of every assignment, before faust's recovery."""
        self._generation += 1
        ours = {tp for tp in assigned if tp.topic == self.settings.topic}
        await internals.pause_group_fetching(self.app, ours)
        self._wanted = ours

    async def _on_revoked(self, revoked: set[TP]) -> None:
        """Flush and commit what was folded while the generation still allows it; then
        forget the revoked partitions: their rows may change on another worker."""
        await self._stop_reading("revocation", "the next owner")
        ours = {tp for tp in revoked if tp.topic == self.settings.topic}
        self._forget(ours)
        remaining = set(self.positions.assigned)
        if remaining:
            self._wanted = remaining

    async def _on_stopping(self) -> None:
        """The worker stops: fold nothing more, then flush and commit what was folded, so
        that a restart replays nothing (while the group member can still commit)."""
        await self._stop_reading("stop", "a restart")

    async def _stop_reading(self, when: str, replayer: str) -> None:
        self._generation += 1
        self._wanted = None
        self.feed.unassign()
        try:
            await asyncio.wait_for(self.confirmer.confirm(), FINAL_FLUSH_S)
        except (DeliveryFailed, TimeoutError) as exc:
            log.warning("flush on %s failed (%r): %s replays it", when, exc, replayer)

    def _forget(self, tps: set[TP]) -> None:
        partitions = {tp.partition for tp in tps}
        for tp in tps:
            self.positions.stop(tp)
        self.tables.discard(partitions)
        self.confirmer.discard(partitions)
        self.trending.forget(partitions)

    async def _start_reading(self, wanted: set[TP]) -> None:
        generation = self._generation
        starts = await self.feed.assign(wanted)
        if generation != self._generation:
            return  # rebalanced meanwhile: the newer assignment starts over
        self._wanted = None
        for tp, offset in starts.items():
            self.positions.start(tp, offset)
        log.info("reading %s", ", ".join(f"{tp.partition}@{o}" for tp, o in sorted(starts.items())))

    async def _rewind(self) -> None:
        """After a failed delivery: drop what was folded, read again from what is durable."""
        tps = set(self.positions.assigned)
        partitions = {tp.partition for tp in tps}
        self.tables.discard(partitions)
        self.trending.forget(partitions)
        starts = self.positions.rewind(tps)
        self.feed.seek(starts)
        HOLE_FILLS.inc(len(starts))
        # A new producer: an idempotent one can stay unusable after a failed batch.
        await self.sender.stop()

    # -- folding ---------------------------------------------------------------------------

    async def _fold_forever(self) -> None:
        while True:
            wanted = self._wanted
            if wanted is not None and self.tables.ready():
                await self._start_reading(wanted)
            await self.fold_fetched(await self.feed.fetch(FETCH_WAIT_MS))
            # A fetch that finds records buffered returns without suspending: let the
            # flush, the web server and the timers run between two batches.
            await asyncio.sleep(0)

    async def fold_fetched(self, batches: Mapping[TP, Sequence[Record]]) -> None:
        """Fold what one fetch returned, flushing early when too much is pending."""
        epoch = self.feed.epoch
        for tp, records in batches.items():
            # In chunks, so that no item gathers more member rows between two flushes
            # than one record batch holds (tables/_state.py ITEM_ROWS_MAX).
            for start in range(0, len(records), ITEM_ROWS_MAX):
                if self.feed.epoch != epoch:
                    return  # rewound or rebalanced during a flush: the feed reads again
                if self.positions.next_offset(tp) is None:
                    break  # not assigned
                self.fold_partition(tp, records[start : start + ITEM_ROWS_MAX])
                if self.tables.crowded():
                    await self.confirmer.flush()
        if self.confirmer.pending >= MAX_PENDING:
            await self.confirmer.flush()

    def fold_partition(self, tp: TP, records: Sequence[Record]) -> None:
        """Fold one partition's fetched records, in offset order, into pending rows."""
        start = self.positions.next_offset(tp)
        if start is not None and records and records[0].offset < start:
            records = [r for r in records if r.offset >= start]
        if not records:
            return
        partition, confirmer = tp.partition, self.confirmer
        windows = self.trending.partition(partition, self.tables)
        likes = []
        for record in records:
            try:
                like = parse_event(record.key, record.value)
            except InvalidEvent as exc:
                confirmer.dead_letter(partition, _dead_letter(record, str(exc)))
                continue
            likes.append((record, like, member_key(like.item_id, like.user_id)))
        rows = self.tables.fold_rows(partition)
        members = rows.members([(like.item_id, key) for _, like, key in likes])
        count, put_count, put_member = rows.count, rows.put_count, rows.put_member
        apply, lateness = windows.apply, self.trending.lateness_ms
        tally: defaultdict[tuple[str, str], int] = defaultdict(int)
        oldest: float | None = None
        for record, like, key in likes:
            item, offset, liked = like.item_id, record.offset, like.liked
            before = members[key]
            result = fold(count(item), before, liked, offset)
            tally[like.action, result.outcome] += 1
            # Count row, then trending rows, then member row: _fold.py and
            # _trending.py say why the order matters.
            if result.count is not None:
                put_count(item, result.count)
            event_ms = clamp_event_time(like.ts, record.timestamp, lateness)
            written = apply(item, result, before, liked, offset, event_ms)
            if written:
                rows.put_window_rows(written)
            if result.member is not None:
                put_member(item, key, result.member)
                members[key] = result.member
            if oldest is None and result.outcome == "applied":
                oldest = (like.ts if like.ts is not None else record.timestamp) / 1000
        events_folded(tally, oldest)
        self.positions.folded(tp, records[-1].offset + 1)
        confirmer.pending += len(records)

    def _seal(self) -> None:
        for partition, windows in self.trending.partitions.items():
            rows = windows.seal()
            if rows:
                self.tables.put_window_rows(partition, rows)

    async def _confirm_forever(self) -> None:
        # A plain loop rather than app.timer: a slow confirmation just delays the
        # next one instead of overlapping it.
        async def flush_forever() -> None:
            while True:
                await asyncio.sleep(self.settings.commit_interval_ms / 1000)
                await self.confirmer.flush()

        try:
            # Either failing (a bug: Kafka's errors rewind instead) crashes the worker.
            await asyncio.gather(flush_forever(), self.confirmer.settle_forever())
        finally:
            # The last flush ran when faust stopped the tables (_on_stopping); faust
            # cancels its tasks only once its consumer is gone.
            await self.sender.stop()
            await self.feed.stop()

    # -- trending ----------------------------------------------------------------------------

    async def _publish_trending(self, topic: str) -> None:
        """Every interval, publish the top items of the owned partitions that changed.

        Coalesced: at most one record per window and partition per interval. Derived
        data, so not part of any event's acknowledgement: a crash loses at most what
        the next change (or the rebuild after an assignment) publishes again.
        """
        while True:
            await asyncio.sleep(self.settings.trending_interval_ms / 1000)
            if not self.tables.ready():
                continue
            owned = {
                tp.partition
                for tp in self.app.assignor.assigned_actives()
                if tp.topic == self.settings.topic
            }
            self.trending.forget(set(self.trending.partitions) - owned)
            for partition in owned:
                self.trending.partition(partition, self.tables)  # built when missing
            try:
                await self.sender.start()
                for top in self.trending.changed():
                    record: Outgoing = (top_key(top.window, top.partition), encode_top(top), [])
                    await self.sender.send(topic, top.partition, [record])
            except (KafkaError, RuntimeError) as exc:
                # The confirmer may restart the sender meanwhile; the next change
                # (or rebuild) publishes again.
                log.warning("publishing trending failed (%r)", exc)


async def _refuse(stream: StreamT[bytes]) -> None:
    """Faust must never deliver the events topic itself (the partitions are paused in
    its consumer): if it does, stop loudly rather than fold anything twice or block."""
    async for event in stream.events():
        raise internals.InternalsChanged(
            f"faust delivered {event.message.tp} offset {event.message.offset} itself: "
            "pausing the events partitions in its consumer no longer works "
            "(likestream/kafka/_internals.py pause_group_fetching)"
        )


def _dead_letter(record: Record, reason: str) -> Outgoing:
    source = f"{record.topic}/{record.partition}/{record.offset}"
    log.warning("invalid record %s to DLQ: %s", source, reason)
    INVALID_EVENTS.inc()
    DLQ_RECORDS.inc()
    return record.key, record.value, [("error", reason.encode()), ("source", source.encode())]
