"""One bucket per user across processes: where it is, the internal endpoint that takes from
it, and a gateway taking tokens from its owner, over real aiohttp servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer
from fakes import Publisher, State, holds_everything, web_app, writes_of

from likestream.domain._partition import partition_for
from likestream.domain._tokens import Tokens, mint_token
from likestream.runtime._metrics import RATE_LIMIT_CHECKS
from likestream.web import FORWARDED, Auth, LimitSettings, RateLimiter
from likestream.web._owners import Placement
from likestream.web._quota import LIMITS, Here, Nowhere, Owner, route
from likestream.web._reads import forwarding_proof

SECRET = "unit-test-secret-" + "0123456789abcdef" * 2
PROOF = forwarding_proof(SECRET)
PARTITIONS = 4
ALICE = {"user_id": "alice"}


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, user, 60)}"}


def app_of(
    holds: Callable[[int], bool],
    burst: int = 2,
    secret: str = SECRET,
    url: str | None = None,
    cors: tuple[str, ...] = (),
    timeout: float = 0.5,
) -> tuple[TestServer, Publisher]:
    publisher = Publisher()
    limits = LimitSettings(PARTITIONS, url, secret, timeout, holds)
    # rate 0.001/s: no refill within a test.
    writes = writes_of(publisher, RateLimiter(0.001, burst), 1.0, limits)
    # Tokens of the one SECRET everywhere; ``secret`` is the processes' internal one.
    app = web_app(State(), writes, cors, auth=Auth(Tokens(SECRET)), internal_secret=secret)
    return TestServer(app), publisher


def checks(where: str) -> float:
    value = RATE_LIMIT_CHECKS.labels(where)._value.get()
    return float(value)


# -- where a bucket is (pure) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("holds", "owner", "down", "expected"),
    [
        (True, None, False, Here()),
        (True, "http://other:1", True, Here()),  # its own assignment wins over the group's
        (False, "http://owner:1", False, Owner("http://owner:1")),
        (False, None, False, Nowhere("no worker owns partition 3 now (the group is forming)")),
        (False, "http://me:1", False, Nowhere("partition 3 is moving (rebalancing)")),
        (
            False,
            "http://owner:1",
            True,
            Nowhere("the owner of partition 3 did not answer a moment ago"),
        ),
    ],
)
def test_route(holds: bool, owner: str | None, down: bool, expected: object) -> None:
    assert route(3, holds, owner, "http://me:1", down) == expected


def test_users_hash_like_items() -> None:
    server, _ = app_of(holds=holds_everything)
    limits = server.app[LIMITS]
    assert [limits.partition(u) for u in ("alice", "bob", "carol")] == [
        partition_for(u.encode(), PARTITIONS) for u in ("alice", "bob", "carol")
    ]


# -- the internal endpoint ---------------------------------------------------------------


@pytest.fixture
async def owner() -> AsyncIterator[TestClient]:
    server, _ = app_of(holds=lambda partition: True, cors=("*",))
    async with TestClient(server) as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [{}, {FORWARDED: "1"}, {FORWARDED: forwarding_proof("another-secret-" + "x" * 32)}],
)
async def test_internal_endpoint_refuses_without_proof(
    owner: TestClient, headers: dict[str, str]
) -> None:
    resp = await owner.post("/internal/limits", json=ALICE, headers=headers)
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "forbidden"
    # Nothing was taken: with proof, the whole burst is still there.
    answers = []
    for _ in range(3):
        resp = await owner.post("/internal/limits", json=ALICE, headers={FORWARDED: PROOF})
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-store"
        answers.append((await resp.json())["wait"])
    assert answers[:2] == [0.0, 0.0]
    assert answers[2] > 0


async def test_internal_endpoint_checks_the_user_id(owner: TestClient) -> None:
    for body in ({"user_id": "bad id"}, {"user": "alice"}, ["alice"], {"user_id": 7}):
        resp = await owner.post("/internal/limits", json=body, headers={FORWARDED: PROOF})
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_user_id"
    resp = await owner.post("/internal/limits", data=b"{", headers={FORWARDED: PROOF})
    assert resp.status == 400


async def test_internal_endpoint_is_not_for_browsers(owner: TestClient) -> None:
    # CORS allows any origin for the API here, never for /internal/.
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    resp = await owner.options("/internal/limits", headers=preflight)
    assert resp.status == 403
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await owner.post(
        "/internal/limits", json=ALICE, headers={FORWARDED: PROOF, "Origin": "https://app.example"}
    )
    assert resp.status == 200
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await owner.options("/items/x/like", headers=preflight)
    assert resp.status == 204


async def test_internal_endpoint_answers_only_for_partitions_it_holds() -> None:
    held = partition_for(b"alice", PARTITIONS)
    server, _ = app_of(holds=lambda partition: partition == held)
    other = next(
        u for u in ("bob", "carol", "dave", "erin") if partition_for(u.encode(), 4) != held
    )
    async with TestClient(server) as client:
        resp = await client.post("/internal/limits", json=ALICE, headers={FORWARDED: PROOF})
        assert resp.status == 200
        resp = await client.post(
            "/internal/limits", json={"user_id": other}, headers={FORWARDED: PROOF}
        )
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "not_owner"


# -- a gateway and the owner ---------------------------------------------------------------


@pytest.fixture
async def pair() -> AsyncIterator[tuple[TestClient, TestClient, Publisher, Publisher]]:
    """A worker holding every partition and a gateway whose group view names it."""
    worker_server, worker_pub = app_of(holds=lambda partition: True)
    async with TestClient(worker_server) as worker:
        url = str(worker.make_url("")).rstrip("/")
        gateway_server, gateway_pub = app_of(holds=lambda partition: False)
        async with TestClient(gateway_server) as gateway:
            owners = gateway.app[LIMITS].owners
            owners.update("Stable", Placement({p: url for p in range(PARTITIONS)}))
            yield worker, gateway, worker_pub, gateway_pub


async def test_one_bucket_for_a_gateway_and_the_owner(
    pair: tuple[TestClient, TestClient, Publisher, Publisher],
) -> None:
    worker, gateway, worker_pub, gateway_pub = pair
    asked = checks("owner")
    statuses = [
        (await gateway.post("/items/a/like", headers=bearer("alice"))).status,
        (await worker.post("/items/b/like", headers=bearer("alice"))).status,
    ]
    resp = await gateway.post("/items/c/like", headers=bearer("alice"))
    statuses.append(resp.status)
    assert statuses == [202, 202, 429]
    assert 1 <= int(resp.headers["Retry-After"]) <= 1000
    assert (await resp.json())["error"]["code"] == "rate_limited"
    assert (await worker.post("/items/d/like", headers=bearer("alice"))).status == 429
    assert checks("owner") == asked + 2
    assert [e.item_id for e in gateway_pub.events + worker_pub.events] == ["a", "b"]
    # Another user has a bucket of their own.
    assert (await gateway.post("/items/a/like", headers=bearer("bob"))).status == 202


async def test_concurrent_writes_through_a_gateway_get_one_burst(
    pair: tuple[TestClient, TestClient, Publisher, Publisher],
) -> None:
    worker, gateway, _, _ = pair
    sends = [
        (gateway if i % 2 else worker).post(f"/items/i{i}/like", headers=bearer("carol"))
        for i in range(12)
    ]
    statuses = sorted([resp.status for resp in await asyncio.gather(*sends)])
    assert statuses == [202] * 2 + [429] * 10


async def test_unknown_or_unreachable_owner_fails_closed() -> None:
    gateway_server, publisher = app_of(holds=lambda partition: False, timeout=0.2)
    async with TestClient(gateway_server) as gateway:
        unavailable = checks("unavailable")
        resp = await gateway.post("/items/a/like", headers=bearer("alice"))
        assert resp.status == 503  # no placement yet: no owner known
        assert resp.headers["Retry-After"] == "1"
        assert (await resp.json())["error"]["code"] == "rate_limit_unavailable"
        # An owner that is gone: nothing listens on the port of a closed server.
        gone = TestServer(web_app(State()))
        await gone.start_server()
        url = str(gone.make_url("")).rstrip("/")
        await gone.close()
        owners = gateway.app[LIMITS].owners
        owners.update("Stable", Placement({p: url for p in range(PARTITIONS)}))
        for _ in range(2):  # the second is refused without trying: the owner is down
            resp = await gateway.post("/items/a/like", headers=bearer("alice"))
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "rate_limit_unavailable"
        assert checks("unavailable") == unavailable + 3
        assert publisher.events == []


async def test_a_peer_without_the_secret_gets_no_token() -> None:
    worker_server, _ = app_of(holds=lambda partition: True)
    async with TestClient(worker_server) as worker:
        url = str(worker.make_url("")).rstrip("/")
        other = "another-secret-" + "y" * 32
        gateway_server, publisher = app_of(holds=lambda partition: False, secret=other)
        async with TestClient(gateway_server) as gateway:
            owners = gateway.app[LIMITS].owners
            owners.update("Stable", Placement({p: url for p in range(PARTITIONS)}))
            token = bearer("alice")
            resp = await gateway.post("/items/a/like", headers=token)
            assert resp.status == 503  # the owner said 403: not a token
            assert publisher.events == []
