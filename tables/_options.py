"""The state table's RocksDB options: what RocksDB holds in memory has a cap set by settings.

faust's options (``faust.stores.rocksdb.RocksDBOptions``) leave the index and bloom filter
blocks of every table file outside the block cache: each open file keeps them in memory
for as long as it is open (``rocksdb.estimate-table-readers-mem``), and faust opens up to
90% of the process's file limit. That memory grows with the files, so with the state and
with compaction's churn, with no cap. Here they are charged to the block cache
(``cache_index_and_filter_blocks``), so that per open partition database RocksDB holds at
most ``LIKESTREAM_ROCKSDB_CACHE_MB`` of blocks plus ``max_write_buffer_number`` memtables of
``LIKESTREAM_ROCKSDB_WRITE_BUFFER_MB``. The L0 files' index and filter blocks are pinned
in the cache (``pin_l0_filter_and_index_blocks_in_cache``): every read and every fold
lookup probes those files first, so data blocks must not evict them; they are few (L0
holds a handful of files before a compaction merges them).
"""

from __future__ import annotations

from typing import Any

import rocksdict
from faust.stores.rocksdb import RocksDBOptions

__all__ = ["BoundedOptions"]


class BoundedOptions(RocksDBOptions):
    """faust's rocksdict options, with index and filter blocks in the block cache."""

    def as_options(self) -> Any:
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        # faust's default: 90% of the file limit; None (unknown limit): RocksDB's -1, no cap.
        options.set_max_open_files(-1 if self.max_open_files is None else self.max_open_files)
        options.set_write_buffer_size(self.write_buffer_size)
        options.set_target_file_size_base(self.target_file_size_base)
        options.set_max_write_buffer_number(self.max_write_buffer_number)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, True)
        table.set_block_cache(rocksdict.Cache(self.block_cache_size))
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        options.set_block_based_table_factory(table)
        return options
