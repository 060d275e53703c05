"""The reference model of docs/ARCHITECTURE.md#the-invariant, and event streams to check
against it."""

from __future__ import annotations

import bisect
import random
from collections import defaultdict
from collections.abc import Iterator

from likestream.client import new_event
from likestream.domain._schema import Action, LikeEvent
from likestream.domain._window_spec import Window


class Oracle:
    """likes(item) = users whose latest event for the item, in partition order, is like.

    Nothing is deduplicated by ``event_id``: a like is a membership
    (docs/ARCHITECTURE.md#the-invariant), so
    an event sent again (a producer's retry, a replayed batch) is one more event at its
    new place in the partition. Right after its original it changes nothing; sent again
    after a newer event of the same user and item, it wins again, as the latest one.
    """

    def __init__(self) -> None:
        self.members: dict[tuple[str, str], bool] = {}

    def apply(self, event: LikeEvent) -> None:
        self.members[(event.item_id, event.user_id)] = event.liked

    def likes(self, item: str) -> int:
        return sum(1 for (i, _), liked in self.members.items() if i == item and liked)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (item, _), liked in self.members.items():
            out[item] = out.get(item, 0) + int(liked)
        return out


class CountHistory:
    """Every count each item had: after each of its events, in partition (offset) order.

    A fresh read answered while events arrive must be the count at some prefix of its
    partition: no shorter than what was committed before it was asked, no longer than
    the partition's log when it was answered.
    """

    def __init__(self) -> None:
        self._members: dict[tuple[str, str], bool] = {}
        self._likes: dict[str, int] = {}
        self._offsets: defaultdict[str, list[int]] = defaultdict(list)
        self._counts: defaultdict[str, list[int]] = defaultdict(list)

    def apply(self, event: LikeEvent, offset: int) -> None:
        """``event`` at ``offset`` of its partition; each item's events in offset order."""
        offsets = self._offsets[event.item_id]
        assert not offsets or offsets[-1] < offset, (event.item_id, offsets[-1], offset)
        key = (event.item_id, event.user_id)
        likes = self._likes.get(event.item_id, 0)
        if self._members.get(key, False) != event.liked:
            likes += 1 if event.liked else -1
        self._members[key] = event.liked
        self._likes[event.item_id] = likes
        offsets.append(offset)
        self._counts[event.item_id].append(likes)

    def counts_between(self, item: str, low: int, high: int | None) -> set[int]:
        """The item's counts over the prefixes ``[0, p)`` of its partition, low <= p <= high
        (None: any p from low on)."""
        offsets, counts = self._offsets.get(item, []), self._counts.get(item, [])
        first = bisect.bisect_left(offsets, low)  # events at offsets < low: in every prefix
        last = len(offsets) if high is None else bisect.bisect_left(offsets, high)
        return {counts[first - 1] if first else 0, *counts[first:last]}


def mixed_events(
    count: int, items: int, users: int, seed: int, prefix: str = "item"
) -> Iterator[LikeEvent]:
    """Likes, unlikes, exact duplicates and like/unlike flips over skewed items."""
    rng = random.Random(seed)
    previous: LikeEvent | None = None
    for _ in range(count):
        roll = rng.random()
        if previous is not None and roll < 0.1:
            event = previous  # an exact duplicate, same event_id
        elif previous is not None and roll < 0.2:
            flipped: Action = "unlike" if previous.liked else "like"
            event = new_event(previous.user_id, previous.item_id, flipped)
        else:
            item = min(int(rng.paretovariate(1.2)) - 1, items - 1)
            action: Action = "like" if rng.random() < 0.65 else "unlike"
            event = new_event(f"u{rng.randrange(users)}", f"{prefix}:{item}", action)
        previous = event
        yield event


class TrendingOracle:
    """Likes gained per window, from README "Trending" ("What a window means") and
    docs/ARCHITECTURE.md "Trending windows" alone, recomputed by brute force from every
    event at each question (no buckets, indexes or helpers of the code under test).

    Only an applied event counts: one that changes its member's state gains +1 (like)
    or -1 (unlike) at its event time. A partition's stream time is the largest event
    time it has seen. Its watermark is the stream time minus the lateness; the contract
    rounds it down to the grid of the bucket sizes and says the rounding "changes no
    bucket boundary", so which buckets a window holds is taken from the watermark as is
    (a grid that moved a boundary shows). A window holds the bucket the watermark is in,
    the buckets before it up to the window's length, and any later one: an event counts
    when its bucket starts no earlier than ``length - bucket`` before the start of the
    watermark's bucket. A bucket that left a window never comes back, so one inside at
    the end was inside all along. The merge leaves out a partition whose watermark (on
    the grid: the rule compares watermarks as the contract defines them) is a whole
    window behind the newest one.
    """

    def __init__(self, windows: tuple[Window, ...], lateness_ms: int) -> None:
        self.windows = {w.name: (w.length_ms, w.bucket_ms) for w in windows}
        self.lateness_ms = lateness_ms
        # The grid: the longest step that divides every bucket size, found by trying
        # each step down from the smallest bucket.
        sizes = [bucket for _, bucket in self.windows.values()]
        self.grid_ms = next(d for d in range(min(sizes), 0, -1) if all(b % d == 0 for b in sizes))
        # Every event as given, in order: partition, item, user, liked, event time.
        self.events: list[tuple[int, str, str, bool, int]] = []

    def apply(self, partition: int, event: LikeEvent, event_ms: int) -> None:
        self.events.append((partition, event.item_id, event.user_id, event.liked, event_ms))

    def _stream_ms(self, partition: int) -> int | None:
        times = [ms for p, _, _, _, ms in self.events if p == partition]
        return max(times) if times else None

    def _grid_watermark(self, partition: int) -> int | None:
        """The watermark rounded down to a multiple of the grid."""
        stream = self._stream_ms(partition)
        if stream is None:
            return None
        mark = stream - self.lateness_ms
        return mark - mark % self.grid_ms

    def totals(self, window: str, partition: int) -> dict[str, int]:
        length, bucket = self.windows[window]
        stream = self._stream_ms(partition)
        if stream is None:
            return {}
        watermark = stream - self.lateness_ms
        held_from = (watermark - watermark % bucket) - (length - bucket)  # a bucket start
        members: dict[tuple[str, str], bool] = {}
        out: dict[str, int] = {}
        for p, item, user, liked, ms in self.events:
            # Memberships span partitions only through the item; keyed by both anyway.
            before = members.get((item, user), False)
            members[(item, user)] = liked
            if p != partition or before == liked:
                continue
            if ms - ms % bucket >= held_from:
                out[item] = out.get(item, 0) + (1 if liked else -1)
        return {item: n for item, n in out.items() if n}

    def top(
        self, window: str, limit: int, partitions: list[int] | None = None
    ) -> list[list[object]]:
        """``[[item, likes], ...]``: most likes gained first, ties by item id, likes > 0.

        Over all partitions (or the given ones), leaving out a partition whose
        watermark is a whole window behind the newest one.
        """
        marks = {
            p: mark
            for p in sorted({p for p, *_ in self.events})
            if partitions is None or p in partitions
            if (mark := self._grid_watermark(p)) is not None
        }
        if not marks:
            return []
        newest = max(marks.values())
        length, _ = self.windows[window]
        pooled = [
            (item, n)
            for p, mark in marks.items()
            if newest - mark < length
            for item, n in self.totals(window, p).items()
            if n > 0
        ]
        pooled.sort(key=lambda pair: (-pair[1], pair[0]))
        return [[item, n] for item, n in pooled[:limit]]
