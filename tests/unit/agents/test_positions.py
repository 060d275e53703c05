"""Positions: durable only by whole confirmed flushes, never across an epoch."""

from faust.types import TP

from likestream.agents import Positions

P0 = TP("likes", 0)
P1 = TP("likes", 1)


def test_durable_moves_only_to_confirmed_marks() -> None:
    positions = Positions()
    positions.start(P0, 10)
    positions.folded(P0, 12)
    marks = positions.marks()
    positions.folded(P0, 15)  # folded after the flush was taken
    assert positions.to_commit() == {}
    positions.confirmed(marks)
    assert positions.to_commit() == {P0: 12}
    positions.committed({P0: 12})
    assert positions.to_commit() == {}


def test_a_mark_of_an_earlier_epoch_moves_nothing() -> None:
    positions = Positions()
    positions.start(P0, 10)
    positions.folded(P0, 12)
    old = positions.marks()
    positions.start(P0, 10)  # rebalanced back to the same committed offset
    positions.confirmed(old)
    assert positions.to_commit() == {}


def test_rewind_reads_again_from_what_is_durable() -> None:
    positions = Positions()
    positions.start(P0, 0)
    positions.start(P1, 5)
    positions.folded(P0, 4)
    positions.folded(P1, 9)
    positions.confirmed(positions.marks())
    positions.folded(P0, 8)
    in_flight = positions.marks()
    assert positions.rewind([P0, P1]) == {P0: 4, P1: 9}
    assert positions.next_offset(P0) == 4
    positions.confirmed(in_flight)  # a flush taken before the rewind
    assert positions.to_commit() == {P0: 4, P1: 9}


def test_a_revoked_partition_is_neither_read_nor_committed() -> None:
    positions = Positions()
    positions.start(P0, 3)
    positions.folded(P0, 7)
    marks = positions.marks()
    positions.stop(P0)
    positions.confirmed(marks)
    assert positions.next_offset(P0) is None
    assert positions.to_commit() == {}
    assert positions.assigned == []
