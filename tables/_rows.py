"""Rows of the state table and their byte encoding.

Both kinds of row live in one table so that their changelog records share one
changelog partition and so keep their order (see ``agents/_fold.py`` for why
that matters). Every row carries ``offset``: the source offset (in the events
partition that owns the item) of the last event that changed it.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "COUNT_PREFIX",
    "NO_COUNT",
    "NO_MEMBER",
    "CountRow",
    "MemberRow",
    "count_key",
    "decode_count",
    "decode_member",
    "encode_count",
    "encode_member",
    "encode_row",
    "member_key",
    "member_of_key",
    "row_offset",
    "supersedes",
]


# msgspec structs rather than frozen dataclasses: the fold makes a few per event, and a
# frozen dataclass's __init__ (object.__setattr__ per field) cost more than the fold.
# A CountRow is also the stamped count the web layer keeps and pushes (``web/_replica.py``,
# ``web/_hub.py``): one type for the pair wherever it travels.
class CountRow(msgspec.Struct, frozen=True, gc=False):
    likes: int
    offset: int
    """Source offset of the event that made this count; -1 when unknown (never liked)."""


class MemberRow(msgspec.Struct, frozen=True, gc=False):
    liked: bool
    offset: int


NO_COUNT = CountRow(0, -1)
NO_MEMBER = MemberRow(False, -1)


COUNT_PREFIX = b"c/"


# Ids never contain "/" (docs/ARCHITECTURE.md#events), so the separator is unambiguous.
def count_key(item_id: str) -> bytes:
    return COUNT_PREFIX + item_id.encode()


def member_key(item_id: str, user_id: str) -> bytes:
    return b"m/" + item_id.encode() + b"/" + user_id.encode()


def member_of_key(key: bytes) -> tuple[str, str] | None:
    """The (item, user) of a member row's key; None for a key of another kind."""
    if not key.startswith(b"m/"):
        return None
    parts = key.split(b"/")
    if len(parts) != 3:
        return None
    try:
        return parts[1].decode(), parts[2].decode()
    except UnicodeDecodeError:
        return None  # not written by likestream: ids are ASCII


def encode_row(row: CountRow | MemberRow) -> bytes:
    return encode_count(row) if isinstance(row, CountRow) else encode_member(row)


def encode_count(row: CountRow) -> bytes:
    return b"%d,%d" % (row.likes, row.offset)


def encode_member(row: MemberRow) -> bytes:
    return b"%d,%d" % (row.liked, row.offset)


def _split(raw: bytes) -> tuple[int, int]:
    value, offset = raw.split(b",", 1)
    return int(value), int(offset)


def decode_count(raw: bytes | None) -> CountRow:
    if raw is None:
        return NO_COUNT
    likes, offset = _split(raw)
    return CountRow(likes, offset)


def decode_member(raw: bytes | None) -> MemberRow:
    if raw is None:
        return NO_MEMBER
    liked, offset = _split(raw)
    return MemberRow(bool(liked), offset)


def row_offset(raw: bytes) -> int:
    """The source offset stamped on an encoded row of any kind (trending rows too:
    ``tables/_windows.py``): whatever follows the last comma."""
    return int(raw.rsplit(b",", 1)[1])


def supersedes(incoming: bytes, current: bytes | None) -> bool:
    """Whether a changelog record may replace the local row during recovery."""
    return current is None or row_offset(incoming) >= row_offset(current)
