"""The like state: one stamped table holding counts and memberships, and its reads."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

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
            # A standby applies each changelog record as it arrives: faust's default
            # buffers 1000, so a standby could sit up to 999 records behind for good,
            # and it answers reads while its owner is away (web/_reads.py).
            standby_buffer_size=1,
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

    def take_unconfirmed(self) -> list[FutureMessage]:
        return self.table.take_unconfirmed()

    # -- reads (StateReader) ---------------------------------------------------

    def likes(self, item_id: str) -> int:
        self._check_servable(item_id)
        return decode_count(self.table.get(count_key(item_id))).likes

    def liked(self, item_id: str, user_id: str) -> bool:
        self._check_servable(item_id)
        return decode_member(self.table.get(member_key(item_id, user_id))).liked

    def held_count(self, item_id: str) -> CountRow:
        """The count row of this process's copy of the item's partition, whatever its role
        (active, standby, recovering, mid-rebalance): possibly behind. Compare its stamp."""
        return decode_count(self._held(item_id).get(count_key(item_id)))

    def held_member(self, item_id: str, user_id: str) -> MemberRow:
        """Like :meth:`held_count`, for a membership."""
        return decode_member(self._held(item_id).get(member_key(item_id, user_id)))

    def held_changelog(self, item_id: str) -> tuple[str, int, int]:
        """The changelog topic and partition behind this process's copy of the item's
        partition, and the offset the copy has applied up to (-1: none yet)."""
        self._held(item_id)
        partition = self._partition(item_id)
        topic: str = self.table.changelog_topic.get_topic_name()
        applied = self.table.data.persisted_offset(TP(topic, partition))
        return topic, partition, -1 if applied is None else int(applied)

    def held_changelogs(self) -> list[tuple[str, int]]:
        """The changelog partitions of the copies this process holds."""
        topic: str = self.table.changelog_topic.get_topic_name()
        return [(topic, p) for p in sorted(self.table.data._dbs)]  # type: ignore[attr-defined]

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

    def _held(self, item_id: str) -> Any:
        # The store's open databases are private API; faust offers no other. A database
        # is open while this process holds the partition (active or standby); faust's
        # own lookup would open a missing one, so it is not used here.
        db = self.table.data._dbs.get(self._partition(item_id))  # type: ignore[attr-defined]
        if db is None:
            raise NotServable("no copy of the item's partition here")
        return db

    def _partition(self, item_id: str) -> int:
        return partition_for(item_id.encode(), self.partitions)

    def _check_servable(self, item_id: str) -> None:
        if not self.ready():
            raise NotServable("recovering: tables are being restored from their changelogs")
        tp = TP(self.topic, self._partition(item_id))
        if tp not in self.app.assignor.assigned_actives():
            raise NotServable(f"partition {tp.partition} is served by another worker")
