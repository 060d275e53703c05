"""Privacy: a membership is read only with its own user's token (unless memberships are
public, or a peer forwarded the read); logs show keyed hashes, never user ids."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from fakes import Publisher, State, web_app, writes_of

from likestream.domain._tokens import TokenPolicy, Tokens, mint_token
from likestream.runtime._logging import JsonFormatter, PlainFormatter, RequestIdFilter
from likestream.web import FORWARDED, Auth, RateLimiter
from likestream.web._access import UserTags
from likestream.web._reads import forwarding_proof

SECRET = "unit-test-secret-" + "0123456789abcdef" * 2
INTERNAL = "unit-test-internal-" + "fedcba9876543210" * 2
USER = "alice@example.com"  # ids may be e-mail addresses: never in a log


def bearer(user: str, secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(secret, user, 60)}"}


async def serve(public: bool = False, internal: str = INTERNAL) -> TestClient:
    writes = writes_of(Publisher(), RateLimiter(100, 100), timeout=1)
    auth = Auth(Tokens(SECRET), public_memberships=public)
    app = web_app(
        State(3, fans=[USER]), writes, auth=auth, internal_secret=internal, dev_tokens=True
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    http = await serve()
    yield http
    await http.close()


@pytest.fixture
def log_lines() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """What the likestream loggers write, as JSON lines and as plain lines."""
    outs = io.StringIO(), io.StringIO()
    handlers = []
    for out, formatter in zip(outs, (JsonFormatter(), PlainFormatter()), strict=True):
        handler = logging.StreamHandler(out)
        handler.addFilter(RequestIdFilter())
        handler.setFormatter(formatter)
        handlers.append(handler)
    logger = logging.getLogger("likestream")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    for handler in handlers:
        logger.addHandler(handler)
    yield outs
    for handler in handlers:
        logger.removeHandler(handler)
    logger.setLevel(level)


PATH = f"/items/post:1/likes/{USER}"


async def test_a_membership_needs_a_token(client: TestClient) -> None:
    resp = await client.get(PATH)
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="likestream"'
    resp = await client.get(PATH, headers=bearer(USER, secret=SECRET + "x"))
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "invalid_token"
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


async def test_a_membership_is_read_only_with_its_own_users_token(client: TestClient) -> None:
    resp = await client.get(PATH, headers=bearer(USER))
    assert resp.status == 200
    assert await resp.json() == {"item_id": "post:1", "user_id": USER, "liked": True}
    resp = await client.get(PATH, headers=bearer("mallory"))
    assert resp.status == 403
    assert (await resp.json())["error"] == {
        "code": "forbidden",
        "message": "a token may read only its own user's memberships",
    }
    assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]


async def test_public_memberships_need_no_token() -> None:
    http = await serve(public=True)
    try:
        resp = await http.get(PATH)
        assert (resp.status, (await resp.json())["liked"]) == (200, True)
        resp = await http.get("/items/post:1/likes/bob")
        assert (resp.status, (await resp.json())["liked"]) == (200, False)
    finally:
        await http.close()


async def test_a_forwarded_read_is_answered_without_a_token(client: TestClient) -> None:
    # The peer that forwarded it checked its caller's token; the proof says it is a peer.
    resp = await client.get(PATH, headers={FORWARDED: forwarding_proof(INTERNAL)})
    assert (resp.status, (await resp.json())["liked"]) == (200, True)
    for made_up in ("1", forwarding_proof(SECRET), forwarding_proof(INTERNAL + "not")):
        resp = await client.get(PATH, headers={FORWARDED: made_up})
        assert resp.status == 401


async def test_counts_stay_public(client: TestClient) -> None:
    resp = await client.get("/items/post:1/likes")
    assert resp.status == 200
    resp = await client.get("/likes", params={"items": "post:1,post:2"})
    assert resp.status == 200


def test_user_tags_are_keyed_stable_and_short() -> None:
    tags = UserTags(INTERNAL)
    tag = tags(USER)
    assert re.fullmatch("u:[0-9a-f]{12}", tag)
    assert tag == UserTags(INTERNAL)(USER)  # every process sharing the secret agrees
    assert tag != tags("bob")
    assert tag != UserTags("another-internal-secret-" + "x" * 20)(USER)


async def test_the_access_log_shows_tags_never_user_ids(
    client: TestClient, log_lines: tuple[io.StringIO, io.StringIO]
) -> None:
    tag = UserTags(INTERNAL)(USER)
    assert (await client.get(PATH, headers=bearer(USER))).status == 200
    assert (await client.get(PATH, headers=bearer("mallory"))).status == 403
    assert (await client.get(PATH)).status == 401
    assert (await client.post("/items/post:1/like", headers=bearer(USER))).status == 202
    assert (await client.post("/dev/token", json={"user_id": USER})).status == 200
    json_out, plain_out = (out.getvalue() for out in log_lines)
    assert USER not in json_out
    assert USER not in plain_out
    assert "alice" not in json_out + plain_out
    access = [json.loads(line) for line in json_out.splitlines()]
    assert [(d["method"], d["path"], d["status"], d.get("user")) for d in access] == [
        ("GET", f"/items/post:1/likes/{tag}", 200, tag),
        ("GET", f"/items/post:1/likes/{tag}", 403, UserTags(INTERNAL)("mallory")),
        ("GET", f"/items/post:1/likes/{tag}", 401, None),
        ("POST", "/items/post:1/like", 202, tag),
        ("POST", "/dev/token", 200, None),
    ]
    plain = plain_out.splitlines()
    assert f"GET /items/post:1/likes/{tag} 200" in plain[0]
    assert f"ms {tag} " in plain[0]
    assert "POST /items/post:1/like 202" in plain[3]
    assert f"ms {tag} " in plain[3]


async def test_a_refused_user_segment_is_hashed_too(
    client: TestClient, log_lines: tuple[io.StringIO, io.StringIO]
) -> None:
    resp = await client.get("/items/post:1/likes/not%20valid%40example.com")
    assert resp.status == 400
    json_out, plain_out = (out.getvalue() for out in log_lines)
    assert "example.com" not in json_out + plain_out
    (line,) = [json.loads(x) for x in json_out.splitlines()]
    assert line["path"] == "/items/post:1/likes/" + UserTags(INTERNAL)("not valid@example.com")


async def test_dev_tokens_live_no_longer_than_the_policy_allows() -> None:
    policy = TokenPolicy(issuer="https://dev.example", audience="demo", max_lifetime=300)
    writes = writes_of(Publisher(), RateLimiter(100, 100), timeout=1)
    app = web_app(
        State(3, fans=[USER]), writes, auth=Auth(Tokens(SECRET, policy=policy)), dev_tokens=True
    )
    async with TestClient(TestServer(app)) as http:
        resp = await http.post("/dev/token", json={"user_id": USER})
        body = await resp.json()
        assert body["expires_in"] == 300
        resp = await http.get(PATH, headers={"Authorization": f"Bearer {body['token']}"})
        assert resp.status == 200


def test_dev_tokens_need_a_key_to_sign_with() -> None:
    writes = writes_of(Publisher(), RateLimiter(100, 100), timeout=1)
    with pytest.raises(ValueError, match="HS256 secret"):
        web_app(State(3, fans=[USER]), writes, auth=Auth(Tokens()), dev_tokens=True)
