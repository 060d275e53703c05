"""What the web layer reads: the one reader interface, apart from its implementations.

A worker's :class:`~tables._state.LikeTables` implements it over the partitions it holds;
a gateway's ``NoTables`` (``web/_reads.py``) implements it holding none, so every read
there goes to the owners or the ``like-counts`` replica. The web layer asks every reader
the same questions and never probes which kind it has: a reader that cannot answer
raises :class:`NotServable`.
"""

from __future__ import annotations

from typing import Protocol

from ._rows import CountRow, MemberRow

__all__ = ["NotServable", "StateReader"]


class NotServable(Exception):
    """This process cannot answer for the item now (recovering, or not its partition)."""


class StateReader(Protocol):
    """Fresh reads answer for the partitions this process serves (active and recovered);
    ``held_*`` reads answer from any copy it holds, whatever its role, possibly behind."""

    def ready(self) -> bool:
        """Whether fresh reads can be answered (recovery settled)."""
        ...

    def likes(self, item_id: str) -> int: ...

    def stamped(self, item_id: str) -> CountRow:
        """:meth:`likes` with its stamp: the count row (what the pushes compare)."""
        ...

    def likes_many(self, items: list[str]) -> tuple[dict[str, int], list[str]]:
        """Counts of the ``items`` served here, and the items that are not (for which
        :meth:`likes` would raise :class:`NotServable`)."""
        ...

    def liked(self, item_id: str, user_id: str) -> bool: ...

    def held_count(self, item_id: str) -> CountRow:
        """The count row of this process's copy of the item's partition; compare its stamp."""
        ...

    def held_member(self, item_id: str, user_id: str) -> MemberRow: ...

    def held_changelog(self, item_id: str) -> tuple[str, int, int]:
        """The changelog topic and partition behind the copy of the item's partition, and
        the offset the copy has applied up to (-1: none yet)."""
        ...

    def held_changelogs(self) -> list[tuple[str, int]]:
        """The changelog partitions of the copies this process holds (none: [])."""
        ...

    async def holding(self) -> None:
        """Returns once this process holds a copy of some partition, so that
        :meth:`held_changelogs` has some; never where none is ever held (a gateway)."""
        ...
