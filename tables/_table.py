"""A Faust table that reports its changelog writes and never lets recovery go back.

Two changes to faust's ``Table``:

* every changelog write's delivery future is kept until the agent takes it with
  :meth:`StampedTable.take_unconfirmed`, so that an event is acknowledged (and its
  offset committed) only after all it wrote is durable in Kafka. Faust's own
  flush-before-commit returns early when the producer stalls for 0.1 s.
* recovery keeps, per key, whichever of the local row and the changelog record
  carries the later source offset. After a SIGKILL the local RocksDB can be ahead
  of the changelog; replaying an older changelog record over it would mix old and
  new rows and break the count/membership invariant that ``agents/_fold.py`` needs.
  Tombstones are not applied: they carry no stamp (see :meth:`StampedTable._is_newer`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust
from faust.types import TP, EventT
from faust.types.tuples import FutureMessage

from ._rows import supersedes

__all__ = ["StampedTable"]


class StampedTable(faust.Table[bytes, bytes]):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unconfirmed: list[FutureMessage] = []

    def send_changelog(self, *args: Any, **kwargs: Any) -> FutureMessage:
        fut: FutureMessage = super().send_changelog(*args, **kwargs)
        self._unconfirmed.append(fut)
        return fut

    def take_unconfirmed(self) -> list[FutureMessage]:
        """The delivery futures of the writes made since the last call."""
        taken, self._unconfirmed = self._unconfirmed, []
        return taken

    def apply_changelog_batch(self, batch: Iterable[EventT[bytes]]) -> None:
        events = list(batch)
        newest: dict[tuple[int, bytes], bytes] = {}
        keep = [event for event in events if self._is_newer(event, newest)]
        self.data.apply_changelog_batch(keep, to_key=self._to_key, to_value=self._to_value)
        # Skipped records still count as read, or recovery would start over.
        last: dict[TP, int] = {}
        for event in events:
            tp = event.message.tp
            last[tp] = max(last.get(tp, -1), event.message.offset)
        for tp, offset in last.items():
            self.data.set_persisted_offset(tp, offset)

    def _is_newer(self, event: EventT[bytes], newest: dict[tuple[int, bytes], bytes]) -> bool:
        msg = event.message
        if msg.value is None:
            # A tombstone has no stamp: it could delete a newer local row. Only expired
            # trending rows are ever deleted (tables/_windows.py), and one brought back
            # holds nothing inside a window; the agent deletes it again.
            return False
        if msg.key is None:
            return True
        slot = (msg.partition, msg.key)
        if slot not in newest:
            # The store's per-partition handle is private API; faust offers no other.
            db = self.data._db_for_partition(msg.partition)  # type: ignore[attr-defined]
            local = db.get(msg.key)
            if local is not None:
                newest[slot] = local
        if not supersedes(msg.value, newest.get(slot)):
            return False
        newest[slot] = msg.value
        return True
