"""The reference model of docs/ARCHITECTURE.md#the-invariant, and event streams to check
against it."""

from __future__ import annotations

import bisect
import math
import random
from collections import defaultdict
from collections.abc import Iterator

from likestream._schema import Action, LikeEvent
from likestream._window_spec import Window
from likestream.client import new_event


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
    """Likes gained per window, recomputed from every applied event (no buckets kept).

    An event is applied when it changes the member's state; it gains +1 (like) or
    -1 (unlike) in the window's bucket of its event time. At a partition's
    watermark (its largest event time minus the lateness) a window holds the
    bucket of the watermark, the ``n - 1`` before it and any later one. The watermark
    is rounded down to the grid of the bucket sizes, which does not change which
    buckets a window holds.
    """

    def __init__(self, windows: tuple[Window, ...], lateness_ms: int) -> None:
        self.windows = {w.name: w for w in windows}
        self.lateness_ms = lateness_ms
        self.members: dict[tuple[str, str], bool] = {}
        self.stream: dict[int, int] = {}
        self.gained: list[tuple[int, str, int, int]] = []  # partition, item, ms, delta

    def apply(self, partition: int, event: LikeEvent, event_ms: int) -> None:
        key = (event.item_id, event.user_id)
        before = self.members.get(key, False)
        self.members[key] = event.liked
        self.stream[partition] = max(self.stream.get(partition, event_ms), event_ms)
        if before != event.liked:
            self.gained.append((partition, event.item_id, event_ms, 1 if event.liked else -1))

    def watermark(self, partition: int) -> int:
        """Newest event time minus the lateness, on the grid of the bucket sizes."""
        grid = math.gcd(*(w.bucket_ms for w in self.windows.values()))
        return (self.stream[partition] - self.lateness_ms) // grid * grid

    def totals(self, window: str, partition: int) -> dict[str, int]:
        w = self.windows[window]
        watermark = self.watermark(partition) if partition in self.stream else -1
        first = watermark // w.bucket_ms - w.length_ms // w.bucket_ms + 1
        out: dict[str, int] = {}
        for p, item, ms, delta in self.gained:
            if p == partition and ms // w.bucket_ms >= first:
                out[item] = out.get(item, 0) + delta
        return {item: n for item, n in out.items() if n}

    def top(
        self, window: str, limit: int, partitions: list[int] | None = None
    ) -> list[list[object]]:
        """``[[item, likes], ...]``: most likes gained first, ties by item id, likes > 0.

        Over all partitions (or the given ones), leaving out a partition whose
        watermark is a whole window behind the newest one.
        """
        asked = sorted(self.stream) if partitions is None else partitions
        chosen = [p for p in asked if p in self.stream]
        if not chosen:
            return []
        newest = max(self.watermark(p) for p in chosen)
        length = self.windows[window].length_ms
        pooled = [
            (-n, item)
            for p in chosen
            if self.watermark(p) > newest - length
            for item, n in self.totals(window, p).items()
            if n > 0
        ]
        return [[item, -neg] for neg, item in sorted(pooled)[:limit]]
