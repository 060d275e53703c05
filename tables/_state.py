"""The like state: one stamped table holding counts and memberships, and its reads."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import faust
from faust.types import TP
from faust.types.tuples import FutureMessage

from likestream._partition import partition_for
from likestream._settings import Settings

from ._rows import (
    CountRow,
    MemberRow,
    count_key,
    decode_count,
    decode_member,
    encode_row,
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

__all__ = ["LikeTables", "NotServable", "StateReader"]

TABLE_NAME = "state"
MiB = 1 << 20


class NotServable(Exception):
    """This process cannot answer for the item now (recovering, or not its partition)."""


class StateReader(Protocol):
    """What the web layer reads. Raises :class:`NotServable` when it cannot answer."""

    def likes(self, item_id: str) -> int: ...

    def liked(self, item_id: str, user_id: str) -> bool: ...

    def ready(self) -> bool: ...


class LikeTables:
    """Counts (``c/<item>``) and memberships (``m/<item>/<user>``) in one RocksDB table."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.partitions = settings.partitions
        self.topic = settings.topic
        table = StampedTable(
            app,
            name=TABLE_NAME,
            beacon=app.tables.beacon,
            partitions=settings.partitions,
            key_type=bytes,  # bytes types give faust's "raw" serializers
            value_type=bytes,
            options={
                "block_cache_size": settings.rocksdb_cache_mb * MiB,
                "block_cache_compressed_size": 0,
                "write_buffer_size": settings.rocksdb_write_buffer_mb * MiB,
                "max_write_buffer_number": 2,
            },
            help="Like counts and memberships, stamped with source offsets.",
        )
        app.tables.add(table)
        self.table = table

    # -- writes (agents only, inside the event's processing) ------------------

    def count(self, item_id: str) -> CountRow:
        return decode_count(self.table.get(count_key(item_id)))

    def member(self, item_id: str, user_id: str) -> MemberRow:
        return decode_member(self.table.get(member_key(item_id, user_id)))

    def put_count(self, item_id: str, row: CountRow) -> None:
        self.table[count_key(item_id)] = encode_row(row)

    def put_member(self, item_id: str, user_id: str, row: MemberRow) -> None:
        self.table[member_key(item_id, user_id)] = encode_row(row)

    def put_window_rows(self, rows: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Write encoded trending rows (``tables/_windows.py``) in order; None deletes one,
        which sends a tombstone to the changelog."""
        for key, value in rows:
            if value is None:
                del self.table[key]
            else:
                self.table[key] = value

    def window_rows(self, partition: int) -> tuple[Watermark, dict[str, WindowRow]]:
        """The watermark and every window row of one partition, read from its database.

        A scan of the ``w/`` rows: for rebuilding the agent's in-memory index after an
        assignment, never per event or per request.
        """
        data = self.table.data
        if not hasattr(data, "_db_for_partition"):
            # faust's memory store (unit tests): one mapping, read as it is.
            raw_rows: Iterable[tuple[bytes, bytes]] = sorted(data.items())
            stream_raw = data.get(watermark_key(partition))
        else:
            # The store's per-partition handle is private API; faust offers no other.
            db = data._db_for_partition(partition)
            raw_rows = db.items(from_key=WINDOW_PREFIX)
            stream_raw = db.get(watermark_key(partition))
        rows: dict[str, WindowRow] = {}
        for key, raw in raw_rows:
            if key.startswith(WINDOW_PREFIX):
                rows[item_of_window_key(key)] = decode_window_row(raw)
            elif key > WINDOW_PREFIX:
                break  # keys are sorted: past the w/ rows
        return decode_watermark(stream_raw), rows

    def take_unconfirmed(self) -> list[FutureMessage]:
        return self.table.take_unconfirmed()

    # -- reads (StateReader) ---------------------------------------------------

    def likes(self, item_id: str) -> int:
        self._check_servable(item_id)
        return decode_count(self.table.get(count_key(item_id))).likes

    def liked(self, item_id: str, user_id: str) -> bool:
        self._check_servable(item_id)
        return decode_member(self.table.get(member_key(item_id, user_id))).liked

    def ready(self) -> bool:
        recovery = self.app.tables.recovery  # type: ignore[attr-defined]
        return bool(
            recovery.completed.is_set() and not recovery.in_recovery and not self.app.rebalancing
        )

    def estimated_rows(self, partitions: Iterable[int]) -> dict[int, int]:
        """RocksDB's estimate of the rows of each open partition database among ``partitions``.

        An estimate (``rocksdb.estimate-num-keys``): cheap, without scanning. For metrics.
        """
        # The store's per-partition databases are private API; faust offers no other.
        dbs = dict(self.table.data._dbs)  # type: ignore[attr-defined]
        return {
            p: int(dbs[p].property_int_value("rocksdb.estimate-num-keys") or 0)
            for p in partitions
            if p in dbs
        }

    def _check_servable(self, item_id: str) -> None:
        if not self.ready():
            raise NotServable("recovering: tables are being restored from their changelogs")
        tp = TP(self.topic, partition_for(item_id.encode(), self.partitions))
        if tp not in self.app.assignor.assigned_actives():
            raise NotServable(f"partition {tp.partition} is served by another worker")
