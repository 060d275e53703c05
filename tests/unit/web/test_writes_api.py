"""The write API and the response headers, on a real aiohttp server with a fake publisher."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from fakes import Clock, Publisher, State, web_app, writes_of

from likestream.domain._tokens import Tokens, mint_token
from likestream.web import Auth, RateLimiter

SECRET = "unit-test-secret-" + "0123456789abcdef" * 2
AUTH = Auth(Tokens(SECRET))
ORIGIN = "https://app.example"


@pytest.fixture
def publisher() -> Publisher:
    return Publisher()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def client(publisher: Publisher, clock: Clock) -> AsyncIterator[TestClient]:
    writes = writes_of(publisher, RateLimiter(rate=1, burst=3, clock=clock), timeout=0.2)
    app = web_app(State(3), writes, cors_origins=[ORIGIN], auth=AUTH)
    async with TestClient(TestServer(app)) as http:
        yield http


def bearer(user: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, user, 60)}"}


async def test_like_and_unlike_publish_the_users_event(
    client: TestClient, publisher: Publisher
) -> None:
    assert publisher.running
    resp = await client.post("/items/post:9/like", headers=bearer())
    assert resp.status == 202
    event_id = (await resp.json())["event_id"]
    resp = await client.delete("/items/post:9/like", headers=bearer(), data=b"{}")
    assert resp.status == 202
    assert [(e.user_id, e.item_id, e.action) for e in publisher.events] == [
        ("alice", "post:9", "like"),
        ("alice", "post:9", "unlike"),
    ]
    assert publisher.events[0].event_id == event_id
    assert publisher.events[0].ts is not None


async def test_publisher_stops_with_the_app(publisher: Publisher) -> None:
    writes = writes_of(publisher, RateLimiter(1, 1), timeout=1)
    async with TestClient(TestServer(web_app(State(3), writes, auth=AUTH))):
        assert publisher.running
    assert not publisher.running


@pytest.mark.parametrize(
    ("headers", "code", "challenge"),
    [
        ({}, "unauthorized", 'Bearer realm="likestream"'),
        ({"Authorization": "Basic YWxpY2U6eA=="}, "invalid_request", 'error="invalid_request"'),
        ({"Authorization": "Bearer"}, "invalid_request", 'error="invalid_request"'),
        ({"Authorization": "Bearer abc.def"}, "invalid_token", 'error="invalid_token"'),
        (
            {"Authorization": "Bearer " + mint_token(SECRET + "x", "alice", 60)},
            "invalid_token",
            'error_description="token kid names no secret of this service (rotated out?)"',
        ),
    ],
)
async def test_no_valid_token_is_401_with_a_challenge(
    client: TestClient, publisher: Publisher, headers: dict[str, str], code: str, challenge: str
) -> None:
    resp = await client.post("/items/post:9/like", headers=headers)
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == code
    assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="likestream"')
    assert challenge in resp.headers["WWW-Authenticate"]
    assert publisher.events == []


async def test_bad_item_id_is_400(client: TestClient, publisher: Publisher) -> None:
    resp = await client.post("/items/not%20valid/like", headers=bearer())
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_item_id"
    assert publisher.events == []


async def test_oversize_body_is_413(client: TestClient, publisher: Publisher) -> None:
    resp = await client.post("/items/post:9/like", headers=bearer(), data=b"x" * 1025)
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "too_large"

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length to check up front
        for _ in range(3):
            yield b"x" * 512

    resp = await client.post("/items/post:9/like", headers=bearer(), data=chunked())
    assert resp.status == 413
    assert publisher.events == []


async def test_over_the_limit_is_429_with_retry_after(
    client: TestClient, publisher: Publisher, clock: Clock
) -> None:
    statuses = [(await client.post("/items/a/like", headers=bearer())).status for _ in range(3)]
    assert statuses == [202] * 3
    resp = await client.post("/items/a/like", headers=bearer())
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "1"
    assert (await resp.json())["error"]["code"] == "rate_limited"
    other = await client.post("/items/a/like", headers=bearer("bob"))
    assert other.status == 202
    clock.now += 1.0
    assert (await client.post("/items/a/like", headers=bearer())).status == 202
    assert len(publisher.events) == 5


async def test_no_acknowledgement_in_time_is_503(client: TestClient, publisher: Publisher) -> None:
    publisher.hang = True
    resp = await client.post("/items/post:9/like", headers=bearer())
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert (await resp.json())["error"]["code"] == "not_acknowledged"


async def test_delivery_error_is_503(client: TestClient, publisher: Publisher) -> None:
    publisher.fail = True
    resp = await client.delete("/items/post:9/like", headers=bearer())
    assert resp.status == 503
    assert "broker gone" in (await resp.json())["error"]["message"]


@pytest.mark.parametrize("path", ["/items/x/likes", "/nowhere", "/items/x/like"])
async def test_security_headers_on_every_response(client: TestClient, path: str) -> None:
    resp = await client.get(path)
    assert resp.status in (200, 404, 405)
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]


async def test_cors_preflight_for_an_allowed_origin(client: TestClient) -> None:
    resp = await client.options(
        "/items/post:9/like",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert "DELETE" in resp.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    assert resp.headers["Vary"] == "Origin"


async def test_cors_refuses_other_origins(client: TestClient) -> None:
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    resp = await client.options("/items/post:9/like", headers=preflight)
    assert resp.status == 403
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await client.get("/items/x/likes", headers={"Origin": "https://evil.example"})
    assert resp.status == 200
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_cors_headers_on_actual_requests_and_errors(client: TestClient) -> None:
    resp = await client.post("/items/x/like", headers={"Origin": ORIGIN})
    assert resp.status == 401
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Retry-After" in resp.headers["Access-Control-Expose-Headers"]


async def test_no_cors_unless_configured(publisher: Publisher) -> None:
    app = web_app(State(3), writes_of(publisher, RateLimiter(1, 1), timeout=1), auth=AUTH)
    async with TestClient(TestServer(app)) as http:
        resp = await http.get("/items/x/likes", headers={"Origin": ORIGIN})
        assert "Access-Control-Allow-Origin" not in resp.headers
        preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
        assert (await http.options("/items/x/like", headers=preflight)).status == 403


async def test_without_writes_there_are_no_write_routes() -> None:
    async with TestClient(TestServer(web_app(State(3)))) as http:
        resp = await http.post("/items/x/like", headers=bearer())
        assert resp.status == 404
