"""Trending: likes gained per window and the top items, per partition, exact under replays.

Windows and their time rules are in ``likestream/domain/_window_spec.py``; the rows in
``tables/_windows.py``. Here is what the agent does with them for one event, and
the in-memory index of each owned partition that the top items come from.

Why the windowed counts are exact when a worker is SIGKILLed at any moment
(extending the argument of ``_fold.py``):

* Only an applied event changes a window, by +1 (like) or -1 (unlike), in the
  bucket of its event time. Its window row ``w/<item>`` travels with the count
  row and the member rows, in the item's group of the flush (one record batch:
  ``tables/_state.py``), so on a replay (the count already has
  the event) a member row older than the event still shows the state before
  it: the event was applied exactly when that member row differs from it. A
  member row as new as the event means all of the event's writes were made.
* The window row carries the offset of the last event that changed it: below
  the event's offset, the event's delta is not in it yet and is added.
* Whenever the fold writes the count and member rows (applied, or again on a
  replay), the item's window row is written in the same group too, so that in
  whatever subset of batches survives a member row never implies more than its
  window row.
  The replay of the event that moved the watermark writes it again too.
* The watermark (newest event time minus the lateness, on the grid of the
  bucket sizes: ``tables/_windows.py``) only grows, and a bucket leaves a window
  for good once the watermark passes it. What the windows show at the end
  depends only on buckets still inside them, and an event in such a bucket is
  counted whatever the watermark was when it was (re)played, since it was never
  later than at the end. Whatever a crash does to old buckets (a row deleted
  locally and brought back by changelog recovery) stays out of sight.

Top items: per window, a candidate set of at least ``KEEP`` items and a bound
on the likes of every item outside it, kept up to date per change; the top
``MAX_TOP`` come from sorting the candidates, and only when a decrement leaves
too few candidates above the bound are all the window's items ranked again.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence

from likestream.domain._top import PartitionTop
from likestream.domain._window_spec import Window
from likestream.runtime._metrics import trending_late
from likestream.tables import LikeTables, MemberRow, Watermark, WindowRow
from likestream.tables._windows import (
    encode_watermark,
    encode_window_row,
    watermark_key,
    window_key,
)

from ._fold import Fold

__all__ = ["KEEP", "MAX_TOP", "PartitionTrending", "Ranking", "Trending", "effective"]

MAX_TOP = 100  # items published per window and partition: the largest ?limit=
KEEP = 2 * MAX_TOP  # candidates kept per window (up to twice as many between two trims),
# so that most decrements need no re-ranking

Row = tuple[bytes, bytes | None]


def effective(result: Fold, before: MemberRow, liked: bool, offset: int) -> bool:
    """Whether the event changes the windows now (see the module docstring)."""
    if result.outcome == "replayed":
        return before.offset < offset and before.liked != liked
    return result.outcome == "applied"


class Ranking:
    """The visible likes of one window of one partition, and its top items.

    Items rank by likes, then by item id. ``_bound`` is the rank of the best item
    that may be outside the candidates: candidates ranked above it are surely in
    the top, in their order.
    """

    def __init__(self, window: Window, first: int) -> None:
        self.window = window
        self.first = first
        self._totals: dict[str, int] = {}
        self._buckets: dict[int, dict[str, int]] = {}
        self.deltas: dict[tuple[str, int], int] = {}
        """Likes added per (item, bucket) and not ranked yet (:meth:`add`)."""
        self._candidates: set[str] = set()
        self._bound: tuple[int, str] = (0, "")  # nothing with likes is outside yet

    @property
    def totals(self) -> dict[str, int]:
        """Likes gained per item in the window (items with 0 left out)."""
        self._drain()
        return self._totals

    def add(self, item: str, bucket: int, delta: int) -> None:
        """Count ``delta`` likes of ``item`` in ``bucket``. Ranked in bulk (:meth:`_drain`)
        when something reads the ranking: the fold adds far more often than that."""
        key = (item, bucket)
        self.deltas[key] = self.deltas.get(key, 0) + delta

    def _drain(self) -> None:
        if not self.deltas:
            return
        deltas, self.deltas = self.deltas, {}
        for (item, bucket), delta in deltas.items():
            # A bucket's net can come back to 0; the item stays listed in it, so that
            # its row is deleted only once the bucket has left the window.
            per_item = self._buckets.setdefault(bucket, {})
            per_item[item] = per_item.get(item, 0) + delta
            if delta:
                self._change(item, delta)

    def advance(self, first: int) -> set[str]:
        """Drop buckets older than ``first``; returns the items that had likes in them."""
        touched: set[str] = set()
        if first <= self.first:
            return touched
        self._drain()
        self.first = first
        for bucket in [b for b in self._buckets if b < first]:
            for item, net in self._buckets.pop(bucket).items():
                self._change(item, -net)
                touched.add(item)
        return touched

    def top(self, limit: int) -> list[tuple[str, int]]:
        """The ``limit`` items with the most likes gained (more than 0), ties by item id."""
        self._drain()
        sure = [i for i in self._candidates if self._above(i, self._bound)]
        if self._bound[0] > 0 and len(sure) < limit:
            self._rerank()
            sure = list(self._candidates)
        ranked = sorted((-self._totals.get(i, 0), i) for i in sure)[:limit]
        return [(item, -neg) for neg, item in ranked if neg < 0]

    def _above(self, item: str, rank: tuple[int, str]) -> bool:
        total = self._totals.get(item, 0)
        return total > rank[0] or (total == rank[0] and item < rank[1])

    def _change(self, item: str, delta: int) -> None:
        total = self._totals.get(item, 0) + delta
        if total:
            self._totals[item] = total
        else:
            self._totals.pop(item, None)
        if item in self._candidates or not self._above(item, self._bound):
            return
        self._candidates.add(item)
        if len(self._candidates) > 2 * KEEP:
            # Trimmed back to KEEP in one sort once KEEP more came in, not one eviction
            # (a scan of every candidate) per newcomer: while many items tie near the
            # bound, that scan was the fold's largest cost.
            totals = self._totals
            ranked = sorted(self._candidates, key=lambda i: (-totals.get(i, 0), i))
            self._candidates = set(ranked[:KEEP])
            best_out = ranked[KEEP]
            if self._above(best_out, self._bound):
                self._bound = (totals.get(best_out, 0), best_out)

    def _rerank(self) -> None:
        best = heapq.nsmallest(KEEP + 1, self._totals.items(), key=lambda kv: (-kv[1], kv[0]))
        self._candidates = {item for item, _ in best[:KEEP]}
        self._bound = (best[KEEP][1], best[KEEP][0]) if len(best) > KEEP else (0, "")


class PartitionTrending:
    """The windows of one partition: its rows in memory, their totals and top items."""

    def __init__(
        self,
        partition: int,
        windows: Iterable[Window],
        lateness_ms: int,
        watermark: Watermark,
        rows: dict[str, WindowRow],
    ) -> None:
        self.partition = partition
        self.lateness_ms = lateness_ms
        self.watermark = watermark
        # Newest event time seen; after a restart a lower bound, which is enough: it
        # only decides when the watermark moves on.
        self._newest = watermark.ms + lateness_ms
        self.rows: dict[str, WindowRow] = {}
        self.rankings = {w.name: Ranking(w, w.first(watermark.ms)) for w in windows}
        self._windows = [(n, r, r.window.bucket_ms) for n, r in self.rankings.items()]
        # Every window's first bucket depends on the watermark only through this grid.
        self._grid = math.gcd(*(r.window.bucket_ms for r in self.rankings.values()))
        self.stamp = watermark.offset
        self.dirty = True  # publish once after every (re)build
        self._next_slide = self._slide_at()
        self._stale: set[str] = set()  # rows with nothing left in any window: delete them
        self._dirty: set[str] = set()  # rows to write with the next flush (seal)
        for item, row in rows.items():
            self.stamp = max(self.stamp, row.offset)
            self._load(item, row)

    def apply(
        self, item: str, result: Fold, before: MemberRow, liked: bool, offset: int, event_ms: int
    ) -> Sequence[Row]:
        """The rows one event writes now (the watermark, deletes), in order, between its
        count row and its member row; its own window row comes with :meth:`seal`."""
        writes: list[Row] = []
        if event_ms > self._newest:
            self._newest = event_ms
            mark = (event_ms - self.lateness_ms) // self._grid * self._grid
            if mark > self.watermark.ms:
                self.watermark = Watermark(mark, offset)
                if mark >= self._next_slide:
                    self._stale |= self._advance(mark)
                self._changed(offset)
        if self.watermark.offset == offset:
            # Moved by this event, or a replay of the event that moved it: written
            # again then, like the count row, in case the changelog lost it.
            writes.append((watermark_key(self.partition), encode_watermark(self.watermark)))
        row = self.rows.get(item)
        if effective(result, before, liked, offset) and (row is None or row.offset < offset):
            row = row or WindowRow()
            delta = 1 if liked else -1
            counted = False
            buckets = row.buckets
            for name, ranking, bucket_ms in self._windows:
                # Window.bucket and Ranking.add, inlined: per window of every event.
                bucket = event_ms // bucket_ms
                if bucket < ranking.first:
                    trending_late(name)
                    continue
                per_window = buckets.get(name)
                if per_window is None:
                    per_window = buckets[name] = {}
                per_window[bucket] = per_window.get(bucket, 0) + delta
                deltas, key = ranking.deltas, (item, bucket)
                deltas[key] = deltas.get(key, 0) + delta
                counted = True
            if counted:
                row.offset = offset
                self.rows[item] = row
                self._stale.discard(item)
                self._changed(offset)
        if self._stale:
            for gone in self._stale:
                self.rows.pop(gone, None)
                self._dirty.discard(gone)
                writes.append((window_key(gone), None))
            self._stale.clear()
        if result.count is not None and item in self.rows:
            # Also on a replay that changes nothing: the fold writes the count and
            # member rows again, so the window row goes with them, or the changelog
            # could hold a member row newer than the window row it implies. Encoded
            # once per flush (:meth:`seal`), in the same flush as those rows.
            self._dirty.add(item)
        return writes

    def seal(self) -> list[Row]:
        """The window rows changed since the last call, encoded: taken with each flush,
        whose count and member rows they go between."""
        rows: list[Row] = [
            (window_key(item), encode_window_row(self._pruned(self.rows[item])))
            for item in self._dirty
            if item in self.rows
        ]
        self._dirty.clear()
        return rows

    def tops(self, limit: int = MAX_TOP) -> list[PartitionTop]:
        """Each window's top items, as published (``likestream/domain/_top.py``)."""
        return [
            PartitionTop(
                name, self.partition, self.stamp, self.watermark.ms, tuple(ranking.top(limit))
            )
            for name, ranking in self.rankings.items()
        ]

    def _changed(self, offset: int) -> None:
        self.stamp = max(self.stamp, offset)
        self.dirty = True

    def _advance(self, watermark: int) -> set[str]:
        touched: set[str] = set()
        for ranking in self.rankings.values():
            touched |= ranking.advance(ranking.window.first(watermark))
        self._next_slide = self._slide_at()
        return {
            item for item in touched if item in self.rows and not self._visible(self.rows[item])
        }

    def _slide_at(self) -> int:
        """The watermark at which the first window next drops a bucket: no work before."""
        return min(
            (r.first + r.window.buckets) * r.window.bucket_ms for r in self.rankings.values()
        )

    def _visible(self, row: WindowRow | None) -> bool:
        if row is None:
            return False
        return any(
            bucket >= ranking.first
            for name, ranking in self.rankings.items()
            for bucket in row.buckets.get(name, ())
        )

    def _pruned(self, row: WindowRow) -> WindowRow:
        """The row as written: buckets still in their windows, windows still configured.

        A bucket whose net is 0 stays: a row is deleted only when all the buckets its
        events touched have left their windows, so a delete never loses the stamp of an
        event whose bucket could still be seen (a replay would count it again)."""
        buckets = row.buckets
        for name in [name for name in buckets if name not in self.rankings]:
            del buckets[name]
        for name, ranking in self.rankings.items():
            per_window = buckets.get(name)
            # Rebuilt only when a bucket left (rarely: once per bucket step).
            if per_window and min(per_window) < ranking.first:
                buckets[name] = {b: n for b, n in per_window.items() if b >= ranking.first}
        return row

    def _load(self, item: str, row: WindowRow) -> None:
        if not self._visible(row):
            self._stale.add(item)
            return
        self.rows[item] = row
        for name, ranking in self.rankings.items():
            for bucket, net in row.buckets.get(name, {}).items():
                if bucket >= ranking.first:
                    ranking.add(item, bucket, net)


class Trending:
    """The trending index of every partition this worker owns, built lazily from the rows."""

    def __init__(self, windows: Iterable[Window], lateness_ms: int) -> None:
        self.windows = tuple(windows)
        self.lateness_ms = lateness_ms
        self.partitions: dict[int, PartitionTrending] = {}

    def load(self, partition: int, watermark: Watermark, rows: dict[str, WindowRow]) -> None:
        self.partitions[partition] = PartitionTrending(
            partition, self.windows, self.lateness_ms, watermark, rows
        )

    def partition(self, partition: int, tables: LikeTables) -> PartitionTrending:
        """The partition's index; built from its rows when missing (after an assignment)."""
        part = self.partitions.get(partition)
        if part is None:
            self.load(partition, *tables.window_rows(partition))
            part = self.partitions[partition]
        return part

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions revoked: their rows may change elsewhere; rebuild when owned again."""
        for partition in partitions:
            self.partitions.pop(partition, None)

    def changed(self) -> list[PartitionTop]:
        """The top items of the partitions changed since the last call."""
        out: list[PartitionTop] = []
        for part in self.partitions.values():
            if part.dirty:
                part.dirty = False
                out.extend(part.tops())
        return out
