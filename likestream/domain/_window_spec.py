"""Trending windows: their names, lengths and buckets, and the time rules they follow.

A window (``1h``) is split into ``n`` buckets (``5m``) of event time. At a
partition's watermark ``W`` (its stream time, the largest event time it has
seen, minus the allowed lateness) the window holds the bucket that contains
``W`` and the ``n - 1`` before it, plus any bucket after ``W`` (events up to
the lateness ahead of the watermark). So "likes gained in the last hour" is
what was gained in the last 55 to 60 minutes of event time, sliding by 5
minutes. Everything here is shared by the agents (which keep the windows),
and the web layer (which validates ``?window=`` and merges partitions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DEFAULT_WINDOWS", "Window", "clamp_event_time", "parse_duration", "parse_windows"]

DEFAULT_WINDOWS = "1m:10s,1h:5m,24h:1h"
MAX_WINDOWS = 8
MAX_BUCKETS = 120
_DURATION_RE = re.compile(r"([1-9][0-9]{0,8})(s|m|h|d)")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


@dataclass(frozen=True, slots=True)
class Window:
    name: str
    """As configured and asked for: ``1h``."""
    length_ms: int
    bucket_ms: int

    @property
    def buckets(self) -> int:
        return self.length_ms // self.bucket_ms

    def bucket(self, event_ms: int) -> int:
        """The index of the bucket holding ``event_ms`` (its start is index x bucket_ms)."""
        return event_ms // self.bucket_ms

    def first(self, watermark_ms: int) -> int:
        """The oldest bucket index the window holds at ``watermark_ms``."""
        return self.bucket(watermark_ms) - self.buckets + 1


def parse_duration(text: str) -> int:
    """Milliseconds of ``10s``, ``5m``, ``1h`` or ``1d``; ValueError otherwise."""
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 10s, 5m, 1h or 1d")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_windows(text: str) -> tuple[Window, ...]:
    """``1m:10s,1h:5m``: windows and their bucket sizes; ValueError naming the fault."""
    windows: list[Window] = []
    for part in (p.strip() for p in text.split(",")):
        name, sep, bucket = part.partition(":")
        if not sep:
            raise ValueError(f"{part!r}: expected WINDOW:BUCKET, e.g. 1h:5m")
        length_ms, bucket_ms = parse_duration(name), parse_duration(bucket)
        if length_ms % bucket_ms or not 1 <= length_ms // bucket_ms <= MAX_BUCKETS:
            raise ValueError(
                f"{part!r}: the bucket must divide the window into 1 to {MAX_BUCKETS} parts"
            )
        windows.append(Window(name.strip(), length_ms, bucket_ms))
    if len({w.name for w in windows}) != len(windows) or len(windows) > MAX_WINDOWS:
        raise ValueError(f"window names must be distinct, at most {MAX_WINDOWS} windows")
    return tuple(windows)


def clamp_event_time(ts_ms: int | None, record_ms: int, lateness_ms: int) -> int:
    """The event time the windows use: ``ts``, else the record's timestamp.

    A ``ts`` more than the lateness ahead of its record's timestamp is taken as
    that bound: one client with a clock hours ahead would otherwise move the
    partition's stream time, and so expire every window, hours early.
    """
    if ts_ms is None:
        return record_ms
    return min(ts_ms, record_ms + lateness_ms)
