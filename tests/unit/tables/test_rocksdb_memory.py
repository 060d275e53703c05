"""The state table's RocksDB memory: index and filter blocks charged to the block cache
(``tables/_options.py``), and the per-kind accounting the sampler and the soak read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
import rocksdict
from faust.stores.rocksdb import RocksDBOptions

from likestream.config._settings import load_settings
from likestream.kafka import _internals as internals
from likestream.tables import LikeTables
from likestream.tables._options import BoundedOptions
from likestream.tables._state import ROCKSDB_MEMORY

OPTIONS: dict[str, Any] = {"block_cache_size": 8 << 20, "write_buffer_size": 1 << 20}


def _filled(options: RocksDBOptions, path: Path) -> Any:
    """A database of ``options`` with a few table files of 40,000 keys each, opened."""
    db = options.open(path)
    for f in range(3):
        batch = rocksdict.WriteBatch(raw_mode=True)
        for i in range(40_000):
            batch.put(f"m/item:{f}-{i}/user:{i}".encode(), b"x" * 16)
        db.write(batch)
        db.flush()
    return db


def _prop(db: Any, name: str) -> int:
    return int(db.property_int_value(name) or 0)


def test_index_and_filter_blocks_are_in_the_block_cache(tmp_path: Path) -> None:
    plain = _filled(RocksDBOptions(**OPTIONS), tmp_path / "faust")
    bounded = _filled(BoundedOptions(**OPTIONS), tmp_path / "bounded")
    try:
        assert bounded.get(b"m/item:1-7/user:7") == b"x" * 16
        # faust's options: each open file's index and filter outside any cap.
        outside = _prop(plain, "rocksdb.estimate-table-readers-mem")
        assert outside > 64 << 10
        # Bounded: outside the cache only the readers' small fixed part; the blocks are
        # in the cache (pinned: the files are still in L0).
        assert _prop(bounded, "rocksdb.estimate-table-readers-mem") < outside / 4
        assert _prop(bounded, "rocksdb.block-cache-pinned-usage") > 0
        assert _prop(bounded, "rocksdb.block-cache-capacity") == 8 << 20
    finally:
        plain.close()
        bounded.close()


def test_the_state_table_opens_its_partitions_with_them(tmp_path: Path) -> None:
    settings = load_settings(partitions=2, data_dir=tmp_path, rocksdb_cache_mb=3)
    app = faust.App("options-test", store="rocksdb://", datadir=str(tmp_path))
    tables = LikeTables(app, settings)
    store: Any = tables.table.data
    assert isinstance(store.rocksdb_options, BoundedOptions)
    db = internals.partition_db(tables.table.data, 1)
    assert _prop(db, "rocksdb.block-cache-capacity") == 3 << 20
    memory = tables.rocksdb_memory()
    assert set(memory) == set(ROCKSDB_MEMORY)
    assert all(size >= 0 for size in memory.values())
    db.put(b"c/a", b"1" * 100)
    assert tables.rocksdb_memory()["memtables"] > 0
