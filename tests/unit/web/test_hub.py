"""The hub: subscriptions and their gauge, one encoding per change written to every
subscriber, coalescing, slow clients, the subscription cap, and the memory a flood of
never-liked subscriptions leaves behind (none)."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest
from fakes import Reads

from likestream.runtime._metrics import FRAMES_ENCODED, SUBSCRIPTIONS
from likestream.tables import NO_COUNT, CountRow
from likestream.web import Hub
from likestream.web._hub import SLICE, Full, Kind, Subscriber
from likestream.web._replica import Replica


class NothingServable(Reads):
    pass


class OwnsEverything(NothingServable):
    """A worker that owns every item and has never seen a like."""

    def likes(self, item_id: str) -> int:
        return self.stamped(item_id).likes

    def stamped(self, item_id: str) -> CountRow:
        return NO_COUNT


class Socket:
    """The transport side of a subscriber: what was written, and a buffer it may fill."""

    def __init__(self, buffered: int = 0) -> None:
        self.frames: list[bytes] = []
        self.buffered = buffered
        self.closing = False

    def write(self, data: bytes) -> None:
        self.frames.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered


class Drain(Socket):
    """A socket that takes everything and keeps nothing."""

    def write(self, data: bytes) -> None:
        pass


def ws_likes(item: str, likes: int) -> bytes:
    payload = f'{{"type":"likes","item_id":"{item}","likes":{likes}}}'.encode()
    return bytes([0x81, len(payload)]) + payload


def subscriber(socket: Socket | None = None, kind: Kind = Kind.WS) -> Subscriber:
    return Subscriber(kind, socket or Socket(), backlog=1024)


def value(metric: object) -> float:
    return metric._value.get()  # type: ignore[attr-defined,no-any-return]


async def ticked(hub: Hub) -> None:
    """Wait for the hub's next tick to have run."""
    await asyncio.sleep(hub.interval * 2)


async def test_subscriptions_gauge_follows_subscribe_and_drop() -> None:
    hub = Hub(NothingServable(), Replica(1))
    sub = subscriber()
    before = value(SUBSCRIPTIONS)
    hub.subscribe(sub, ["a", "b"])
    hub.subscribe(sub, ["a"])  # again: not a new subscription
    assert value(SUBSCRIPTIONS) == before + 2
    assert hub.subscriptions == 2
    hub.unsubscribe(sub, ["never"])
    hub.unsubscribe(sub, ["a"])
    assert value(SUBSCRIPTIONS) == before + 1
    hub.drop(sub)
    assert value(SUBSCRIPTIONS) == before
    assert hub.subscriptions == 0


async def test_an_item_never_liked_gets_0_once_its_partition_is_read() -> None:
    replica = Replica(1)
    hub = Hub(NothingServable(), replica, interval=0.001)
    socket = Socket()
    sub = subscriber(socket)
    hub.subscribe(sub, ["early"])
    assert socket.frames == []  # nothing read yet: no count to tell
    replica.caught_up(0, 1.0)
    hub.reseed()  # the waiting subscription gets its 0 with the next tick
    await ticked(hub)
    assert socket.frames == [ws_likes("early", 0)]
    hub.subscribe(sub, ["never"])  # a new one gets it at once
    assert socket.frames[-1].endswith(b'"item_id":"never","likes":0}')


async def test_a_change_is_encoded_once_and_the_same_bytes_go_to_every_subscriber() -> None:
    hub = Hub(NothingServable(), Replica(1), interval=0.001)
    sockets = [Socket() for _ in range(50)]
    for socket in sockets:
        hub.subscribe(subscriber(socket), ["post:1"])
    sse = Socket()
    hub.subscribe(subscriber(sse, Kind.SSE_CHUNKED), ["post:1"])
    before = value(FRAMES_ENCODED)
    hub.update("post:1", CountRow(7, 70))
    await ticked(hub)
    assert value(FRAMES_ENCODED) == before + 2  # one per kind of client, not per client
    first = sockets[0].frames[0]
    assert all(s.frames == [first] for s in sockets)
    assert all(s.frames[0] is first for s in sockets)
    assert sse.frames == [
        b'3a\r\nid: 70\nevent: likes\ndata: {"item_id":"post:1","likes":7}\n\n\r\n'
    ]


async def test_a_large_fan_out_lets_the_rest_of_the_process_run_between_slices() -> None:
    turns = 0

    async def other_work() -> None:  # e.g. a worker's fold, waiting for its turn
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    seen: list[int] = []
    everyone = asyncio.Event()

    class Noting(Drain):
        def write(self, data: bytes) -> None:
            seen.append(turns)
            if len(seen) == 3 * SLICE:
                everyone.set()

    hub = Hub(NothingServable(), Replica(1), interval=0.001)
    for _ in range(3 * SLICE):
        hub.subscribe(subscriber(Noting()), ["hot"])
    seen.clear()
    other = asyncio.create_task(other_work())
    hub.update("hot", CountRow(1, 1))
    await asyncio.wait_for(everyone.wait(), 5)
    other.cancel()
    # Every subscriber got the change, and the other work ran between the slices.
    assert len(seen) == 3 * SLICE
    assert len(set(seen)) == 3


async def test_changes_within_an_interval_are_one_frame_per_item() -> None:
    hub = Hub(NothingServable(), Replica(1), interval=0.05)
    socket = Socket()
    hub.subscribe(subscriber(socket), ["a", "b"])
    for n in range(1, 101):
        hub.update("a", CountRow(n, n))
        hub.update("b", CountRow(n, n))
    await ticked(hub)
    assert sorted(socket.frames) == [ws_likes("a", 100), ws_likes("b", 100)]


async def test_a_client_whose_socket_does_not_keep_up_is_ended_and_written_no_more() -> None:
    hub = Hub(NothingServable(), Replica(1), interval=0.001)
    slow, fine = Socket(buffered=4096), Socket()
    slow_sub, fine_sub = subscriber(slow), subscriber(fine)
    hub.subscribe(slow_sub, ["a"])
    hub.subscribe(fine_sub, ["a"])
    hub.update("a", CountRow(1, 1))
    await ticked(hub)
    assert slow_sub.ended == "slow"
    assert slow.frames == []
    assert fine_sub.ended is None
    assert len(fine.frames) == 1
    gone = Socket()
    gone_sub = subscriber(gone)
    hub.subscribe(gone_sub, ["a"])
    gone.closing = True
    hub.update("a", CountRow(2, 2))
    await ticked(hub)
    assert gone_sub.ended == "gone"
    assert len(fine.frames) == 2


async def test_a_client_ended_by_its_own_handler_is_not_cancelled_under_it() -> None:
    # The handler's own subscribe may find the socket full: it must see `ended` and close
    # the connection itself; a cancel of its own task would land at a random await.
    hub = Hub(NothingServable(), Replica(1))
    hub.replica.caught_up(0, 1.0)
    me = asyncio.current_task()
    assert me is not None
    sub = Subscriber(Kind.WS, Socket(buffered=4096), backlog=1024, task=me)
    hub.subscribe(sub, ["a"])
    assert sub.ended == "slow"
    assert me.cancelling() == 0
    await asyncio.sleep(0)  # nothing pending to raise here


async def test_subscribing_past_the_cap_subscribes_nothing() -> None:
    hub = Hub(NothingServable(), Replica(1), max_subscriptions=3)
    sub = subscriber()
    hub.subscribe(sub, ["a", "b"])
    with pytest.raises(Full):
        hub.subscribe(sub, ["c", "d"])
    assert sub.items == {"a", "b"}
    assert hub.subscriptions == 2
    hub.subscribe(sub, ["a", "c"])  # one new: fits
    assert hub.subscriptions == 3


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_400k_never_liked_subscriptions_cycled_leave_nothing_behind() -> None:
    # The flood the hub once kept for good: each subscribe of a never-liked item on the
    # worker that owns it stored a count. Now the cache holds only counts seen liked.
    replica = Replica(1, cache_items=1_000)
    replica.caught_up(0, 1.0)
    hub = Hub(OwnsEverything(), replica)
    sub = subscriber(Drain())
    gc.collect()
    before = rss()
    for batch in range(4_000):
        items = [f"never:{batch}:{n}" for n in range(100)]
        hub.subscribe(sub, items)
        hub.unsubscribe(sub, items)
    gc.collect()
    grown = rss() - before
    assert hub.subscriptions == 0
    assert not sub.sent
    assert hub.subscribers() == 0
    assert replica.cached() == 0
    assert grown < 64 << 20, f"RSS grew {grown / 2**20:.0f} MiB"
