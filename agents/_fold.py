"""Folding one like event into the state: exact under replays and crashes.

Why this is exact when a worker is SIGKILLed at any moment:

* Every row carries the source offset of the last event that changed it, and an
  event at offset ``o`` is folded into a count only while ``count.offset < o``.
  Replays (the offset was not committed yet) therefore never count twice.
* Rows are flushed per batch (``tables/_state.py``): one atomic local write
  batch, then the changelog records of each partition grouped by item: its count
  row, then its member rows, all stamped with offsets no newer than the count
  row's. A group never spans two record batches and Kafka appends a batch whole,
  so whatever subset of batches survives a failure or a crash, locally or in the
  changelog, keeps ``count.offset >= member.offset`` for every member of the
  item: a member row never knows more than its count.
* Hence on replay: if the count already holds the event, only the member row may
  need finishing; otherwise the member row is exactly the state before the event.
* Offsets are committed only after their events' writes are durable, and only
  contiguously (``_confirm.py``), so a committed offset never points past a write
  Kafka could still lose; recovery never rolls rows back (``tables/_table.py``).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from likestream.tables import CountRow, MemberRow

__all__ = ["Fold", "Outcome", "fold"]

Outcome = Literal["applied", "noop", "replayed"]


class Fold(msgspec.Struct, frozen=True, gc=False):
    """Rows to write, in this order (None: leave as is), and what happened."""

    count: CountRow | None
    member: MemberRow | None
    outcome: Outcome


def fold(count: CountRow, member: MemberRow, liked: bool, offset: int) -> Fold:
    if count.offset >= offset:
        # Seen before a crash: the count has it. Write both rows again so that a
        # changelog that lost them catches up, finishing the member row if needed.
        done = member if member.offset >= offset else MemberRow(liked, offset)
        return Fold(count, done, "replayed")
    if member.liked == liked:
        return Fold(None, None, "noop")
    likes = count.likes + (1 if liked else -1)
    return Fold(CountRow(likes, offset), MemberRow(liked, offset), "applied")
