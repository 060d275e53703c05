"""Positions: strict offset order, holes, and commits clamped to what is durable."""

from faust.types import TP

from likestream.agents import Positions

P0 = TP("likes", 0)


def test_folds_in_order_and_flags_holes_and_repeats() -> None:
    positions = Positions("likes")
    assert positions.check(P0, 5) == "unknown"
    positions.reset(P0, 5)
    assert positions.check(P0, 5) == "fold"
    positions.folded(P0, 5)
    assert positions.check(P0, 5) == "seen"
    assert positions.check(P0, 7) == "hole"
    assert positions.next_offset(P0) == 6
    assert positions.check(TP("other", 0), 99) == "fold"


def test_commits_never_pass_the_durable_position() -> None:
    positions = Positions("likes")
    positions.reset(P0, 10)
    epoch = positions.folded(P0, 10)
    positions.folded(P0, 11)
    # faust wants to commit 12; only offset 10 is durable so far.
    positions.confirmed(P0, 10, epoch)
    assert positions.clamp({P0: 12}) == {P0: 11}
    positions.confirmed(P0, 11, epoch)
    assert positions.clamp({P0: 12}) == {P0: 12}


def test_an_older_assignment_does_not_move_a_newer_one() -> None:
    positions = Positions("likes")
    positions.reset(P0, 10)
    old = positions.folded(P0, 10)
    positions.reset(P0, 10)  # rebalanced back to the same committed offset
    positions.confirmed(P0, 10, old)
    assert positions.clamp({P0: 11}) == {}
