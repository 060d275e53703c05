"""Table definitions and state access: the only place that knows how state is stored."""

from ._rows import NO_COUNT, NO_MEMBER, CountRow, MemberRow
from ._state import Flushed, LikeTables, NotServable, StateReader
from ._table import StampedTable

__all__ = [
    "NO_COUNT",
    "NO_MEMBER",
    "CountRow",
    "Flushed",
    "LikeTables",
    "MemberRow",
    "NotServable",
    "StampedTable",
    "StateReader",
]
