"""The like state: one stamped table holding counts and memberships, and its reads.

The agent folds into rows pending in memory and :meth:`LikeTables.flush` writes
them per batch: one RocksDB write batch and one run of changelog records per
partition, grouped by item: its count row, then its window row, then its member
rows (``agents/_fold.py`` and ``agents/_trending.py`` say why), each key once.
Faust's per-key table writes cost more than the fold itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
import rocksdict
from aiokafka.structs import RecordMetadata
from faust.types import TP

from likestream.config._settings import Settings
from likestream.domain._partition import partition_for
from likestream.kafka import _internals as internals
from likestream.kafka._factory import KafkaConfig
from likestream.kafka._sender import NO_HEADERS, Sender

from ._options import BoundedOptions
from ._reader import NotServable
from ._rows import (
    COUNT_PREFIX,
    CountRow,
    MemberRow,
    count_key,
    decode_count,
    decode_member,
    encode_count,
    encode_member,
    member_key,
)
from ._table import StampedTable
from ._windows import (
    WINDOW_PREFIX,
    Watermark,
    WindowRow,
    decode_watermark,
    decode_window_row,
    item_of_window_key,
    watermark_key,
)

__all__ = [
    "ITEM_ROWS_MAX",
    "ROCKSDB_MEMORY",
    "TABLE_NAME",
    "Flushed",
    "FoldRows",
    "LikeTables",
    "StateLost",
    "changelog_topic",
]

TABLE_NAME = "state"
"""The faust table of counts, memberships and windows: its changelog topic's name and
the ``table`` label of the row metrics (``likestream/runtime/_sampler.py``)."""
MiB = 1 << 20
ITEM_ROWS_MAX = 1_000
"""Member rows of one item in one flush before the agent flushes (``crowded``): an item's
rows travel in one record batch, and at most twice this many rows of the longest keys
(ids of 128 characters) fit in one (``likestream/kafka/_sender.py`` MAX_BATCH_BYTES)."""
PARTITIONS_KEPT = 1 << 16
"""Items whose partition the reads keep (``_partition_of``); past it they start over."""
ROCKSDB_MEMORY = {
    "memtables": "rocksdb.cur-size-all-mem-tables",
    "table_readers": "rocksdb.estimate-table-readers-mem",
    "block_cache": "rocksdb.block-cache-usage",
}
"""RocksDB's memory by kind, and the property that reads it: memtables (bounded by the
write buffers), table readers (what of each open file is held outside the block cache:
with faust's options its index and filter blocks, which grow with the files;
``_options.py`` charges them to the cache), the block cache (bounded by its capacity)."""
COUNT_CACHE_ROWS = 1 << 20
"""Count rows the fold keeps in memory (about 150 B each); past it the cache starts over."""


def changelog_topic(app_id: str) -> str:
    """The state table's changelog topic, as faust names it (``<app id>-state-changelog``)."""
    return f"{app_id}-{TABLE_NAME}-changelog"


class StateLost(RuntimeError):
    """A partition's RocksDB directory is gone under the running worker (deleted, its
    volume lost). RocksDB would go on in the files it holds open until it needs a new
    one, then fail writes; the worker stops instead, and restarted it restores the
    partition from the changelog, which holds every acknowledged row
    (tests/integration/test_faults.py)."""


ChangelogRow = tuple[bytes, bytes | None, Sequence[tuple[str, bytes]]]
"""An :data:`~likestream.kafka._sender.Outgoing` record whose key is never None."""


@dataclass(frozen=True, slots=True)
class Flushed:
    """One partition's rows of a flush, in changelog order, and its changed counts.

    ``ends``: where each group of rows ends. A group is one item's count row, window
    row and member rows (or a lone trending row); the sender never cuts a record
    batch inside a group, and Kafka appends a batch whole, so every member row on
    the changelog has its count and window rows, as new, beside it: whatever subset
    of batches a failure keeps (``agents/_fold.py``).
    """

    partition: int
    rows: list[ChangelogRow]
    """Changelog records (key, value: None deletes, no headers), also written locally."""
    ends: list[int]
    counts: dict[str, CountRow]


@dataclass(slots=True)
class _Pending:
    counts: dict[str, CountRow] = field(default_factory=dict)
    windows: dict[bytes, bytes | None] = field(default_factory=dict)
    """``w/<item>`` rows (None: delete) and the ``t/<partition>`` watermark."""
    members: dict[str, dict[bytes, MemberRow]] = field(default_factory=dict)
    """By item."""
    crowded: bool = False
    """An item has :data:`ITEM_ROWS_MAX` member rows: flush before folding more."""

    def member(self, item_id: str, key: bytes) -> MemberRow | None:
        rows = self.members.get(item_id)
        return rows.get(key) if rows is not None else None

    def flushed(self, partition: int) -> Flushed:
        rows: list[ChangelogRow] = []
        ends: list[int] = []
        windows = dict(self.windows)
        members, counts, add = self.members, self.counts, rows.append
        for item in {**dict.fromkeys(counts), **dict.fromkeys(members)}:
            name = item.encode()
            count = counts.get(item)
            if count is not None:
                add((COUNT_PREFIX + name, encode_count(count), NO_HEADERS))
            key = WINDOW_PREFIX + name
            if key in windows:
                add((key, windows.pop(key), NO_HEADERS))
            for key, row in members.get(item, {}).items():
                add((key, encode_member(row), NO_HEADERS))
            ends.append(len(rows))
        for key, value in windows.items():  # the watermark, deletes of quiet items
            add((key, value, NO_HEADERS))
            ends.append(len(rows))
        return Flushed(partition, rows, ends, counts)


class FoldRows:
    """One owned partition's rows for the fold: its count rows kept in memory (the fold
    reads the same hot items again and again), member rows read with one RocksDB
    multi-get per batch, and writes to the pending rows of the next flush."""

    __slots__ = ("_cache", "_db", "_pending")

    def __init__(self, cache: dict[str, CountRow], pending: _Pending, db: Any) -> None:
        self._cache = cache
        self._pending = pending
        self._db = db

    def count(self, item_id: str) -> CountRow:
        row = self._cache.get(item_id)
        if row is None:
            row = self._cache[item_id] = decode_count(self._db.get(count_key(item_id)))
        return row

    def put_count(self, item_id: str, row: CountRow) -> None:
        self._pending.counts[item_id] = row
        self._cache[item_id] = row

    def members(self, keys: Iterable[tuple[str, bytes]]) -> dict[bytes, MemberRow]:
        """The member rows behind ``keys`` (item, ``member_key``), folded or flushed."""
        pending = self._pending
        rows: dict[bytes, MemberRow] = {}
        missing: list[bytes] = []
        for item, key in keys:
            row = pending.member(item, key)
            if row is not None:
                rows[key] = row
            elif key not in rows:
                missing.append(key)
        if missing:
            found = self._db.get(missing)
            rows.update(zip(missing, map(decode_member, found), strict=True))
        return rows

    def put_member(self, item_id: str, key: bytes, row: MemberRow) -> None:
        members = self._pending.members
        rows = members.get(item_id)
        if rows is None:
            rows = members[item_id] = {}
        rows[key] = row
        if len(rows) >= ITEM_ROWS_MAX:
            self._pending.crowded = True

    def put_window_rows(self, rows: Iterable[tuple[bytes, bytes | None]]) -> None:
        """See :meth:`LikeTables.put_window_rows`."""
        self._pending.windows.update(rows)


class LikeTables:
    """Counts (``c/<item>``) and memberships (``m/<item>/<user>``) in one RocksDB table."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.partitions = settings.partitions
        self.topic = settings.topic
        options: dict[str, Any] = {
            "block_cache_size": settings.rocksdb_cache_mb * MiB,
            "block_cache_compressed_size": 0,
            "write_buffer_size": settings.rocksdb_write_buffer_mb * MiB,
            "max_write_buffer_number": 2,
        }
        table = StampedTable(
            app,
            name=TABLE_NAME,
            beacon=app.tables.beacon,
            partitions=settings.partitions,
            key_type=bytes,  # bytes types give faust's "raw" serializers
            value_type=bytes,
            options=options,
            help="Like counts and memberships, stamped with source offsets.",
            # A standby applies each changelog record as it arrives: faust's default
            # buffers 1000, so a standby could sit up to 999 records behind for good,
            # and it answers reads while its owner is away (web/_reads.py).
            standby_buffer_size=1,
        )
        table.kafka, table.source_topic = KafkaConfig.from_settings(settings), settings.topic
        app.tables.add(table)
        internals.use_rocksdb_options(table.data, BoundedOptions(**options))
        self.table = table
        self._pending: dict[int, _Pending] = {}
        self._counts: dict[int, dict[str, CountRow]] = {}
        self._served_now: frozenset[int] | None = None  # see _serving
        self._partitions: dict[str, int] = {}  # see _partition_of

    # -- writes (agents only) ----------------------------------------------------

    def count(self, item_id: str, partition: int | None = None) -> CountRow:
        """The newest count row, folded or flushed; ``partition`` defaults to the item's."""
        partition = self._partition(item_id, partition)
        pending = self._pending.get(partition)
        row = pending.counts.get(item_id) if pending is not None else None
        return row or decode_count(self._db(partition).get(count_key(item_id)))

    def member(self, item_id: str, user_id: str, partition: int | None = None) -> MemberRow:
        partition = self._partition(item_id, partition)
        key = member_key(item_id, user_id)
        pending = self._pending.get(partition)
        row = pending.member(item_id, key) if pending is not None else None
        return row or decode_member(self._db(partition).get(key))

    def put_window_rows(self, partition: int, rows: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Trending rows (``tables/_windows.py``), flushed between counts and members;
        None deletes one, which sends a tombstone to the changelog."""
        pending = self._pending_for(partition).windows
        for key, value in rows:
            pending[key] = value

    # -- the fold's reads and writes (agents only): owned partitions, whole batches ----

    def fold_rows(self, partition: int) -> FoldRows:
        """The rows of an owned partition as the fold reads and writes them."""
        cache = self._counts.get(partition)
        if cache is None:
            cache = self._counts[partition] = {}
        return FoldRows(cache, self._pending_for(partition), self._db(partition))

    def crowded(self) -> bool:
        """Whether an item has so many pending member rows that a flush must come first."""
        return any(pending.crowded for pending in self._pending.values())

    def discard(self, partitions: Iterable[int]) -> None:
        """Forget rows folded but not flushed, and what the fold keeps in memory, of
        ``partitions``: after a failed delivery or a revocation they are read again."""
        for partition in partitions:
            self._pending.pop(partition, None)
            self._counts.pop(partition, None)

    def window_rows(self, partition: int) -> tuple[Watermark, dict[str, WindowRow]]:
        """The watermark and every window row of one partition, pending rows included.

        A scan of the ``w/`` rows: for rebuilding the agent's in-memory index after an
        assignment, never per event or per request.
        """
        db = self._db(partition)
        raw: dict[bytes, bytes | None] = {}
        for key, value in db.items(from_key=WINDOW_PREFIX):
            if not key.startswith(WINDOW_PREFIX):
                break  # keys are sorted: past the w/ rows
            raw[key] = value
        mark = watermark_key(partition)
        raw[mark] = db.get(mark)
        pending = self._pending.get(partition)
        raw.update(pending.windows if pending is not None else {})
        stream_raw = raw.pop(mark)
        rows = {
            item_of_window_key(k): decode_window_row(v) for k, v in raw.items() if v is not None
        }
        return decode_watermark(stream_raw), rows

    def flush(self) -> list[Flushed]:
        """Write the rows folded since the last flush to RocksDB; return them to send.

        Synchronous on purpose: the caller takes the folded events in the same
        step, so every event taken has all its rows in what this returns.
        """
        store: Any = self.table.data  # faust's RocksDB store (StoreT lacks partition_path)
        for partition in self._pending:
            path = store.partition_path(partition)
            if not path.is_dir():  # a stat per written partition and flush: cheap
                raise StateLost(
                    f"the RocksDB directory of partition {partition} ({path}) is gone: "
                    "stopping; restarted, the worker restores it from the changelog"
                )
        pending, self._pending = self._pending, {}
        flushed = [rows.flushed(partition) for partition, rows in pending.items()]
        for batch in flushed:
            write = rocksdict.WriteBatch(raw_mode=True)
            for key, value, _ in batch.rows:
                if value is None:
                    write.delete(key)
                else:
                    write.put(key, value)
            self._db(batch.partition).write(write)
        if sum(len(rows) for rows in self._counts.values()) > COUNT_CACHE_ROWS:
            self._counts.clear()
        return flushed

    async def send_changelog(
        self, sender: Sender, flushed: list[Flushed]
    ) -> list[asyncio.Future[RecordMetadata]]:
        """Send flushed rows to the changelog in their order; futures per batch."""
        topic = self.table.changelog_topic.get_topic_name()
        futures: list[asyncio.Future[RecordMetadata]] = []
        for batch in flushed:
            sent = await sender.send(topic, batch.partition, batch.rows, batch.ends)
            if sent:
                sent[-1].add_done_callback(self._persisted)
            futures += sent
        return futures

    def _persisted(self, sent: asyncio.Future[RecordMetadata]) -> None:
        # Recovery starts reading the changelog after this offset. The first
        # offset of the last batch: re-reading a few rows is harmless (stamps).
        if sent.cancelled() or sent.exception() is not None:
            return
        meta = sent.result()
        if meta.partition in self._open_dbs():
            self.table.data.set_persisted_offset(TP(meta.topic, meta.partition), meta.offset)

    def _pending_for(self, partition: int) -> _Pending:
        rows = self._pending.get(partition)
        if rows is None:
            rows = self._pending[partition] = _Pending()
        return rows

    def _partition(self, item_id: str, partition: int | None) -> int:
        return self._partition_of(item_id) if partition is None else partition

    def _partition_of(self, item_id: str) -> int:
        # By the id itself: a str keeps its hash, while the bytes partition_for caches by
        # are made anew per call and hashed again (a batch read asks for 100 items).
        partition = self._partitions.get(item_id)
        if partition is None:
            if len(self._partitions) >= PARTITIONS_KEPT:
                self._partitions.clear()
            partition = partition_for(item_id.encode(), self.partitions)
            self._partitions[item_id] = partition
        return partition

    def _db(self, partition: int) -> Any:
        return self.table.partition_db(partition)

    def _open_dbs(self) -> Mapping[int, Any]:
        return internals.open_dbs(self.table.data)

    # -- reads (StateReader, ``_reader.py``) ----------------------------------------

    def likes(self, item_id: str) -> int:
        return self.stamped(item_id).likes

    def stamped(self, item_id: str) -> CountRow:
        partition = self._served(item_id)
        cache = self._counts.get(partition)
        row = cache.get(item_id) if cache is not None else None
        if row is None:
            row = self.count(item_id, partition)
            self._keep(partition, cache, {item_id: row})
        return row

    def liked(self, item_id: str, user_id: str) -> bool:
        return self.member(item_id, user_id, self._served(item_id)).liked

    def likes_many(self, items: list[str]) -> tuple[dict[str, int], list[str]]:
        """Counts of the ``items`` this process serves, and the items it cannot serve now
        (as :meth:`likes` would raise :class:`NotServable` for): the fold's rows as in
        :meth:`stamped`, then one RocksDB multi-get per partition rather than a get per item."""
        serving = self._serving()
        if not serving:
            return {}, list(items)
        by_partition: dict[int, list[str]] = {}
        refused: list[str] = []
        partition_of = self._partition_of
        for item in items:
            partition = partition_of(item)
            if partition in serving:
                by_partition.setdefault(partition, []).append(item)
            else:
                refused.append(item)
        out: dict[str, int] = {}
        for partition, its in by_partition.items():
            cache = self._counts.get(partition)
            kept = cache or {}
            missing = [item for item in its if item not in kept]
            found = self._db(partition).get([COUNT_PREFIX + item.encode() for item in missing])
            rows = dict(zip(missing, map(decode_count, found), strict=True))
            self._keep(partition, cache, rows)
            out.update((item, row.likes) for item, row in rows.items())
            out.update((item, kept[item].likes) for item in its if item in kept)
        return out, refused

    def _keep(
        self, partition: int, cache: dict[str, CountRow] | None, rows: dict[str, CountRow]
    ) -> None:
        """Add count rows a read took from RocksDB to the fold's rows of an active,
        recovered partition (the next read of a hot item is a dict lookup), while the
        partition holds fewer than its share of :data:`COUNT_CACHE_ROWS`.

        As the fold itself does when it first reads an item (``FoldRows.count``): the
        fold's rows are the newest of each item, since every row it folds goes to them
        and to the pending rows alike (so pending rows are never missing from them, and
        RocksDB holds nothing newer), and nothing else writes an active partition's
        count rows before ``discard`` forgets them (a revocation, a rewind, a failed
        delivery). The fold folds on them, so the crash model and chaos hold them."""
        if cache is None:
            cache = self._counts[partition] = {}
        room = COUNT_CACHE_ROWS // self.partitions - len(cache)
        if room >= len(rows):
            cache.update(rows)

    @property
    def restoring(self) -> int | None:
        """Records the bulk restore still has to read (``_restore.py``); None when idle."""
        return self.table.restoring

    def held_count(self, item_id: str) -> CountRow:
        """The count row of this process's copy of the item's partition, whatever its role
        (active, standby, recovering, mid-rebalance): possibly behind. Compare its stamp."""
        return self.count(item_id, self._held(item_id))

    def held_member(self, item_id: str, user_id: str) -> MemberRow:
        """Like :meth:`held_count`, for a membership."""
        return self.member(item_id, user_id, self._held(item_id))

    def held_changelog(self, item_id: str) -> tuple[str, int, int]:
        """The changelog topic and partition behind this process's copy of the item's
        partition, and the offset the copy has applied up to (-1: none yet)."""
        partition = self._held(item_id)
        topic: str = self.table.changelog_topic.get_topic_name()
        applied = self.table.data.persisted_offset(TP(topic, partition))
        return topic, partition, -1 if applied is None else int(applied)

    def held_changelogs(self) -> list[tuple[str, int]]:
        """The changelog partitions of the copies this process holds."""
        topic: str = self.table.changelog_topic.get_topic_name()
        return [(topic, p) for p in sorted(self._open_dbs())]

    async def holding(self) -> None:
        await self.table.holding.wait()

    def ready(self) -> bool:
        return internals.recovery_settled(self.app) and self.table.restoring is None

    def rocksdb_memory(self) -> dict[str, int]:
        """Bytes RocksDB holds in memory for the open partition databases, by kind
        (:data:`ROCKSDB_MEMORY`): its own accounting, apart from the Python heap. For
        metrics and the soak."""
        out = dict.fromkeys(ROCKSDB_MEMORY, 0)
        for db in list(self._open_dbs().values()):
            for kind, prop in ROCKSDB_MEMORY.items():
                out[kind] += int(db.property_int_value(prop) or 0)
        return out

    def estimated_rows(self, partitions: Iterable[int]) -> dict[int, int]:
        """RocksDB's estimate of the rows of each open partition database among ``partitions``.

        An estimate (``rocksdb.estimate-num-keys``): cheap, without scanning. For metrics.
        """
        dbs = self._open_dbs()
        return {
            p: int(dbs[p].property_int_value("rocksdb.estimate-num-keys") or 0)
            for p in partitions
            if p in dbs
        }

    def _held(self, item_id: str) -> int:
        """The item's partition, if this process holds a copy of it (active or standby:
        its database is open); faust's own lookup would open a missing one."""
        partition = self._partition(item_id, None)
        if partition not in self._open_dbs():
            raise NotServable("no copy of the item's partition here")
        return partition

    def _served(self, item_id: str) -> int:
        """The item's partition, if this process serves its reads now; else NotServable."""
        partition = self._partition_of(item_id)
        if partition not in self._serving():
            if not self.ready():
                raise NotServable("recovering: tables are being restored from their changelogs")
            raise NotServable(f"partition {partition} is served by another worker")
        return partition

    def _serving(self) -> frozenset[int]:
        """The events topic's partitions whose reads this process answers now (assigned
        here as actives, recovered: none while ``ready()`` is False), kept until the event
        loop's next step. Every read asks; faust builds its set of every topic's actives
        anew on each call, and readiness is three lookups into faust's recovery.

        A rebalance beginning within the step is seen from the next one. The reads of
        this step are answered from the assignment before it, which still holds every
        row as it was: nothing writes an assigned partition's rows before the revocation
        (``discard``) and the recovery, which run in later steps."""
        if self._served_now is not None:
            return self._served_now
        serving = self._active_partitions() if self.ready() else frozenset()
        try:
            asyncio.get_running_loop().call_soon(self._forget_serving)
        except RuntimeError:  # no loop (a synchronous caller): nothing to keep it for
            return serving
        self._served_now = serving
        return serving

    def _active_partitions(self) -> frozenset[int]:
        return frozenset(
            tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == self.topic
        )

    def _forget_serving(self) -> None:
        self._served_now = None
