"""The reference model of DESIGN section 4, and event streams to check against it."""

from __future__ import annotations

import random
from collections.abc import Iterator

from likestream._schema import Action, LikeEvent
from likestream.client import new_event


class Oracle:
    """likes(item) = users whose latest event for the item, in partition order, is like."""

    def __init__(self) -> None:
        self.members: dict[tuple[str, str], bool] = {}

    def apply(self, event: LikeEvent) -> None:
        self.members[(event.item_id, event.user_id)] = event.liked

    def likes(self, item: str) -> int:
        return sum(1 for (i, _), liked in self.members.items() if i == item and liked)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (item, _), liked in self.members.items():
            out[item] = out.get(item, 0) + int(liked)
        return out


def mixed_events(
    count: int, items: int, users: int, seed: int, prefix: str = "item"
) -> Iterator[LikeEvent]:
    """Likes, unlikes, exact duplicates and like/unlike flips over skewed items."""
    rng = random.Random(seed)
    previous: LikeEvent | None = None
    for _ in range(count):
        roll = rng.random()
        if previous is not None and roll < 0.1:
            event = previous  # an exact duplicate, same event_id
        elif previous is not None and roll < 0.2:
            flipped: Action = "unlike" if previous.liked else "like"
            event = new_event(previous.user_id, previous.item_id, flipped)
        else:
            item = min(int(rng.paretovariate(1.2)) - 1, items - 1)
            action: Action = "like" if rng.random() < 0.65 else "unlike"
            event = new_event(f"u{rng.randrange(users)}", f"{prefix}:{item}", action)
        previous = event
        yield event
