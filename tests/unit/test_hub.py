"""The hub keeps the subscriptions gauge right."""

from likestream._metrics import SUBSCRIPTIONS
from likestream.tables import NotServable
from likestream.web import Hub
from likestream.web._hub import Subscriber


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
