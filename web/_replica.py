"""The newest count known per item, and how current that knowledge is per partition.

Every process reads the compacted ``like-counts`` topic from its beginning
(``_tail.py``), so it holds a copy of every item's count, stamped with the source
offset of the event that made it: a larger stamp is a newer count (one item lives
on one partition).

Memory stays bounded however many items there are: the copy lives in a RocksDB
database of its own (a cache, wiped at start and rebuilt from the topic), and only
the ``cache_items`` most recently used counts are also kept in memory. A miss costs
one RocksDB read; an item absent from both was never liked.

What makes the copy usable as a read replica is knowing how old it may be. A
``like-counts`` partition is *caught up* when the tail's position has reached the
high watermark of a fetch response: at that moment the copy held every count any
owner had published to it. :meth:`Replica.age` is the time since then; a count
from the copy is at most that old with respect to what the owners have published.
Before a partition was first caught up the copy knows nothing about it (an item
missing from the copy is then not known to be 0).
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import time
import weakref
from collections import OrderedDict
from pathlib import Path

import rocksdict

from likestream.domain._partition import partition_for
from likestream.runtime._metrics import COUNT_CACHE_HITS, COUNT_CACHE_ITEMS, COUNT_CACHE_MISSES
from likestream.runtime._pids import alive
from likestream.tables import NO_COUNT, CountRow

__all__ = ["Replica", "replica_dir"]

_PAIR = struct.Struct("<qq")
CACHE_ITEMS = 100_000
# The copy is rebuilt from the topic at every start, so it needs neither a write-ahead
# log nor much memory of its own: a small memtable and block cache.
_WRITE_BUFFER = 4 << 20
_BLOCK_CACHE = 8 << 20


class Replica:
    def __init__(
        self, partitions: int, path: Path | None = None, cache_items: int = CACHE_ITEMS
    ) -> None:
        """``path``: the directory of the on-disk copy, wiped first; None: a temporary
        directory removed when the replica is closed or collected."""
        self.partitions = partitions
        self.cache_items = cache_items
        self._hot: OrderedDict[str, CountRow] = OrderedDict()
        self._caught_up_at: dict[int, float] = {}
        temporary = path is None
        if path is None:
            path = Path(tempfile.mkdtemp(prefix="likestream-replica-"))
        else:
            _sweep(path)
        self.path = path
        self._db = _open(path)
        self._closer = weakref.finalize(self, _close, self._db, path if temporary else None)

    def update(self, item: str, stamp: CountRow) -> bool:
        """Keep ``stamp`` if it is newer than what is known; whether it was."""
        known = self.get(item)
        if known is not None and stamp.offset <= known.offset:
            return False
        self._db[item.encode()] = _PAIR.pack(stamp.likes, stamp.offset)
        self._remember(item, stamp)
        return True

    def get(self, item: str) -> CountRow | None:
        """The newest count seen for ``item``, None when none was seen."""
        stamp = self._hot.get(item)
        if stamp is not None:
            COUNT_CACHE_HITS.inc()
            self._hot.move_to_end(item)
            return stamp
        COUNT_CACHE_MISSES.inc()
        raw = self._db.get(item.encode())
        if raw is None:
            return None  # never liked: nothing cached, so a flood of such items costs nothing
        stamp = CountRow(*_PAIR.unpack(raw))
        self._remember(item, stamp)
        return stamp

    def caught_up(self, partition: int, at: float) -> None:
        """The tail had every record of ``partition`` at ``at`` (epoch seconds)."""
        self._caught_up_at[partition] = max(at, self._caught_up_at.get(partition, 0.0))

    def partition(self, item: str) -> int:
        return partition_for(item.encode(), self.partitions)

    def age(self, partition: int, now: float | None = None) -> float | None:
        """Seconds since ``partition`` was last caught up; None if it never was."""
        at = self._caught_up_at.get(partition)
        if at is None:
            return None
        return max(0.0, (time.time() if now is None else now) - at)

    def count(self, item: str) -> CountRow | None:
        """The count of ``item`` once its partition was caught up (0 if never seen)."""
        if self.partition(item) not in self._caught_up_at:
            return None
        return self.get(item) or NO_COUNT

    def known(self, item: str) -> CountRow | None:
        """The newest count seen for ``item``, else 0 once its partition was caught up."""
        stamp = self.get(item)
        if stamp is None and self.partition(item) in self._caught_up_at:
            return NO_COUNT
        return stamp

    def loaded(self) -> bool:
        """Every partition was caught up at least once."""
        return len(self._caught_up_at) == self.partitions

    def cached(self) -> int:
        """Counts held in memory."""
        return len(self._hot)

    def close(self) -> None:
        if self._closer.alive:
            COUNT_CACHE_ITEMS.dec(len(self._hot))
            self._hot.clear()
        self._closer()

    def _remember(self, item: str, stamp: CountRow) -> None:
        hot = self._hot
        if item in hot:
            hot.move_to_end(item)
        else:
            COUNT_CACHE_ITEMS.inc()
            if len(hot) >= self.cache_items:
                hot.popitem(last=False)
                COUNT_CACHE_ITEMS.dec()
        hot[item] = stamp


def _open(path: Path) -> rocksdict.Rdict:
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(_WRITE_BUFFER)
    options.set_manifest_preallocation_size(64 << 10)
    table = rocksdict.BlockBasedOptions()
    table.set_block_cache(rocksdict.Cache(_BLOCK_CACHE))
    table.set_bloom_filter(10, False)
    options.set_block_based_table_factory(table)
    db = rocksdict.Rdict(str(path), options)
    unlogged = rocksdict.WriteOptions()
    # A property at runtime (rocksdict 0.3); its type stub declares a method.
    setattr(unlogged, "disable_wal", True)  # noqa: B010
    db.set_write_options(unlogged)
    return db


def _sweep(path: Path) -> None:
    """Wipe ``path`` (this process's copy from an earlier run) and the copies beside it
    left by processes that are gone (a kill -9 runs no clean-up); names end in a pid."""
    shutil.rmtree(path, ignore_errors=True)
    for sibling in path.parent.glob("replica-*"):
        pid = sibling.name.rpartition("-")[2]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(sibling, ignore_errors=True)
    path.mkdir(parents=True)


def _close(db: rocksdict.Rdict, remove: Path | None) -> None:
    db.close()
    if remove is not None:
        shutil.rmtree(remove, ignore_errors=True)


def replica_dir(data_dir: Path) -> Path:
    """Where this process keeps its copy: one directory per process, named by pid."""
    return data_dir / f"replica-{os.getpid()}"
