"""Reads across processes: owners from the group, forwarding, replicas and their bounds."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from fakes import Reads, web_app

from likestream.domain._partition import partition_for
from likestream.domain._tokens import Tokens, mint_token
from likestream.tables import NO_COUNT, NO_MEMBER, CountRow, MemberRow, NotServable
from likestream.web import (
    FORWARDED,
    STALE,
    STALE_MS,
    Auth,
    ReadSettings,
    Replica,
    _reads,
)
from likestream.web._copies import CopyClock
from likestream.web._owners import Owners, Placement, parse_members
from likestream.web._reads import READER, Reader, forwarding_proof

PARTITIONS = 4
TOPIC = "likes"
CHANGELOG = "app-state-changelog"
ME = "http://me:1"
SECRET = "unit-test-secret-" + "0123456789abcdef" * 2
PROOF = forwarding_proof(SECRET)
TOKEN_KEY = "unit-test-token-key-" + "0123456789abcdef" * 2
LIMIT = 60.0  # seconds; what a test waits at most for something that must happen


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(TOKEN_KEY, user, 60)}"}


def items_in(partition: int) -> list[str]:
    return [f"i{n}" for n in range(200) if partition_for(f"i{n}".encode(), PARTITIONS) == partition]


def item_in(partition: int) -> str:
    return items_in(partition)[0]


def assignment(url: str, actives: list[int], standbys: list[int]) -> bytes:
    """A member assignment as faust's assignor writes it."""
    doc = {
        "assignment": {
            "actives": {TOPIC: actives, CHANGELOG: actives},
            "standbys": {TOPIC: standbys, CHANGELOG: standbys},
        },
        "url": url,
        "changelog_distribution": {},
    }
    raw: bytes = ConsumerProtocolMemberAssignment(
        0, [(TOPIC, actives)], zlib.compress(orjson.dumps(doc))
    ).encode()
    return raw


def test_placement_from_the_group_members() -> None:
    placement = parse_members(
        [
            assignment("http://a:1/", [0, 2], [1]),
            assignment("http://b:1", [1, 3], [0, 2]),
            b"",  # joined, not assigned yet
            b"\x00\x01garbage",
        ],
        TOPIC,
    )
    assert placement.active == {0: "http://a:1", 2: "http://a:1", 1: "http://b:1", 3: "http://b:1"}
    # Listed under both topics of the group by faust: each standby once.
    assert placement.standbys == {0: ("http://b:1",), 1: ("http://a:1",), 2: ("http://b:1",)}


def test_owners_keep_the_last_stable_placement_while_rebalancing() -> None:
    owners = Owners()
    stable = Placement({0: "http://a:1"}, {0: ("http://b:1",)})
    owners.update("Stable", stable)
    owners.update("PreparingRebalance", Placement())
    assert owners.targets(0) == ["http://a:1"]
    assert owners.targets(0, standbys=True) == ["http://a:1", "http://b:1"]
    owners.update("Stable", Placement({0: "http://b:1"}))
    assert owners.targets(0, standbys=True) == ["http://b:1"]


def test_replica_knows_nothing_before_a_partition_was_read_to_its_end() -> None:
    replica = Replica(PARTITIONS)
    item = item_in(1)
    replica.update(item, CountRow(3, 10))
    assert replica.count(item) is None
    assert replica.age(1) is None
    replica.caught_up(1, at=100.0)
    assert replica.count(item) == CountRow(3, 10)
    assert replica.count(items_in(1)[1]) == CountRow(0, -1)  # never seen: no likes
    assert replica.age(1, now=102.5) == 2.5
    assert not replica.update(item, CountRow(2, 9))  # older: kept out
    assert not replica.loaded()


def test_copy_age_is_the_last_time_its_changelog_ended_where_it_is() -> None:
    clock = CopyClock(keep_seconds=5)
    tp = (CHANGELOG, 0)
    clock.sampled(tp, at=10.0, end=100)
    clock.sampled(tp, at=11.0, end=150)
    clock.sampled(tp, at=12.0, end=180)
    assert clock.age(tp, applied=179, now=12.5) == 0.5  # complete at the last sample
    assert clock.age(tp, applied=149, now=12.5) == 1.5  # had all that existed at 11.0
    assert clock.age(tp, applied=50, now=12.5) is None  # behind every sample kept
    assert clock.age((CHANGELOG, 1), applied=0) is None


class State(Reads):
    """Owns partition 0 (fresh) and holds a copy of partition 1 (a standby)."""

    def __init__(self) -> None:
        self.counts = {item_in(0): 5, item_in(1): 7}

    def likes(self, item_id: str) -> int:
        if partition_for(item_id.encode(), PARTITIONS) != 0:
            raise NotServable("elsewhere")
        return self.counts.get(item_id, 0)

    def liked(self, item_id: str, user_id: str) -> bool:
        self.likes(item_id)
        return user_id == "fan"

    def ready(self) -> bool:
        return True

    def held_count(self, item_id: str) -> CountRow:
        if partition_for(item_id.encode(), PARTITIONS) not in (0, 1):
            raise NotServable("no copy")
        count = self.counts.get(item_id)
        return NO_COUNT if count is None else CountRow(count, 40)

    def held_member(self, item_id: str, user_id: str) -> MemberRow:
        self.held_count(item_id)
        return MemberRow(True, 40) if user_id == "fan" else NO_MEMBER

    def held_changelog(self, item_id: str) -> tuple[str, int, int]:
        return CHANGELOG, partition_for(item_id.encode(), PARTITIONS), 99

    def held_changelogs(self) -> list[tuple[str, int]]:
        return [(CHANGELOG, 0), (CHANGELOG, 1)]


class Peer:
    """Another process: answers counts and memberships, records what it was asked."""

    def __init__(self, likes: int, status: int = 200) -> None:
        self.likes = likes
        self.status = status
        self.asked: list[tuple[str, bool]] = []
        self.app = web.Application()
        self.app.router.add_get("/likes", self.batch)
        self.app.router.add_get("/items/{item}/likes/{user}", self.member)

    async def batch(self, request: web.Request) -> web.Response:
        self.asked.append((request.path_qs, request.headers.get(FORWARDED) == PROOF))
        items = request.query["items"].split(",")
        return web.json_response(
            {"likes": dict.fromkeys(items, self.likes)},
            status=self.status,
            headers={STALE: "true", STALE_MS: "250"} if self.likes < 0 else {},
        )

    async def member(self, request: web.Request) -> web.Response:
        self.asked.append((request.path, request.headers.get(FORWARDED) == PROOF))
        return web.json_response({"liked": True}, status=self.status)


async def served(peer: Peer) -> AsyncIterator[str]:
    server = TestServer(peer.app)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def peer_a() -> AsyncIterator[tuple[Peer, str]]:
    peer = Peer(likes=11)
    async for url in served(peer):
        yield peer, url


@pytest.fixture
async def peer_b() -> AsyncIterator[tuple[Peer, str]]:
    peer = Peer(likes=22)
    async for url in served(peer):
        yield peer, url


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    app = web_app(
        State(),
        reads=ReadSettings(stale_max=2.0, url=ME),
        replica=Replica(PARTITIONS),
        auth=Auth(Tokens(TOKEN_KEY)),
        internal_secret=SECRET,
    )
    async with TestClient(TestServer(app)) as http:
        yield http


def reader_of(client: TestClient) -> Reader:
    return client.server.app[READER]


def place(client: TestClient, active: dict[int, str], standbys: dict[int, tuple[str, ...]]) -> None:
    reader_of(client).owners.update("Stable", Placement(active, standbys))


def load_replica(client: TestClient, at: float | None = None) -> None:
    replica = reader_of(client).replica
    for p in range(PARTITIONS):
        replica.caught_up(p, time.time() if at is None else at)


async def test_the_owner_answers_fresh(client: TestClient) -> None:
    resp = await client.get(f"/items/{item_in(0)}/likes")
    assert (resp.status, (await resp.json())["likes"]) == (200, 5)
    assert STALE not in resp.headers
    assert STALE_MS not in resp.headers


async def test_batch_reads_fan_out_to_each_owner_once(
    client: TestClient, peer_a: tuple[Peer, str], peer_b: tuple[Peer, str]
) -> None:
    (a, a_url), (b, b_url) = peer_a, peer_b
    place(client, {0: ME, 1: a_url, 2: b_url, 3: b_url}, {})
    items = [item_in(0), item_in(1), item_in(2), item_in(3)]
    resp = await client.get("/likes", params={"items": ",".join(items)})
    assert resp.status == 200
    assert (await resp.json())["likes"] == dict(zip(items, [5, 11, 22, 22], strict=True))
    assert STALE not in resp.headers
    assert len(a.asked) == 1
    assert len(b.asked) == 1
    assert all(forwarded for _, forwarded in a.asked + b.asked)


async def test_a_stale_owner_answer_keeps_its_headers(client: TestClient) -> None:
    peer = Peer(likes=-1)  # answers from its own replica
    async for url in served(peer):
        place(client, {1: url}, {})
        resp = await client.get(f"/items/{item_in(1)}/likes")
        assert resp.headers[STALE] == "true"
        assert resp.headers[STALE_MS] == "250"


async def test_an_unreachable_owner_falls_back_to_the_replica(client: TestClient) -> None:
    place(client, {2: "http://127.0.0.1:9"}, {})  # nothing listens there
    load_replica(client)
    reader_of(client).replica.update(item_in(2), CountRow(8, 3))
    resp = await client.get(f"/items/{item_in(2)}/likes")
    assert (resp.status, (await resp.json())["likes"]) == (200, 8)
    assert resp.headers[STALE] == "true"
    assert 0 <= int(resp.headers[STALE_MS]) <= 2000


async def test_a_forwarded_read_is_never_forwarded_again(
    client: TestClient, peer_a: tuple[Peer, str]
) -> None:
    peer, url = peer_a
    place(client, {2: url}, {2: (url,)})
    load_replica(client)
    resp = await client.get(f"/items/{item_in(2)}/likes", headers={FORWARDED: PROOF})
    assert resp.status == 200
    assert resp.headers[STALE] == "true"
    assert peer.asked == []


async def test_a_client_cannot_mark_its_own_read_as_forwarded(
    client: TestClient, peer_a: tuple[Peer, str]
) -> None:
    peer, url = peer_a
    place(client, {2: url}, {2: (url,)})
    load_replica(client)
    for made_up in ("1", "true", forwarding_proof("another-secret-" + "x" * 32)):
        resp = await client.get(f"/items/{item_in(2)}/likes", headers={FORWARDED: made_up})
        assert (resp.status, (await resp.json())["likes"]) == (200, 11)  # the owner's
        assert STALE not in resp.headers
    assert len(peer.asked) == 3


async def test_a_replica_older_than_the_bound_does_not_answer(client: TestClient) -> None:
    load_replica(client, at=time.time() - 10)
    resp = await client.get(f"/items/{item_in(2)}/likes")
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "unavailable"


async def test_memberships_try_the_standby_when_the_owner_is_away(
    client: TestClient, peer_a: tuple[Peer, str]
) -> None:
    peer, url = peer_a
    place(client, {2: "http://127.0.0.1:9"}, {2: (url,)})
    resp = await client.get(f"/items/{item_in(2)}/likes/someone", headers=bearer("someone"))
    assert (resp.status, (await resp.json())["liked"]) == (200, True)
    assert peer.asked == [(f"/items/{item_in(2)}/likes/someone", True)]


async def test_a_held_copy_answers_memberships_when_it_is_new_enough(client: TestClient) -> None:
    reader = reader_of(client)
    load_replica(client)
    item = item_in(1)
    reader.replica.update(item, CountRow(7, 40))  # the copy's count row is as new
    resp = await client.get(f"/items/{item}/likes/fan", headers={FORWARDED: PROOF})
    assert (resp.status, (await resp.json())["liked"]) == (200, True)
    assert resp.headers[STALE] == "true"

    reader.replica.update(item, CountRow(9, 50))  # newer than the copy, whose changelog...
    resp = await client.get(f"/items/{item}/likes/fan", headers={FORWARDED: PROOF})
    assert resp.status == 503  # ...position nobody has sampled yet
    reader.copies.sampled((CHANGELOG, 1), time.time() - 0.5, end=100)
    resp = await client.get(f"/items/{item}/likes/fan", headers={FORWARDED: PROOF})
    assert resp.status == 200
    assert 400 <= int(resp.headers[STALE_MS]) <= 2000


async def test_no_copy_and_no_peer_is_a_503(client: TestClient) -> None:
    load_replica(client)
    resp = await client.get(f"/items/{item_in(3)}/likes/fan", headers=bearer("fan"))
    assert resp.status == 503


# -- owners that hang or answer garbage: real servers, real timeouts ----------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(on_connect: Handler) -> AsyncIterator[str]:
    """A TCP server on loopback that does what ``on_connect`` does instead of HTTP."""
    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


@pytest.fixture
async def impatient(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TestClient]:
    """A worker that gives a forwarded read a fifth of a second, and whose replica is
    loaded; a peer that failed stays skipped for the whole test (not for a second, which
    a slow machine could use up between two reads)."""
    monkeypatch.setattr(_reads, "DOWN_SECONDS", 3600.0)
    app = web_app(
        State(),
        reads=ReadSettings(stale_max=60.0, forward_timeout=0.2, url=ME),
        replica=Replica(PARTITIONS),
        auth=Auth(Tokens(TOKEN_KEY)),
        internal_secret=SECRET,
    )
    async with TestClient(TestServer(app)) as http:
        load_replica(http)
        yield http


async def read_count(client: TestClient, item: str) -> tuple[int, int, bool]:
    """Status, likes, stale; the forward timeout must end a hung forward, not LIMIT."""
    async with asyncio.timeout(LIMIT):
        resp = await client.get(f"/items/{item}/likes")
        return resp.status, (await resp.json())["likes"], resp.headers.get(STALE) == "true"


async def test_an_owner_that_hangs_times_out_and_is_then_skipped(impatient: TestClient) -> None:
    requests: list[bytes] = []
    never = asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readline())  # the request line; then no answer
        await never.wait()

    async with raw_server(hang) as url:
        place(impatient, {2: url}, {2: (url,)})
        item = item_in(2)
        reader_of(impatient).replica.update(item, CountRow(8, 3))
        assert await read_count(impatient, item) == (200, 8, True)  # the replica's
        assert [r.split()[:2] for r in requests] == [[b"GET", f"/likes?items={item}".encode()]]
        # Marked down: later reads answer without asking it, a batch from the replica...
        resp = await impatient.get("/likes", params={"items": item})
        assert (await resp.json())["likes"] == {item: 8}
        # ...and a membership (owner, then standby: the same peer) from nowhere: a 503.
        resp = await impatient.get(f"/items/{item}/likes/fan", headers=bearer("fan"))
        assert resp.status == 503
        assert len(requests) == 1


async def test_an_owner_that_answers_garbage_is_marked_down(impatient: TestClient) -> None:
    connections = 0

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readline()
        writer.write(b"\x00\xffnot HTTP at all\r\n\r\n")
        await writer.drain()
        writer.close()

    async with raw_server(garbage) as url:
        place(impatient, {3: url}, {})
        item = item_in(3)
        reader_of(impatient).replica.update(item, CountRow(4, 9))
        assert await read_count(impatient, item) == (200, 4, True)
        assert await read_count(impatient, item) == (200, 4, True)
        assert connections == 1  # skipped the second time


class Malformed(Peer):
    """Answers 200 with JSON that is not what was asked for."""

    async def batch(self, request: web.Request) -> web.Response:
        self.asked.append((request.path_qs, True))
        return web.json_response({"likes": {"someone else": 1}})

    async def member(self, request: web.Request) -> web.Response:
        self.asked.append((request.path, True))
        return web.json_response({"liked": "yes"})


@pytest.mark.parametrize("body", [b"{not json", b'{"likes": ["a list"]}'])
async def test_an_unparsable_owner_answer_falls_back_to_the_replica(
    impatient: TestClient, body: bytes
) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/likes", answer)
    server = TestServer(app)
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        place(impatient, {2: url}, {})
        item = item_in(2)
        reader_of(impatient).replica.update(item, CountRow(6, 5))
        assert await read_count(impatient, item) == (200, 6, True)
    finally:
        await server.close()


async def test_a_malformed_owner_answer_is_not_taken(
    impatient: TestClient, peer_a: tuple[Peer, str]
) -> None:
    standby, standby_url = peer_a
    bad = Malformed(likes=0)
    async for url in served(bad):
        place(impatient, {2: url}, {2: (url, standby_url)})
        item = item_in(2)
        reader_of(impatient).replica.update(item, CountRow(6, 5))
        # A count not for the item asked: the replica answers, said stale.
        assert await read_count(impatient, item) == (200, 6, True)
        # A membership that is not a boolean: the standby is asked next.
        resp = await impatient.get(f"/items/{item}/likes/fan", headers=bearer("fan"))
        assert (resp.status, (await resp.json())["liked"]) == (200, True)
        assert [path for path, _ in bad.asked] == [
            f"/likes?items={item}",
            f"/items/{item}/likes/fan",
        ]
        assert [path for path, _ in standby.asked] == [f"/items/{item}/likes/fan"]
