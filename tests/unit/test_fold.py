"""The fold is exact under crashes and failed deliveries: the real worker against a model Kafka.

Each run drives the real code of one worker, restarted after every crash: the likes
agent's fold (``LikesAgent.fold``: ``LikeTables``, the trending index, ``fold``), the
confirmer's flushes and settles with the agent's ``Positions`` and rewind, the
tables' flush into RocksDB on disk, and the recovery merge (``StampedTable.merge``
through the bulk restore, ``tables/_restore.py``, or faust's
``apply_changelog_batch``). Only Kafka is a model (:class:`Kafka`): topic logs, the
group's committed offset, and the producer's batches between them.

Per seed, random events of one partition (likes, unlikes, duplicates, invalid records;
event times mostly advancing, some late, some with no ``ts``) are folded in random
fetches. At random steps the worker flushes (several flushes stay in flight), settles
(in a task of its own, as the agent does) or lets Kafka answer some of the batches
queued so far: each is appended to its log and acknowledged, fails without being
appended, or is appended but its acknowledgement fails. The sender cuts each send
into batches at random group boundaries (``ends``) and any batch can fail while
later ones, of the same or later flushes, are delivered: with grouped batches any
subset is safe, which is the claim under test. A failed delivery rewinds the agent,
which then reads the events again from its durable position.

A worker crashes (SIGKILL: nothing of it runs afterwards) between two steps, while
handing a flush's batches over (after its RocksDB write), while committing (before or
after the commit reaches the broker; a commit may also be refused), or while
recovering. Its pending rows and in-memory indexes are lost; its RocksDB keeps every
written batch (the databases are closed and opened again on the same directory); each
batch still queued may or may not have reached its log; the broker's committed offset
is what the last commit that reached it said. The next worker keeps the data dir
(recovery merges the changelog from the persisted offset, which the tables set from
delivered batches), loses it (recovery merges the whole changelog into an empty one),
or is another worker with the copy it kept when it last held the partition (behind:
recovery merges from its persisted offset), then reads from the committed offset.

After the last crash a worker runs until every event is committed. Then its state, a
state rebuilt from the changelog alone, and the agent's live trending index must equal
the oracles (``tests/oracle.py``): counts, memberships, likes gained per window; the
last count published per item must be the oracle's too.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import RecordMetadata
from faust.types import TP
from oracle import TrendingOracle

from likestream import _internals as internals
from likestream._schema import LikeEvent, encode_event
from likestream._sender import Outgoing
from likestream._settings import load_settings
from likestream._window_spec import parse_windows
from likestream.agents import DeliveryFailed, Fold, LikesAgent, Topics, fold
from likestream.agents._confirm import MAX_IN_FLIGHT
from likestream.agents._trending import PartitionTrending
from likestream.tables import CountRow, LikeTables, MemberRow
from likestream.tables._restore import _read, _seek

from .test_agent import Rec

# Small windows, so that a few dozen events move buckets out and delete rows.
WINDOWS_SPEC = "4s:1s,20s:5s"
WINDOWS = parse_windows(WINDOWS_SPEC)
LATENESS = 1500
BASE_MS = 1_700_000_000_000  # event times are epoch ms (``ts`` >= 0)
P0 = TP("likes", 0)
ITEMS = [f"i{i}" for i in range(3)]
USERS = [f"u{i}" for i in range(4)]
SEEDS_PER_BLOCK = 10
BLOCKS = 12

Row = tuple[bytes | None, bytes | None]


class Crash(BaseException):
    """SIGKILL. A BaseException, so that no ``except Exception`` of the worker catches it."""


# -- the events and their oracles ------------------------------------------------------


@dataclass
class Stream:
    records: list[Rec]
    members: dict[tuple[str, str], bool]
    trending: TrendingOracle

    def likes(self, item: str) -> int:
        return sum(1 for (i, _), liked in self.members.items() if i == item and liked)


def stream_of(rng: random.Random) -> Stream:
    """Records of one events partition; the oracles see the events, not the bytes."""
    records: list[Rec] = []
    members: dict[tuple[str, str], bool] = {}
    trending = TrendingOracle(WINDOWS, LATENESS)
    now = BASE_MS
    last: tuple[Rec, LikeEvent, int] | None = None  # a valid record, its event and event time
    for offset in range(rng.randint(1, 100)):
        if last is not None and rng.random() < 0.15:
            record, event, event_ms = last  # a duplicate, as a producer's retry leaves
            record = Rec(offset, record.key, record.value, timestamp=record.timestamp)
        elif rng.random() < 0.04:
            records.append(Rec(offset, b"i0", b"{oops", timestamp=now))  # to the DLQ
            continue
        else:
            now += rng.choice([0, 300, 1000, 3000])
            ts: int | None = now - rng.choice([0, 0, 0, 1000, 6000])  # some late, some far too
            if rng.random() < 0.1:
                ts = None  # the record's timestamp is the event time
            item, user, liked = rng.choice(ITEMS), rng.choice(USERS), rng.random() < 0.6
            event = LikeEvent(user, item, "like" if liked else "unlike", ts=ts)
            record = Rec(offset, item.encode(), encode_event(event), timestamp=now)
            event_ms = now if ts is None else ts
        records.append(record)
        last = record, event, event_ms
        members[(event.item_id, event.user_id)] = event.liked
        trending.apply(0, event, event_ms)
    return Stream(records, members, trending)


# -- Kafka -------------------------------------------------------------------------------


@dataclass
class Batch:
    topic: str
    partition: int
    rows: list[Row]
    future: asyncio.Future[RecordMetadata]


class Kafka:
    """The broker (a log per topic, partition 0 only; the group's committed offset) and
    the worker's producer: batches wait in send order until answered or crashed.

    Both a :class:`likestream._sender.Sender` and the agent's ``commit``.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.fail_rate = 0.0  # of batches that fail; as many again are appended but fail
        self.logs: defaultdict[str, list[Row]] = defaultdict(list)
        self.queue: list[Batch] = []
        self.committed = 0
        self.dead = False
        self.sends_before_crash: int | None = None  # a crash while handing a flush over
        self.commit_crash: str | None = None  # "before" or "after" the commit lands
        self.refuse_rate = 0.1

    def alive(self) -> None:
        if self.dead:
            raise Crash

    def crash(self) -> Crash:
        """The worker is killed: each batch still queued may or may not reach its log."""
        self.dead = True
        for batch in self.queue:
            if self.rng.random() < 0.5:
                self.logs[batch.topic] += batch.rows
        self.queue.clear()
        return Crash()

    def restart(self) -> None:
        """A worker starts; Kafka's troubles come and go."""
        self.dead = False
        self.fail_rate = self.rng.choice([0.0, 0.0, 0.1, 0.2, 0.4])
        self.sends_before_crash = None
        self.commit_crash = None

    # -- Sender

    async def start(self) -> None:
        self.alive()

    async def stop(self) -> None:
        self.alive()
        await asyncio.sleep(0)  # a real producer's stop takes a while: the fold goes on

    async def send(
        self,
        topic: str,
        partition: int,
        records: Sequence[Outgoing],
        ends: Sequence[int] | None = None,
    ) -> list[asyncio.Future[RecordMetadata]]:
        self.alive()
        if self.sends_before_crash is not None:
            if self.sends_before_crash == 0:
                raise self.crash()
            self.sends_before_crash -= 1
        assert partition == 0
        bounds = list(ends) if ends is not None else list(range(1, len(records) + 1))
        assert bounds == sorted(bounds)
        assert not records or bounds[-1] == len(records)
        futures: list[asyncio.Future[RecordMetadata]] = []
        start = 0
        for n, end in enumerate(bounds):
            # A batch ends at a group's end, never inside a group (KafkaSender).
            if n == len(bounds) - 1 or self.rng.random() < 0.4:
                future = asyncio.get_running_loop().create_future()
                future.add_done_callback(_retrieved)  # a killed worker never looks
                rows = [(key, value) for key, value, _ in records[start:end]]
                self.queue.append(Batch(topic, partition, rows, future))
                futures.append(future)
                start = end
        return futures

    def answer(self, count: int) -> None:
        """Kafka answers the ``count`` oldest batches queued."""
        answered, self.queue = self.queue[:count], self.queue[count:]
        for batch in answered:
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


# -- a worker ---------------------------------------------------------------------------


class Worker:
    """One worker process: a faust app, its tables on ``data_dir``, the likes agent."""

    def __init__(self, data_dir: Path, kafka: Kafka) -> None:
        settings = load_settings(
            partitions=1,
            data_dir=data_dir,
            trending_windows=WINDOWS_SPEC,
            trending_lateness_ms=LATENESS,
            rocksdb_cache_mb=1,
            rocksdb_write_buffer_mb=1,
        )
        app = faust.App("fold-test", store="rocksdb://", datadir=str(data_dir), autodiscover=False)
        self.tables = LikeTables(app, settings)
        topics = Topics(events=app.topic("likes"), counts="counts", dlq="dlq")
        self.agent = LikesAgent(app, topics, self.tables, settings, kafka, kafka.commit)
        self.changelog = self.tables.table.changelog_topic.get_topic_name()

    def close(self) -> None:
        """The databases as a SIGKILL leaves them: every written batch is there."""
        for db in internals.open_dbs(self.tables.table.data).values():
            db.close()


@dataclass
class ChangelogRecord:
    offset: int
    key: bytes | None
    value: bytes | None


class ChangelogConsumer:
    """The bulk restore's consumer over the model changelog: random fetch sizes."""

    def __init__(self, log: list[Row], rng: random.Random, fetches: int | None) -> None:
        self.log = log
        self.rng = rng
        self.fetches = fetches  # before a crash; None: no crash
        self.positions: dict[TopicPartition, int] = {}

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
        if self.fetches is not None:
            if self.fetches == 0:
                raise Crash
            self.fetches -= 1
        out = {}
        for tp, at in self.positions.items():
            end = min(len(self.log), at + self.rng.randint(1, 8))
            out[tp] = [ChangelogRecord(o, *self.log[o]) for o in range(at, end)]
            self.positions[tp] = end
        return out


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


async def recover(worker: Worker, kafka: Kafka, rng: random.Random, crash: bool) -> None:
    """Merge the changelog from the persisted offset, as the bulk restore or faust's
    recovery does; with ``crash``, the worker may be killed part way."""
    table = worker.tables.table
    log = kafka.logs[worker.changelog]
    fetches = rng.randint(0, 3) if crash else None
    if rng.random() < 0.7:
        consumer: Any = ChangelogConsumer(log, rng, fetches)
        todo = await _seek(consumer, table, worker.changelog, [0])
        await _read(consumer, table, todo)
        return
    tp = TP(worker.changelog, 0)
    at = (table.data.persisted_offset(tp) or -1) + 1
    while at < len(log):
        if fetches is not None:
            if fetches == 0:
                raise Crash
            fetches -= 1
        end = min(len(log), at + rng.randint(1, 8))
        events = [Event(Message(tp, 0, o, *log[o])) for o in range(at, end)]
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
                await recover(worker, self.kafka, self.rng, crash=self.rng.random() < 0.15)
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
        steps: int | None = None
        if not final:
            steps = rng.randint(0, 80)
            roll = rng.random()
            if roll < 0.2:
                kafka.sends_before_crash = rng.randint(0, 6)
            elif roll < 0.45:
                kafka.commit_crash = rng.choice(["before", "after"])
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
                        agent.fold(P0, records[start : start + rng.choice([1, 1, 2, 3, 8])])
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
        crashes = self.rng.randint(1, 5)
        worker = await self.boot()
        for _ in range(crashes):
            with contextlib.suppress(Crash):
                await self.live(worker, final=False)
            worker = await self.boot()
        self.kafka.fail_rate = self.kafka.refuse_rate = 0.0
        await self.live(worker, final=True)

        self.check(worker.tables, "local")
        live = worker.agent.trending.partitions.get(0)
        if live is not None:
            self.check_windows(live, "the live index")
        worker.close()
        rebuilt_dir = self.root / f"s{self.seed}-rebuilt"
        rebuilt = Worker(rebuilt_dir, self.kafka)
        await recover(rebuilt, self.kafka, self.rng, crash=False)
        self.check(rebuilt.tables, "rebuilt from the changelog")
        rebuilt.close()
        for path in [*self.dirs, rebuilt_dir]:
            shutil.rmtree(path, ignore_errors=True)
        published = {key: value for key, value in self.kafka.logs["counts"]}
        for item in ITEMS:
            value = published.get(item.encode())
            likes = 0 if value is None else orjson.loads(value)["likes"]
            assert likes == self.stream.likes(item), (self.seed, "published", item)

    def check(self, tables: LikeTables, what: str) -> None:
        seed = self.seed
        for item in ITEMS:
            assert tables.count(item, 0).likes == self.stream.likes(item), (seed, what, item)
        for (item, user), liked in self.stream.members.items():
            assert tables.member(item, user, 0).liked == liked, (seed, what, item, user)
        index = PartitionTrending(0, WINDOWS, LATENESS, *tables.window_rows(0))
        self.check_windows(index, what)

    def check_windows(self, index: PartitionTrending, what: str) -> None:
        for name, ranking in index.rankings.items():
            totals = {i: n for i, n in ranking.totals.items() if n}
            assert totals == self.stream.trending.totals(name, 0), (self.seed, what, name)


@pytest.mark.parametrize("block", range(BLOCKS))
async def test_exact_under_random_crashes(block: int, tmp_path: Path) -> None:
    for seed in range(block * SEEDS_PER_BLOCK, (block + 1) * SEEDS_PER_BLOCK):
        await World(seed, tmp_path).run()


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
