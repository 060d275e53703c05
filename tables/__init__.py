"""Table definitions and state access: the only place that knows how state is stored."""

from ._reader import NotServable, StateReader
from ._rows import NO_COUNT, NO_MEMBER, CountRow, MemberRow, decode_member, member_of_key
from ._state import (
    ITEM_ROWS_MAX,
    TABLE_NAME,
    Flushed,
    FoldRows,
    LikeTables,
    StateLost,
    changelog_topic,
)
from ._table import StampedTable
from ._windows import NO_WATERMARK, Watermark, WindowRow

__all__ = [
    "ITEM_ROWS_MAX",
    "NO_COUNT",
    "NO_MEMBER",
    "NO_WATERMARK",
    "TABLE_NAME",
    "CountRow",
    "Flushed",
    "FoldRows",
    "LikeTables",
    "MemberRow",
    "NotServable",
    "StampedTable",
    "StateLost",
    "StateReader",
    "Watermark",
    "WindowRow",
    "changelog_topic",
    "decode_member",
    "member_of_key",
]
