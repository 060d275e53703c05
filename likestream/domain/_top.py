"""The trending topic's records, and merging the partitions' top items into one answer.

Each worker publishes, per window and owned partition, that partition's top
items (at most ``agents._trending.MAX_TOP``) to the compacted trending topic,
key ``<window>/<partition>``, value::

    {"window": "1h", "partition": 3, "stamp": 1234, "watermark": 1764252990000,
     "items": [["post:9", 12], ["post:4", 7]]}

``watermark`` is the partition's (``tables/_windows.py``). ``stamp`` is the
source offset of the newest event that changed the partition's windows: a
record older than one already read (an earlier owner's, published late after a
rebalance) is ignored. Items live on one partition each, so the
top ``n`` overall are among the top ``n`` of every partition: the merge is
exact for any ``n`` up to the published size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from likestream.domain._schema import is_valid_id
from likestream.domain._window_spec import Window

__all__ = ["PartitionTop", "encode_top", "merge_tops", "parse_top", "top_key"]


@dataclass(frozen=True, slots=True)
class PartitionTop:
    window: str
    partition: int
    stamp: int
    watermark_ms: int
    items: tuple[tuple[str, int], ...]


def top_key(window: str, partition: int) -> bytes:
    return f"{window}/{partition}".encode()


def encode_top(top: PartitionTop) -> bytes:
    return orjson.dumps(
        {
            "window": top.window,
            "partition": top.partition,
            "stamp": top.stamp,
            "watermark": top.watermark_ms,
            "items": [list(pair) for pair in top.items],
        }
    )


def parse_top(raw: bytes | None) -> PartitionTop | None:
    """The record's top items; None for anything malformed."""
    try:
        doc = orjson.loads(raw or b"")
        items = tuple((str(i), int(n)) for i, n in doc["items"])
        top = PartitionTop(
            str(doc["window"]),
            int(doc["partition"]),
            int(doc["stamp"]),
            int(doc["watermark"]),
            items,
        )
    except (KeyError, ValueError, TypeError, orjson.JSONDecodeError):
        return None
    return top if all(is_valid_id(i) for i, _ in items) else None


def merge_tops(window: Window, tops: Iterable[PartitionTop], limit: int) -> list[tuple[str, int]]:
    """The ``limit`` items with the most likes gained in ``window`` over all partitions.

    Each partition's window is as of its own watermark; a partition whose watermark
    is a whole window behind the newest of any partition has gained nothing in the
    window as seen from there (it has been quiet), and is left out.
    """
    chosen = [t for t in tops if t.window == window.name]
    if not chosen:
        return []
    newest = max(t.watermark_ms for t in chosen)
    pooled = [
        (-likes, item)
        for t in chosen
        if t.watermark_ms > newest - window.length_ms
        for item, likes in t.items
    ]
    return [(item, -neg) for neg, item in sorted(pooled)[:limit]]
