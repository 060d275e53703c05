"""The OpenAPI document against the app: every public route in it and nothing else, a valid
OpenAPI 3.1 document, served as each app serves; and the frames the WebSocket and SSE
really send (the hub's encoding, ``web/_wire.py``) valid by its schemas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import schemathesis
from aiohttp import hdrs, web
from aiohttp.test_utils import TestClient, TestServer
from fakes import web_app, writes_of
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from schemathesis.core.result import Err

from likestream.domain._top import PartitionTop
from likestream.domain._window_spec import parse_windows
from likestream.tables import CountRow
from likestream.web import (
    HUB,
    Auth,
    NoTables,
    RateLimiter,
    Replica,
    TrendingSettings,
)
from likestream.web._openapi import DOCUMENT, INTERNAL_ROUTES, served_document
from likestream.web._trending import TRENDING
from likestream.web._wire import likes_payload

from .test_push import AUTH, Publisher, State, frame, push_settings, sse_events

WINDOWS = parse_windows("1m:10s,1h:5m")


def full_app(**options: Any) -> web.Application:
    """A worker's app with every optional part: writes, dev tokens, trending, pushes."""
    writes = writes_of(Publisher(), RateLimiter(100, 100), timeout=1)
    return web_app(
        State(),
        writes,
        push=push_settings(),
        dev_tokens=True,
        trending=TrendingSettings(WINDOWS),
        auth=AUTH,
        **options,
    )


def gateway_app() -> web.Application:
    """As ``likestream gateway`` builds it: no tables, no dev tokens."""
    replica = Replica(1)
    writes = writes_of(Publisher(), RateLimiter(100, 100), timeout=1)
    return web_app(
        NoTables(replica),
        writes,
        push=push_settings(),
        trending=TrendingSettings(WINDOWS),
        replica=replica,
        auth=AUTH,
    )


def routes_of(app: web.Application) -> set[tuple[str, str]]:
    return {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method != hdrs.METH_HEAD  # aiohttp's, for each GET
    }


def operations_of(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}


# -- the routes against the document ------------------------------------------------------


def test_every_public_route_is_documented_and_nothing_else() -> None:
    app = full_app()
    public = routes_of(app) - INTERNAL_ROUTES
    assert routes_of(app) >= INTERNAL_ROUTES, "an internal route left: update INTERNAL_ROUTES"
    assert public - operations_of(DOCUMENT) == set(), "routes missing from web/_openapi.py"
    assert operations_of(DOCUMENT) - public == set(), "documented routes the app lacks"


@pytest.mark.parametrize("make", [full_app, gateway_app], ids=["worker", "gateway"])
def test_each_app_serves_exactly_its_own_routes(make: Any) -> None:
    app = make()
    assert operations_of(served_document(app)) == routes_of(app) - INTERNAL_ROUTES


def test_without_dev_tokens_the_document_has_no_dev_token() -> None:
    assert ("POST", "/dev/token") not in operations_of(served_document(gateway_app()))


def test_the_served_windows_are_the_configured_ones() -> None:
    doc = served_document(full_app())
    [window, _] = doc["paths"]["/trending"]["get"]["parameters"]
    assert window["schema"]["enum"] == ["1m", "1h"]
    assert window["schema"]["default"] == "1h"


def test_public_memberships_need_no_token_in_the_document() -> None:
    private = served_document(full_app())["paths"]["/items/{item_id}/likes/{user_id}"]["get"]
    assert private["security"] == [{"bearerAuth": []}]
    assert {"401", "403"} <= set(private["responses"])
    app = web_app(State(), auth=Auth(AUTH.tokens, public_memberships=True))
    public = served_document(app)["paths"]["/items/{item_id}/likes/{user_id}"]["get"]
    assert public["security"] == []
    assert {"401", "403"} & set(public["responses"]) == set()


def test_the_document_is_valid_openapi_3_1() -> None:
    schema = schemathesis.openapi.from_dict(DOCUMENT)
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    problems = [str(r.err()) for r in schema.get_all_operations() if isinstance(r, Err)]
    assert problems == []
    for component in DOCUMENT["components"]["schemas"].values():
        Draft202012Validator.check_schema(component)


def test_write_and_membership_operations_need_a_token() -> None:
    secured = {
        (m.upper(), path)
        for path, ops in DOCUMENT["paths"].items()
        for m, op in ops.items()
        if op.get("security")
    }
    assert secured == {
        ("POST", "/items/{item_id}/like"),
        ("DELETE", "/items/{item_id}/like"),
        ("GET", "/items/{item_id}/likes/{user_id}"),
    }


def test_path_ids_are_the_ids_but_dot_segments() -> None:
    pattern = DOCUMENT["paths"]["/items/{item_id}/likes"]["get"]["parameters"][0]["schema"]
    valid = Draft202012Validator(pattern)
    for ok in ["a", "post:9", "...", ".a", "..a", "u@x.example", "x" * 128, ".." + "y" * 126]:
        assert valid.is_valid(ok), ok
    for bad in [".", "..", "", "x" * 129, "a/b", "a b", "é"]:
        assert not valid.is_valid(bad), bad


# -- the frames -------------------------------------------------------------------------


def validator(name: str) -> Draft202012Validator:
    """The component ``name``, with its references into the document resolved."""
    registry: Registry[Any] = Registry().with_resource(
        "urn:likestream:openapi",
        Resource.from_contents(DOCUMENT, default_specification=DRAFT202012),
    )
    schema = {"$ref": f"urn:likestream:openapi#/components/schemas/{name}"}
    return Draft202012Validator(schema, registry=registry)


def assert_valid(name: str, instance: object) -> None:
    errors = [e.message for e in validator(name).iter_errors(instance)]
    assert errors == [], f"{instance} is not a {name}: {errors}"


def test_the_wire_encodings_are_valid_frames() -> None:
    assert_valid("WsServerFrame", orjson.loads(likes_payload("post:9", 12, ws=True)))
    assert_valid("SseLikes", orjson.loads(likes_payload("post:9", 12, ws=False)))
    # ... and the schemas can fail: a count that is not one, a frame of no known type.
    assert not validator("WsServerFrame").is_valid({"type": "likes", "item_id": "a", "likes": -1})
    assert not validator("WsServerFrame").is_valid({"type": "nope"})


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(full_app())) as http:
        yield http


CLIENT_FRAMES_OK = [
    {"op": "subscribe", "items": ["post:9", "post:10"]},
    {"op": "unsubscribe", "items": ["post:10"]},
    {"op": "subscribe_trending", "window": "1h", "limit": 3},
    {"op": "unsubscribe_trending", "window": "1h"},
]
# Each refused, as its code says, by the server and by the schema alike.
CLIENT_FRAMES_BAD: list[tuple[object, str]] = [
    ({"op": "subscribe", "items": []}, "invalid_items"),
    ({"op": "subscribe", "items": ["no spaces"]}, "invalid_item_id"),
    ({"op": "dance", "items": ["a"]}, "invalid_op"),
    ({"op": "subscribe", "items": [f"i{n}" for n in range(6)]}, "too_many_items"),
    ({"op": "unsubscribe", "items": ["never"]}, "not_subscribed"),
    ({"op": "subscribe_trending", "window": "1y"}, "invalid_window"),
    ({"op": "subscribe_trending", "window": "1h", "limit": 0}, "invalid_limit"),
    ({"op": "unsubscribe_trending", "window": "1m"}, "not_subscribed"),
]


# Well-formed, refused for what the connection or the process has (windows are settings).
REFUSED_BY_STATE = ("too_many_items", "not_subscribed", "invalid_window")


async def test_websocket_frames_match_their_schemas(client: TestClient) -> None:
    client.server.app[TRENDING].update(PartitionTop("1h", 0, 5, 0, (("post:9", 4),)))
    async with client.ws_connect("/ws") as ws:
        for sent in CLIENT_FRAMES_OK:
            assert_valid("WsClientFrame", sent)
            await ws.send_str(orjson.dumps(sent).decode())
        received = [await frame(ws) for _ in range(3)]  # two counts, the trending top
        client.server.app[HUB].update("post:9", CountRow(13, 41))
        received.append(await frame(ws))
        assert [f["type"] for f in received] == ["likes", "likes", "trending", "likes"]
        for bad, code in CLIENT_FRAMES_BAD:
            if code not in REFUSED_BY_STATE:
                assert not validator("WsClientFrame").is_valid(bad), bad
            await ws.send_str(orjson.dumps(bad).decode())
            error = await frame(ws)
            assert error["code"] == code, error
            received.append(error)
        await ws.send_str("{not json")
        received.append(await frame(ws))
        await ws.send_bytes(b"{}")
        received.append(await frame(ws))
    for server_frame in received:
        assert_valid("WsServerFrame", server_frame)
    assert received[-2]["code"] == "invalid_json"
    assert received[-1]["code"] == "invalid_frame"


async def test_sse_events_match_their_schema(client: TestClient) -> None:
    async with client.get("/items/post:9/events") as resp:
        assert resp.content_type == "text/event-stream"
        [first] = await sse_events(resp, 1)
        client.server.app[HUB].update("post:9", CountRow(13, 41))
        [second] = await sse_events(resp, 1)
    for event in (first, second):
        assert_valid("SseEvent", event)
        assert_valid("SseLikes", orjson.loads(event["data"]))
    assert orjson.loads(second["data"]) == {"item_id": "post:9", "likes": 13}


# -- serving --------------------------------------------------------------------------


async def test_openapi_json_is_the_served_document(client: TestClient) -> None:
    async with client.get("/openapi.json") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert await resp.json() == orjson.loads(orjson.dumps(served_document(full_app())))


async def test_docs_page_loads_only_its_own_files(client: TestClient) -> None:
    async with client.get("/docs") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        page = await resp.text()
    for asset in ("/static/docs.js", "/static/docs.css"):
        assert asset in page
        async with client.get(asset) as resp:
            assert resp.status == 200, asset
    assert "://" not in page, "nothing from another origin"
