"""The bulk restore's merge into RocksDB with and without its filter of written keys."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from aiokafka import TopicPartition

from likestream.config._settings import load_settings
from likestream.tables import LikeTables, StampedTable
from likestream.tables._restore import _read
from likestream.tables._written import Written


def _table(data_dir: Path) -> StampedTable:
    settings = load_settings(
        partitions=1, data_dir=data_dir, rocksdb_cache_mb=1, rocksdb_write_buffer_mb=1
    )
    app = faust.App("restore-test", store="rocksdb://", datadir=str(data_dir), autodiscover=False)
    return LikeTables(app, settings).table


def _changelog(rng: random.Random, keys: int, records: int) -> list[tuple[bytes, bytes]]:
    """Rows whose stamps go back now and then, as after a replay or a zombie's late write."""
    return [
        (b"m/item:%d/u1" % rng.randrange(keys), b"%d,%d" % (rng.randrange(2), rng.randrange(50)))
        for _ in range(records)
    ]


def _newest(log: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """What recovery must leave: per key the record with the largest stamp, the later on a tie."""
    rows: dict[bytes, bytes] = {}
    for key, value in log:
        if key not in rows or int(value.split(b",")[1]) >= int(rows[key].split(b",")[1]):
            rows[key] = value
    return rows


def test_written_answers_a_key_seen_before() -> None:
    written = Written(0)
    assert written.add(b"m/a/u1") is False
    assert written.add(b"m/a/u1") is True
    assert sum(written.add(b"c/item:%d" % i) for i in range(1000)) < 5


def test_merge_with_the_filter_keeps_the_newest_stamp_per_key(tmp_path: Path) -> None:
    rng = random.Random(7)
    log = _changelog(rng, keys=300, records=3000)
    with_filter, without = _table(tmp_path / "a"), _table(tmp_path / "b")
    written = Written(0)
    at = 0
    while at < len(log):
        end = min(len(log), at + rng.randint(1, 60))
        with_filter.merge(0, log[at:end], written)
        without.merge(0, log[at:end])
        at = end
    expected = _newest(log)
    for table in (with_filter, without):
        db = table.partition_db(0)
        assert dict(zip(expected, db.get(list(expected)), strict=True)) == expected


def test_merge_with_the_filter_never_overwrites_a_newer_row_it_wrote(tmp_path: Path) -> None:
    table = _table(tmp_path)
    written = Written(0)
    table.merge(0, [(b"c/item:1", b"5,40")], written)
    table.merge(0, [(b"c/item:1", b"3,20"), (b"m/item:1/u", b"1,41")], written)
    db = table.partition_db(0)
    assert db.get([b"c/item:1", b"m/item:1/u"]) == [b"5,40", b"1,41"]


class _Consumer:
    """The restore's consumer over fixed fetches; ``before(n)`` runs before fetch n."""

    def __init__(self, fetches: list[list[tuple[bytes, bytes]]], before: Any) -> None:
        self.fetches = fetches
        self.before = before
        self.at = 0
        self.n = 0

    async def position(self, tp: TopicPartition) -> int:
        return self.at

    def pause(self, tp: TopicPartition) -> None:
        pass

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        self.before(self.n)
        records = self.fetches[self.n]
        self.n += 1
        out = [_Record(self.at + i, k, v) for i, (k, v) in enumerate(records)]
        self.at += len(records)
        return {TopicPartition("changelog", 0): out}


@dataclass
class _Record:
    offset: int
    key: bytes
    value: bytes


async def test_a_write_from_elsewhere_during_the_restore_voids_the_filter(
    tmp_path: Path,
) -> None:
    table = _table(tmp_path)
    db = table.partition_db(0)

    def before(n: int) -> None:
        if n == 1:  # someone else writes a newer row between two fetches
            db[b"c/item:9"] = b"7,90"

    fetches = [[(b"c/item:1", b"1,10")], [(b"c/item:9", b"2,20")]]
    consumer: Any = _Consumer(fetches, before)
    await _read(consumer, table, {TopicPartition("changelog", 0): 2})
    assert db.get([b"c/item:1", b"c/item:9"]) == [b"1,10", b"7,90"]
