"""A Faust table whose recovery never goes back.

Recovery keeps, per key, whichever of the local row and the changelog record
carries the later source offset. After a SIGKILL the local RocksDB can be ahead
of the changelog; replaying an older changelog record over it would mix old and
new rows and break the count/membership invariant that ``agents/_fold.py`` needs.

Tombstones are not applied: they carry no stamp and could delete a newer local
row. Only expired trending rows are ever deleted (``_windows.py``), and one
brought back holds nothing inside a window; the agent deletes it again.

The table is written around faust's per-key API (``_state.py`` flushes rows per
batch); faust still owns its changelog topic, partition assignment and recovery.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import faust
import rocksdict
from aiokafka.errors import KafkaError
from faust.types import TP, EventT

from likestream.kafka import _internals as internals
from likestream.kafka._factory import KafkaConfig

from ._memory import release_free_memory
from ._restore import restore
from ._rows import supersedes
from ._written import Written

__all__ = ["StampedTable"]

log = logging.getLogger(__name__)

SETTLED_POLL_S = 1.0
"""How often the release after a recovery looks whether faust's recovery has settled."""


class StampedTable(faust.Table[bytes, bytes]):
    # Set by the owner: where to restore owned partitions from (``_restore.py``).
    kafka: KafkaConfig | None = None
    source_topic: str | None = None
    # Records the bulk restore still has to read; None when it is not running.
    restoring: int | None = None
    # Called first on every assignment, before faust's recovery can resume the flow
    # of the assigned partitions (the agent pauses the events partitions in it).
    on_assigned: Callable[[set[TP]], Awaitable[None]] | None = None
    # Called first when the worker stops, while the group member and RocksDB are still
    # up (faust stops its tables before its consumer): the agent's last flush and commit.
    on_stopping: Callable[[], Awaitable[None]] | None = None
    # The release of memory once the current assignment's recovery has settled.
    _release: asyncio.Task[None] | None = None

    # Set once a partition database is open here: this process holds a copy (active or
    # standby) of some partition. The web's copy clock waits for it (web/_copies.py):
    # faust's assignment has no event of its own to wait on.
    holding: asyncio.Event

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.holding = asyncio.Event()

    async def on_stop(self) -> None:
        if self._release is not None:
            self._release.cancel()
        if self.on_stopping is not None:
            await self.on_stopping()
        await super().on_stop()

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        if self.on_assigned is not None:
            await self.on_assigned(assigned)
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        if internals.open_dbs(self.data):  # faust opened the actives' databases
            self.holding.set()
        owned = sorted(tp.partition for tp in assigned if tp.topic == self.source_topic)
        if self.kafka is not None and owned:
            try:
                await restore(self, self.kafka, owned)
            except KafkaError as exc:
                # Faust's own recovery still runs and gets there, only slower.
                log.warning("bulk restore of %s failed (%r)", self.name, exc)
        # Memory the assignment's bursts freed, given back once both are over (_memory.py):
        # the bulk restore's buffers, and the first fetches faust's recovery, which runs
        # after this, drops with its seeks (and the agent's pauses the events partitions').
        if self._release is not None:
            self._release.cancel()
        self._release = asyncio.ensure_future(self._release_when_recovered())

    async def _release_when_recovered(self) -> None:
        # Settled is three states of faust's (recovery done, not recovering, no
        # rebalance), with no one event for it.
        while not internals.recovery_settled(self.app):  # noqa: ASYNC110
            await asyncio.sleep(SETTLED_POLL_S)
        release_free_memory()

    def apply_changelog_batch(self, batch: Iterable[EventT[bytes]]) -> None:
        by_partition: defaultdict[int, list[tuple[bytes | None, bytes | None]]] = defaultdict(list)
        last: dict[TP, int] = {}
        for event in batch:
            msg = event.message
            by_partition[msg.partition].append((msg.key, msg.value))
            last[msg.tp] = max(last.get(msg.tp, -1), msg.offset)
        for partition, records in by_partition.items():
            self.merge(partition, records)
        # Skipped records still count as read, or recovery would start over.
        for tp, offset in last.items():
            self.data.set_persisted_offset(tp, offset)

    def merge(
        self,
        partition: int,
        records: Iterable[tuple[bytes | None, bytes | None]],
        written: Written | None = None,
    ) -> None:
        """Write the changelog ``records`` that are newer than the local rows, in one batch.

        The newest record of each key in ``records`` first (a later one wins a tie), then
        one RocksDB multi-get of the keys that may be there: with ``written`` (the bulk
        restore into a partition that began empty, ``_written.py``) only those it may
        have written before, else all.
        """
        newest: dict[bytes, bytes] = {}
        for key, value in records:
            if key is None or value is None:
                continue  # a tombstone has no stamp (see above)
            held = newest.get(key)
            if held is None or supersedes(value, held):
                newest[key] = value
        if not newest:
            return
        db = self.partition_db(partition)
        self.holding.set()  # a standby's database opens with its first changelog records
        write = rocksdict.WriteBatch(raw_mode=True)
        check = newest
        if written is not None:
            check = {}
            for key, value in newest.items():
                if written.add(key):
                    check[key] = value
                else:
                    write.put(key, value)  # absent: never written since it was empty
        if check:
            for (key, value), current in zip(check.items(), db.get(list(check)), strict=True):
                if supersedes(value, current):
                    write.put(key, value)
        db.write(write)

    def partition_db(self, partition: int) -> Any:
        """The partition's RocksDB (rocksdict ``Rdict``), opened on first use."""
        return internals.partition_db(self.data, partition)
