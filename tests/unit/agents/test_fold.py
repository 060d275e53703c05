"""The fold is exact under crashes and failed deliveries: the real worker against a model Kafka.

Each run drives the real code of one worker, restarted after every crash: the likes
agent's fold (``LikesAgent.fold``: ``LikeTables``, the trending index, ``fold``), the
confirmer's flushes (``LikeTables.flush`` and ``send_changelog``) and settles with the
agent's ``Positions`` and rewind, the tables' RocksDB on disk (rocksdict), and the
recovery: ``StampedTable.on_rebalance``, whose bulk restore (``tables/_restore.py``
``restore``) merges the changelog (``StampedTable.merge``), then faust's recovery
(``apply_changelog_batch``) from where the restore got. Only Kafka is a model
(:class:`Kafka`: topic logs, the group's committed offset, the producer's batches
between them, and the restore's consumer); faust's recovery loop is a model of its
calls into the table.

Per seed, random events of one partition (likes, unlikes, duplicates, invalid records;
event times mostly advancing, some late, some ahead of their record, some with no
``ts``) are folded in random fetches. At random steps the worker flushes (several
flushes stay in flight), settles (in a task of its own, as the agent does) or lets Kafka
answer some of the batches queued so far, oldest first per topic, topics in any order
(a delayed delivery): each is appended to its log and acknowledged, fails without being
appended, or is appended but its acknowledgement fails. The sender cuts each send into
batches at random group boundaries (``ends``) and any batch can fail while later ones
are delivered; a send can also raise after handing over part of its batches (a failed
delivery in the flush itself). A failed delivery rewinds the agent, which then reads
the events again from its durable position.

Faults of a worker's life (one drawn per life, besides Kafka's failures): a SIGKILL
between two steps; while handing a flush's batches over (after its RocksDB write);
at any RocksDB write (a flush's write batch, a persisted offset, a recovery merge),
before it lands or just after; while committing (before or after the commit reaches
the broker; a commit may also be refused); or while recovering. A SIGKILL loses the
process's memory (pending rows, indexes, futures) and keeps every RocksDB write that
returned (RocksDB's write-ahead log is written before a write returns: the databases
are closed and opened again on the same directory, ``test_kill_keeps_rocksdb_writes``
checks this against a real SIGKILL); each batch still queued may or may not reach its
log; the broker's committed offset is what the last commit that reached it said. The
bulk restore may also fail (a Kafka error) or stall part way, and faust's recovery goes
on from there; the changelog may have been compacted as far as Kafka ever goes (any
record of a key but its last, and a last tombstone). The next worker keeps the data
dir, loses it (recovery merges the whole changelog into an empty one), or is another
worker with the copy it kept when it last held the partition (behind: recovery merges
from its persisted offset), then reads from the committed offset.

After the last crash a worker runs until every event is committed. Then its state, a
state rebuilt from the changelog alone, and the agent's live trending index must equal
the oracles below, written from the contract (docs/ARCHITECTURE.md#the-invariant, README "Trending")
and sharing no code with the worker: counts, memberships, likes gained per window;
the last count published per item must be the oracle's too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import faust
import faust.stores.rocksdb as faust_rocksdb
import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from aiokafka.structs import RecordMetadata
from fakes import Sender
from faust.types import TP

from likestream.agents import DeliveryFailed, Fold, LikesAgent, Topics, fold
from likestream.agents._confirm import MAX_IN_FLIGHT
from likestream.agents._trending import PartitionTrending
from likestream.config._settings import load_settings
from likestream.domain._schema import LikeEvent, encode_event
from likestream.kafka import _internals as internals
from likestream.kafka._sender import Outgoing
from likestream.tables import (
    CountRow,
    LikeTables,
    MemberRow,
    _memory,
    _restore,
    changelog_topic,
)

from .test_agent import Rec

# Small windows, so that a few dozen events move buckets out and delete rows. Bucket
# sizes that are not multiples of each other: the watermark's grid (their gcd, 1 s)
# is finer than either, so a wrong grid moves a bucket boundary.
WINDOWS_SPEC = "4s:2s,15s:3s"
ORACLE_WINDOWS = {"4s": (4000, 2000), "15s": (15000, 3000)}  # name: length, bucket (ms)
LATENESS = 1500
BASE_MS = 1_700_000_000_000  # event times are epoch ms (``ts`` >= 0)
P0 = TP("likes", 0)
ITEMS = [f"i{i}" for i in range(3)]
USERS = [f"u{i}" for i in range(4)]
SEEDS_PER_BLOCK = 10
BLOCKS = 30

Row = tuple[bytes | None, bytes | None]
Log = list[Row | None]
"""A topic's log by offset; None: a record compaction removed."""


class Crash(BaseException):
    """SIGKILL. A BaseException, so that no ``except Exception`` of the worker catches it."""


# -- the events and their oracles ------------------------------------------------------


class TrendingOracle:
    """Likes gained per window, from README "Trending" ("What a window means") alone.

    Event time: the event's ``ts``, else its record's timestamp; a ``ts`` more than the
    lateness ahead of its record's timestamp is taken as that bound. Stream time: the
    largest event time seen. Watermark: stream time minus the lateness; the contract
    rounds it down to a grid that "changes no bucket boundary", so this takes it as is,
    and a grid that does move a boundary shows. A window holds the bucket of the
    watermark, the buckets before it up to the window's length, and any later one. An
    event that changes the member's state gains +1 (like) or -1 (unlike) in its bucket.
    Every bucket is kept, and the windows are read off at the end: a bucket that left a
    window never comes back, so one that is inside at the end was inside all along.
    """

    def __init__(self) -> None:
        self.stream_ms: int | None = None
        self.gained: list[tuple[str, int, int]] = []  # item, event time, +1 or -1

    def apply(self, item: str, ts: int | None, record_ms: int, before: bool, liked: bool) -> None:
        event_ms = record_ms if ts is None else min(ts, record_ms + LATENESS)
        self.stream_ms = event_ms if self.stream_ms is None else max(self.stream_ms, event_ms)
        if before != liked:
            self.gained.append((item, event_ms, 1 if liked else -1))

    def totals(self, window: str) -> dict[str, int]:
        """Net likes gained per item in ``window``, items whose net is not 0."""
        length, bucket = ORACLE_WINDOWS[window]
        if self.stream_ms is None:
            return {}
        watermark = self.stream_ms - LATENESS
        oldest = watermark // bucket - (length // bucket - 1)
        out: dict[str, int] = defaultdict(int)
        for item, event_ms, delta in self.gained:
            if event_ms // bucket >= oldest:
                out[item] += delta
        return {item: n for item, n in out.items() if n}


@dataclass
class Stream:
    records: list[Rec]
    members: dict[tuple[str, str], bool]
    trending: TrendingOracle

    def likes(self, item: str) -> int:
        """docs/ARCHITECTURE.md#the-invariant: users whose latest event for the item is a like."""
        return sum(1 for (i, _), liked in self.members.items() if i == item and liked)


def stream_of(rng: random.Random) -> Stream:
    """Records of one events partition; the oracles see the events, not the bytes."""
    records: list[Rec] = []
    members: dict[tuple[str, str], bool] = {}
    trending = TrendingOracle()
    now = BASE_MS
    last: tuple[Rec, LikeEvent] | None = None
    for offset in range(rng.randint(1, 100)):
        if last is not None and rng.random() < 0.15:
            record, event = last  # a duplicate, as a producer's retry leaves
            record = Rec(offset, record.key, record.value, timestamp=record.timestamp)
        elif rng.random() < 0.04:
            records.append(Rec(offset, b"i0", b"{oops", timestamp=now))  # to the DLQ
            continue
        else:
            now += rng.choice([0, 300, 1000, 3000])
            # Some late, some far too late, some ahead of the record (a client's clock).
            ts: int | None = now - rng.choice([0, 0, 0, 700, 1000, 6000, -800, -4000])
            if rng.random() < 0.1:
                ts = None  # the record's timestamp is the event time
            item, user, liked = rng.choice(ITEMS), rng.choice(USERS), rng.random() < 0.6
            event = LikeEvent(user, item, "like" if liked else "unlike", ts=ts)
            record = Rec(offset, item.encode(), encode_event(event), timestamp=now)
        records.append(record)
        last = record, event
        key = (event.item_id, event.user_id)
        trending.apply(
            event.item_id, event.ts, record.timestamp, members.get(key, False), event.liked
        )
        members[key] = event.liked
    return Stream(records, members, trending)


# -- Kafka -------------------------------------------------------------------------------


@dataclass
class Batch:
    topic: str
    partition: int
    rows: list[Row]
    future: asyncio.Future[RecordMetadata]


class Kafka(Sender):
    """The broker (a log per topic, partition 0 only; the group's committed offset) and
    the worker's producer: batches wait in send order until answered or crashed; and the
    faults drawn for the worker's life.

    Both a :class:`likestream.kafka._sender.Sender` and the agent's ``commit``.
    """

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng
        self.fail_rate = 0.0  # of batches that fail; as many again are appended but fail
        self.send_error_rate = 0.0  # of sends that raise after handing some batches over
        self.logs: defaultdict[str, Log] = defaultdict(list)
        self.queue: list[Batch] = []
        self.committed = 0
        self.dead = False
        self.sends_before_crash: int | None = None  # a crash while handing a flush over
        self.writes_before_crash: int | None = None  # a crash at a RocksDB write
        self.fetches_before_crash: int | None = None  # a crash while recovering
        self.restore_fault: tuple[str, int] | None = None  # "error"/"stall", after n fetches
        self.commit_crash: str | None = None  # "before" or "after" the commit lands
        self.refuse_rate = 0.1

    def alive(self) -> None:
        if self.dead:
            raise Crash

    def compact(self, topic: str) -> None:
        """The log cleaner, as far as it may ever go: of each key, any record but the
        last may be removed, and a last tombstone too (past its retention); offsets
        stay as they were."""
        log = self.logs[topic]
        last = {row[0]: offset for offset, row in enumerate(log) if row is not None}
        for offset, row in enumerate(log):
            if row is None:
                continue
            newest, tombstone = last[row[0]] == offset, row[1] is None
            if self.rng.random() < ((0.3 if tombstone else 0.0) if newest else 0.5):
                log[offset] = None

    def crash(self) -> Crash:
        """The worker is killed: each batch still queued may or may not reach its log."""
        self.dead = True
        for batch in self.queue:
            if self.rng.random() < 0.5:
                self.logs[batch.topic] += batch.rows
        self.queue.clear()
        return Crash()

    def restart(self) -> None:
        """A worker starts; Kafka's troubles come and go; one fault for its life, if any."""
        rng = self.rng
        self.dead = False
        self.fail_rate = rng.choice([0.0, 0.0, 0.1, 0.2, 0.4])
        self.send_error_rate = rng.choice([0.0, 0.0, 0.05, 0.2])
        self.sends_before_crash = self.writes_before_crash = self.fetches_before_crash = None
        self.commit_crash = None
        self.restore_fault = None
        roll = rng.random()
        if roll < 0.15:
            self.sends_before_crash = rng.randint(0, 6)
        elif roll < 0.35:
            self.commit_crash = rng.choice(["before", "after"])
        elif roll < 0.6:
            # Small counts land in the recovery's merges, larger ones in the flushes.
            self.writes_before_crash = rng.randint(0, rng.choice([3, 12]))
        elif roll < 0.7:
            self.fetches_before_crash = rng.randint(0, 3)
        roll = rng.random()
        if roll < 0.3:
            self.restore_fault = rng.choice(["error", "stall"]), rng.randint(0, 3)

    def fetched(self) -> None:
        """A recovery fetch; the worker may die before it."""
        self.alive()
        if self.fetches_before_crash is not None:
            if self.fetches_before_crash == 0:
                raise self.crash()
            self.fetches_before_crash -= 1

    # -- Sender (tests/fakes.py cuts each send into batches and records it)

    async def start(self) -> None:
        self.alive()

    async def stop(self) -> None:
        self.alive()
        await asyncio.sleep(0)  # a real producer's stop takes a while: the fold goes on

    def sending(self, partition: int) -> None:
        self.alive()
        if self.sends_before_crash is not None:
            if self.sends_before_crash == 0:
                raise self.crash()
            self.sends_before_crash -= 1
        assert partition == 0

    def fails_after(self, groups: int) -> int | None:
        # The producer may raise part way (say, no metadata in time).
        if self.rng.random() < self.send_error_rate:
            return self.rng.randint(0, groups)
        return None

    def cut(self) -> bool:
        return self.rng.random() < 0.4

    def batch(
        self, topic: str, partition: int, records: list[Outgoing]
    ) -> asyncio.Future[RecordMetadata]:
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieved)  # a killed worker never looks
        rows = [(key, value) for key, value, _ in records]
        self.queue.append(Batch(topic, partition, rows, future))
        return future

    def answer(self, count: int) -> None:
        """Kafka answers ``count`` batches: the oldest of a topic, topics in any order
        (one partition's batches are appended in order; topics are not ordered)."""
        for _ in range(min(count, len(self.queue))):
            topic = self.rng.choice(sorted({b.topic for b in self.queue}))
            batch = next(b for b in self.queue if b.topic == topic)
            self.queue.remove(batch)
            roll = self.rng.random()
            log = self.logs[batch.topic]
            if roll < self.fail_rate:
                batch.future.set_exception(KafkaTimeoutError())  # never appended
                continue
            offset = len(log)
            log += batch.rows
            if roll < self.fail_rate * 2:
                batch.future.set_exception(KafkaTimeoutError())  # appended; the ack is lost
            else:
                tp = TopicPartition(batch.topic, batch.partition)
                meta = RecordMetadata(batch.topic, batch.partition, tp, offset, -1, 0, 0)
                batch.future.set_result(meta)

    # -- the group member's commit

    async def commit(self, offsets: Mapping[TP, int]) -> bool:
        self.alive()
        assert set(offsets) == {P0}
        assert offsets[P0] > self.committed  # commits only move on
        if self.commit_crash == "before":
            raise self.crash()
        if self.rng.random() < self.refuse_rate:
            return False  # the generation moved on
        self.committed = offsets[P0]
        if self.commit_crash == "after":
            raise self.crash()  # it reached the broker; the worker never learns it
        return True


def _retrieved(future: asyncio.Future[RecordMetadata]) -> None:
    if not future.cancelled():
        future.exception()


# -- the disk ------------------------------------------------------------------------------


class Disk:
    """A partition's real RocksDB (rocksdict), and the worker's death at any of its
    writes: before the write (it never lands) or just after it (it stays, as a SIGKILL
    leaves every write that returned)."""

    def __init__(self, db: Any, kafka: Kafka) -> None:
        self._db = db
        self._kafka = kafka

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def _write(self, write: Any, *args: Any) -> None:
        kafka = self._kafka
        if kafka.dead:
            # A callback of a killed worker (a persisted offset): it never ran. The loop's
            # exception handler ignores this; the next step finds the worker dead.
            raise Crash
        if kafka.writes_before_crash == 0:
            if kafka.rng.random() < 0.5:
                write(*args)  # the crash comes just after it
            raise kafka.crash()
        if kafka.writes_before_crash is not None:
            kafka.writes_before_crash -= 1
        write(*args)

    def __getitem__(self, key: bytes) -> Any:
        return self._db[key]

    def __contains__(self, key: bytes) -> bool:
        return key in self._db

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._write(self._db.__setitem__, key, value)

    def __delitem__(self, key: bytes) -> None:
        self._write(self._db.__delitem__, key)

    def write(self, batch: Any) -> None:
        self._write(self._db.write, batch)

    def put(self, key: bytes, value: bytes) -> None:
        self._write(self._db.put, key, value)

    def delete(self, key: bytes) -> None:
        self._write(self._db.delete, key)


# -- a worker ---------------------------------------------------------------------------

APP_ID = "fold-test"
# Loaded once (most of a worker's start-up cost); each worker has its own data dir.
SETTINGS = load_settings(
    partitions=1,
    trending_windows=WINDOWS_SPEC,
    trending_lateness_ms=LATENESS,
    rocksdb_cache_mb=1,
    rocksdb_write_buffer_mb=1,
)


class Worker:
    """One worker process: a faust app, its tables on ``data_dir``, the likes agent."""

    def __init__(self, data_dir: Path, kafka: Kafka) -> None:
        settings = SETTINGS.model_copy(update={"data_dir": data_dir})
        app = faust.App(APP_ID, store="rocksdb://", datadir=str(data_dir), autodiscover=False)
        self.tables = LikeTables(app, settings)
        topics = Topics(events=app.topic("likes"), counts="counts", dlq="dlq")
        self.agent = LikesAgent(app, topics, self.tables, settings, kafka, kafka.commit)
        self.changelog = self.tables.table.changelog_topic.get_topic_name()
        store = self.tables.table.data
        internals.partition_db(store, 0)  # opened here, to put the disk's faults around it
        dbs = cast(dict[int, Any], internals.open_dbs(store))
        dbs[0] = Disk(dbs[0], kafka)

    def close(self) -> None:
        """The databases as a SIGKILL leaves them: every write that returned is there."""
        for db in internals.open_dbs(self.tables.table.data).values():
            db.close()


@dataclass
class ChangelogRecord:
    offset: int
    key: bytes | None
    value: bytes | None


class Clock:
    """The bulk restore's clock (its stall deadline); a fetch that waits moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


@dataclass
class ChangelogConsumer:
    """The bulk restore's consumer over the model changelog: random fetch sizes; it
    may fail (a Kafka error) or stall (fetches that wait and bring nothing) part way."""

    kafka: Kafka
    log: Log
    clock: Clock
    positions: dict[TopicPartition, int] = field(default_factory=dict)

    async def start(self) -> None:
        self.kafka.alive()

    async def stop(self) -> None:
        pass

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.log) for tp in tps}

    def assign(self, tps: list[TopicPartition]) -> None:
        self.positions = dict.fromkeys(tps, 0)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def pause(self, tp: TopicPartition) -> None:
        del self.positions[tp]

    async def getmany(
        self, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[ChangelogRecord]]:
        kafka = self.kafka
        kafka.fetched()
        if kafka.restore_fault is not None:
            fault, after = kafka.restore_fault
            if after == 0:
                if fault == "error":
                    raise KafkaConnectionError("model: the broker went away")
                self.clock.now += timeout_ms / 1000  # stalled: nothing came in time
                return {}
            kafka.restore_fault = fault, after - 1
        self.clock.now += 0.001
        out = {}
        for tp, at in self.positions.items():
            end = min(len(self.log), at + kafka.rng.randint(1, 8))
            records = [(o, self.log[o]) for o in range(at, end)]
            found = [ChangelogRecord(o, *row) for o, row in records if row is not None]
            if found:  # a consumer leaves out partitions with nothing fetched
                out[tp] = found
            self.positions[tp] = end
        return out


@dataclass
class Restorer:
    """The table's KafkaConfig as the bulk restore uses it: one consumer."""

    consumer_: ChangelogConsumer

    def consumer(self, **_: object) -> ChangelogConsumer:
        return self.consumer_


@dataclass
class Message:
    tp: TP
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Event:
    message: Message


async def recover(worker: Worker, kafka: Kafka, clock: Clock) -> None:
    """The worker's recovery on assignment: the table's rebalance (its bulk restore,
    whose Kafka errors and stalls it leaves to faust's recovery), then faust's recovery
    from the persisted offset to the end of the changelog, in batches of any size."""
    table = worker.tables.table
    log = kafka.logs[worker.changelog]
    table.kafka = Restorer(ChangelogConsumer(kafka, log, clock))  # type: ignore[assignment]
    await table.on_rebalance({P0}, set(), set())
    tp = TP(worker.changelog, 0)
    at = (table.data.persisted_offset(tp) or -1) + 1
    while at < len(log):
        kafka.fetched()
        end = min(len(log), at + kafka.rng.randint(1, 8))
        rows = [(o, log[o]) for o in range(at, end)]
        events = [Event(Message(tp, 0, o, *row)) for o, row in rows if row is not None]
        table.apply_changelog_batch(events)  # type: ignore[arg-type]
        at = end


# -- one run ------------------------------------------------------------------------------


class World:
    """One seed: its events, Kafka, and the workers that run on them one after another."""

    def __init__(self, seed: int, root: Path) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.stream = stream_of(self.rng)
        self.kafka = Kafka(self.rng)
        self.clock = Clock()
        self.root = root
        self.made = 0
        self.dirs: list[Path] = []  # data dirs on disk
        self.data_dir = self._new_dir()

    def _new_dir(self) -> Path:
        self.made += 1
        path = self.root / f"s{self.seed}-d{self.made}"
        self.dirs.append(path)
        return path

    async def boot(self) -> Worker:
        """Start a worker after a crash, then recover. It restarts on the same data dir,
        or on an empty one (the disk is lost), or another worker takes the partition
        over: on a copy of its own, left behind when it last held the partition, or on
        none yet."""
        while True:
            self.kafka.restart()
            if self.rng.random() < 0.5:
                self.kafka.compact(changelog_topic(APP_ID))
            roll = self.rng.random()
            if roll < 0.2:
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self.dirs.remove(self.data_dir)
                self.data_dir = self._new_dir()
            elif roll < 0.5:
                others = [d for d in self.dirs if d != self.data_dir]
                if others and self.rng.random() < 0.6:
                    self.data_dir = self.rng.choice(others)
                else:
                    self.data_dir = self._new_dir()
            worker = Worker(self.data_dir, self.kafka)
            try:
                await recover(worker, self.kafka, self.clock)
            except Crash:
                worker.close()
                continue
            worker.agent.positions.start(P0, self.kafka.committed)
            return worker

    async def live(self, worker: Worker, final: bool) -> None:
        """Fold, flush, settle and answer batches at random until the worker is killed;
        ``final``: no crash nor failure, until every event is committed."""
        rng, kafka, agent = self.rng, self.kafka, worker.agent
        confirmer, records = agent.confirmer, self.stream.records
        steps = None if final else rng.randint(0, 80)
        settler: asyncio.Future[None] | None = None
        try:
            while True:
                if settler is not None and settler.done():
                    error = settler.exception()
                    settler = None
                    if error is not None and not isinstance(error, DeliveryFailed):
                        raise error
                kafka.alive()
                if final and kafka.committed == len(records) and settler is None:
                    return
                if steps is not None:
                    if steps == 0:
                        raise kafka.crash()
                    steps -= 1
                roll = rng.random()
                if roll < 0.4:
                    start = agent.positions.next_offset(P0)
                    assert start is not None
                    if start < len(records):
                        start = max(0, start - rng.choice([0, 0, 0, 2]))  # fetched again
                        agent.fold_partition(
                            P0, records[start : start + rng.choice([1, 1, 2, 3, 8])]
                        )
                elif roll < 0.6:
                    # Past MAX_IN_FLIGHT a flush waits for the settle, which waits for
                    # this loop to answer batches.
                    if len(confirmer._in_flight) < MAX_IN_FLIGHT - 1:
                        await confirmer.flush()
                elif roll < 0.75:
                    if kafka.queue:
                        kafka.answer(rng.randint(1, len(kafka.queue)))
                elif settler is None:
                    settler = asyncio.ensure_future(confirmer.settle())
                for _ in range(rng.randint(0, 2)):
                    await asyncio.sleep(0)
        except Crash:
            if settler is not None:
                settler.cancel()
                with contextlib.suppress(BaseException):
                    await settler
            worker.close()
            raise

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_ignore_crashes)
        try:
            await self._run()
        finally:
            loop.set_exception_handler(None)

    async def _run(self) -> None:
        kafka = self.kafka
        crashes = self.rng.randint(1, 5)
        worker = await self.boot()
        for _ in range(crashes):
            with contextlib.suppress(Crash):
                await self.live(worker, final=False)
            worker = await self.boot()
        kafka.fail_rate = kafka.refuse_rate = kafka.send_error_rate = 0.0
        kafka.sends_before_crash = kafka.writes_before_crash = kafka.fetches_before_crash = None
        kafka.commit_crash = None
        await self.live(worker, final=True)

        self.check(worker, "local")
        live = worker.agent.trending.partitions.get(0)
        if live is not None:
            self.check_windows(live, "the live index")
        worker.close()
        self.kafka.compact(worker.changelog)
        rebuilt_dir = self.root / f"s{self.seed}-rebuilt"
        rebuilt = Worker(rebuilt_dir, self.kafka)
        await recover(rebuilt, self.kafka, self.clock)
        self.check(rebuilt, "rebuilt from the changelog")
        rebuilt.close()
        for path in [*self.dirs, rebuilt_dir]:
            shutil.rmtree(path, ignore_errors=True)
        published = {row[0]: row[1] for row in self.kafka.logs["counts"] if row is not None}
        for item in ITEMS:
            value = published.get(item.encode())
            likes = 0 if value is None else orjson.loads(value)["likes"]
            assert likes == self.stream.likes(item), (self.seed, "published", item)

    def check(self, worker: Worker, what: str) -> None:
        seed, tables = self.seed, worker.tables
        for item in ITEMS:
            assert tables.count(item, 0).likes == self.stream.likes(item), (seed, what, item)
        for (item, user), liked in self.stream.members.items():
            assert tables.member(item, user, 0).liked == liked, (seed, what, item, user)
        # The index the worker builds from its rows when it is assigned the partition.
        windows = worker.agent.trending.windows
        index = PartitionTrending(0, windows, LATENESS, *tables.window_rows(0))
        self.check_windows(index, what)

    def check_windows(self, index: PartitionTrending, what: str) -> None:
        for name, ranking in index.rankings.items():
            totals = {i: n for i, n in ranking.totals.items() if n}
            assert totals == self.stream.trending.totals(name), (self.seed, what, name)
        assert set(index.rankings) == set(ORACLE_WINDOWS), (self.seed, what)


def _ignore_crashes(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # A Crash raised in a future's callback (a killed worker's RocksDB write) ends
    # nothing but that callback; the worker loop sees the crash at its next step.
    if not isinstance(context.get("exception"), Crash):
        loop.default_exception_handler(context)


@pytest.mark.parametrize("block", range(BLOCKS))
async def test_exact_under_random_crashes(
    block: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for seed in range(block * SEEDS_PER_BLOCK, (block + 1) * SEEDS_PER_BLOCK):
        world = World(seed, tmp_path)
        # The restore's stall deadline runs on the model's clock, moved by its fetches.
        monkeypatch.setattr(_restore, "time", world.clock)
        # Faust's store runs gc.collect on every rebalance, revoking or not, and the table
        # before giving memory back (tables/_memory.py): a third of a second each with
        # this test's heap, and nothing to do with the claim.
        no_gc = SimpleNamespace(collect=lambda: 0)
        monkeypatch.setattr(faust_rocksdb, "gc", no_gc)
        monkeypatch.setattr(_memory, "gc", no_gc)
        await world.run()


# A worker's flushes, until it is killed: ``k`` once flush ``k`` (every count row
# at ``k``) and its persisted offset ``k`` returned.
KILLED_WORKER = """
import sys
from pathlib import Path

import faust
from faust.types import TP

from likestream.config._settings import load_settings
from likestream.tables import CountRow, LikeTables

data_dir = sys.argv[1]
settings = load_settings(partitions=1, data_dir=Path(data_dir))
app = faust.App("fold-test", store="rocksdb://", datadir=data_dir, autodiscover=False)
tables = LikeTables(app, settings)
changelog = TP(tables.table.changelog_topic.get_topic_name(), 0)
for k in range(1, 1 << 30):
    rows = tables.fold_rows(0)
    for i in range(20):
        rows.put_count(f"i{i}", CountRow(k, k))
    tables.flush()
    tables.table.data.set_persisted_offset(changelog, k)
    print(k, flush=True)
"""


@pytest.mark.parametrize("flushes", [1, 40, 400])
def test_kill_keeps_rocksdb_writes(flushes: int, tmp_path: Path) -> None:
    """What the crash model's restart assumes of a SIGKILL: every RocksDB write that
    returned is there (a flush's write batch whole, never part of one), however long
    ago it was made; a write under way when the kill came is there whole or not."""
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WORKER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    done = 0
    try:
        assert child.stdout is not None
        for line in child.stdout:
            done = int(line)
            if done >= flushes:
                break
        os.kill(child.pid, signal.SIGKILL)  # the child is flushing again meanwhile
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert done >= flushes  # the child ran (its output says why not, if not)
    worker = Worker(tmp_path, Kafka(random.Random(0)))
    try:
        rows = {worker.tables.count(f"i{i}", 0) for i in range(20)}
        assert len(rows) == 1, rows  # one write batch: whole or not at all
        (row,) = rows
        assert row.likes >= done
        persisted = worker.tables.table.data.persisted_offset(TP(worker.changelog, 0))
        assert persisted is not None
        assert done <= persisted <= row.likes
    finally:
        worker.close()


def test_fold_cases() -> None:
    none = CountRow(0, -1), MemberRow(False, -1)
    assert fold(*none, liked=True, offset=5).count == CountRow(1, 5)
    assert fold(*none, liked=False, offset=5).outcome == "noop"
    liked = CountRow(3, 4), MemberRow(True, 4)
    assert fold(*liked, liked=True, offset=5).outcome == "noop"
    assert fold(*liked, liked=False, offset=5).count == CountRow(2, 5)
    # Replay of offset 4: already counted; both rows are written again unchanged.
    assert fold(*liked, liked=True, offset=4) == Fold(*liked, "replayed")
    # Crash between the count and the member row of offset 4: finish the member.
    half = CountRow(3, 4), MemberRow(False, 2)
    assert fold(*half, liked=True, offset=4) == Fold(CountRow(3, 4), MemberRow(True, 4), "replayed")
