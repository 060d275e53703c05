"""Rows of the trending windows, kept in the state table next to counts and memberships.

* ``w/<item>``: the item's likes gained per bucket of every window, stamped like
  every row with the source offset of the last event that changed it:
  ``1m=2854001:3 2854002:-1;1h=237833:2,<offset>`` (window name, then bucket
  index and net likes). One row per item rather than one per window and bucket:
  an applied event costs one write for all windows, and old buckets leave the
  row when it is next written instead of needing a delete each.
* ``t/<partition>``: the partition's watermark, ``<ms>,<offset>``: the largest
  event time (epoch ms) it has seen minus the allowed lateness, rounded down to
  the grid of the bucket sizes, so that it changes once per grid step (10 s with
  the default windows) rather than with every event.

Both end in ``,<offset>`` as the other rows do, so recovery keeps the newest
(``_rows.supersedes``). Being in the same table, their changelog records keep
their order with the count and member rows (``agents/_fold.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "NO_WATERMARK",
    "Watermark",
    "WindowRow",
    "decode_watermark",
    "decode_window_row",
    "encode_watermark",
    "encode_window_row",
    "item_of_window_key",
    "watermark_key",
    "window_key",
]

WINDOW_PREFIX = b"w/"


@dataclass(frozen=True, slots=True)
class Watermark:
    ms: int
    offset: int


# Before any event: earlier than any event time, so the first one moves it.
NO_WATERMARK = Watermark(-(1 << 62), -1)


@dataclass(slots=True)
class WindowRow:
    """Net likes per bucket index, per window name; mutable: the agent's index owns it."""

    buckets: dict[str, dict[int, int]] = field(default_factory=dict)
    offset: int = -1


def window_key(item_id: str) -> bytes:
    return WINDOW_PREFIX + item_id.encode()


def item_of_window_key(key: bytes) -> str:
    return key[len(WINDOW_PREFIX) :].decode()


def watermark_key(partition: int) -> bytes:
    return b"t/%d" % partition


def encode_window_row(row: WindowRow) -> bytes:
    parts = []
    for name, buckets in row.buckets.items():
        if buckets:
            pairs = " ".join(f"{index}:{net}" for index, net in sorted(buckets.items()))
            parts.append(f"{name}={pairs}")
    return f"{';'.join(parts)},{row.offset}".encode()


def decode_window_row(raw: bytes | None) -> WindowRow:
    if raw is None:
        return WindowRow()
    payload, offset = raw.decode().rsplit(",", 1)
    row = WindowRow(offset=int(offset))
    for part in payload.split(";") if payload else ():
        name, pairs = part.split("=", 1)
        row.buckets[name] = {
            int(index): int(net) for index, net in (pair.split(":") for pair in pairs.split())
        }
    return row


def encode_watermark(row: Watermark) -> bytes:
    return b"%d,%d" % (row.ms, row.offset)


def decode_watermark(raw: bytes | None) -> Watermark:
    if raw is None:
        return NO_WATERMARK
    ms, offset = raw.split(b",", 1)
    return Watermark(int(ms), int(offset))
