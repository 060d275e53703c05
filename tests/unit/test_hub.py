"""The hub keeps the subscriptions gauge right and seeds every subscription."""

import asyncio

from likestream._metrics import SUBSCRIPTIONS
from likestream.tables import NotServable
from likestream.web import Hub
from likestream.web._hub import Subscriber
from likestream.web._replica import Replica


class NothingServable:
    def likes(self, item_id: str) -> int:
        raise NotServable("elsewhere")

    def liked(self, item_id: str, user_id: str) -> bool:
        raise NotServable("elsewhere")

    def ready(self) -> bool:
        return True


def gauge() -> float:
    return SUBSCRIPTIONS._value.get()  # type: ignore[attr-defined,no-any-return]


async def test_subscriptions_gauge_follows_subscribe_and_drop() -> None:
    hub = Hub(NothingServable())
    sub = Subscriber(lambda item, stamp: f"{item}={stamp.likes}", interval=0.1, queue_size=8)
    before = gauge()
    hub.subscribe(sub, ["a", "b"])
    hub.subscribe(sub, ["a"])  # again: not a new subscription
    assert gauge() == before + 2
    hub.unsubscribe(sub, ["never"])
    hub.unsubscribe(sub, ["a"])
    assert gauge() == before + 1
    hub.drop(sub)
    assert gauge() == before


async def test_an_item_never_liked_gets_0_once_its_partition_is_read() -> None:
    replica = Replica(1)
    hub = Hub(NothingServable(), replica)
    sub = Subscriber(lambda item, stamp: f"{item}={stamp.likes}", interval=0.1, queue_size=8)
    hub.subscribe(sub, ["early"])
    assert sub.queue.empty()  # nothing read yet: no count to tell
    replica.caught_up(0, 1.0)
    hub.reseed()  # the waiting subscription gets its 0 with the next coalesced flush
    assert await asyncio.wait_for(sub.queue.get(), 1) == "early=0"
    hub.subscribe(sub, ["never"])  # a new one gets it at once
    assert sub.queue.get_nowait() == "never=0"
    hub.drop(sub)
