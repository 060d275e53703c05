"""Conventions of the web layer on a real aiohttp server: JSON replies encoded by orjson,
``/metrics`` through prometheus-client's handler (OpenMetrics, gzip, multiprocess), the
build info, and live connections timed apart from requests."""

from __future__ import annotations

import asyncio
import gzip
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from fakes import Reads, web_app
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from likestream.domain._tokens import Tokens
from likestream.tables import NO_COUNT, CountRow
from likestream.web import Auth, PushSettings
from likestream.web._json import json_reply
from likestream.web._views import metrics_registry

AUTH = Auth(Tokens("conventions-unit-secret-" + "0123456789abcdef" * 2))
LIMIT = 20.0  # seconds; only reached when something is broken
JSON = "application/json; charset=utf-8"


class State(Reads):
    def likes(self, item_id: str) -> int:
        return 1

    def stamped(self, item_id: str) -> CountRow:
        return CountRow(1, 1) if item_id == "post:9" else NO_COUNT

    def liked(self, item_id: str, user_id: str) -> bool:
        return False

    def ready(self) -> bool:
        return True


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    # A short heartbeat: an SSE handler learns that its client went away at its next write.
    push = PushSettings(interval=0.01, max_items=5, backlog=64 * 1024, heartbeat=0.1)
    async with TestClient(TestServer(web_app(State(), push=push, auth=AUTH))) as http:
        yield http


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _requests(route: str) -> float:
    """Requests of ``route`` counted, whatever their status."""
    return sum(
        s.value
        for family in REGISTRY.collect()
        if family.name == "likestream_http_requests"
        for s in family.samples
        if s.name.endswith("_total") and s.labels["route"] == route
    )


async def _until(check: Any) -> None:
    """Await ``check()`` becoming true: a server handler ends after the client has gone."""
    async with asyncio.timeout(LIMIT):
        while True:
            if check():
                return
            await asyncio.sleep(0.01)


# -- JSON replies ------------------------------------------------------------------

SAMPLES: list[Any] = [
    {"item_id": "post:9", "likes": 12},
    {"item_id": "post:9", "user_id": "alice", "liked": True},
    {"likes": {"a": 12, "b": 0, "c": 3}},
    {"window": "1h", "items": [{"item_id": "post:9", "likes": 12}]},
    {"wait": 0.25},
    {"ready": False},
    {"error": {"code": "invalid_item_id", "message": "invalid item id 'é \"x\" \\\\ ✓'"}},
    {"status": "ok", "owners": {}, "sampled_seconds_ago": None},
]


@pytest.mark.parametrize("data", SAMPLES)
def test_replies_are_orjson_and_the_same_json_as_before(data: Any) -> None:
    reply = json_reply(data, status=202, headers={"Cache-Control": "no-store"})
    before = web.json_response(data, status=202, headers={"Cache-Control": "no-store"})
    assert isinstance(reply.body, bytes)
    assert reply.body == orjson.dumps(data)
    # The standard module's bytes but for its spacing and its \u escapes.
    assert reply.body == json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    assert json.loads(reply.body) == json.loads(before.text or "")
    assert reply.status == before.status
    assert reply.headers["Content-Type"] == before.headers["Content-Type"] == JSON
    assert reply.headers["Cache-Control"] == "no-store"


async def test_api_answers_and_errors_are_orjson_bytes(client: TestClient) -> None:
    resp = await client.get("/items/post:9/likes")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == JSON
    assert await resp.read() == b'{"item_id":"post:9","likes":1}'
    resp = await client.get("/items/bad%20id/likes")
    assert resp.status == 400
    assert await resp.read() == orjson.dumps(
        {
            "error": {
                "code": "invalid_item_id",
                "message": "item_id must be 1-128 characters of [A-Za-z0-9._:@-]",
            }
        }
    )
    resp = await client.get("/nowhere")
    assert resp.status == 404
    assert resp.headers["Content-Type"] == JSON
    assert await resp.read() == b'{"error":{"code":"not_found","message":"Not Found"}}'


# -- /metrics ----------------------------------------------------------------------


def _build_labels() -> dict[str, str]:
    return {
        "version": importlib.metadata.version("likestream"),
        "python": platform.python_version(),
        "faust": importlib.metadata.version("faust-streaming"),
        "aiokafka": importlib.metadata.version("aiokafka"),
    }


def test_build_info_names_the_versions() -> None:
    assert REGISTRY.get_sample_value("likestream_build_info", _build_labels()) == 1


async def test_metrics_text_format_by_default(client: TestClient) -> None:
    resp = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "Content-Encoding" not in resp.headers
    families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
    [info] = families["likestream_build_info"].samples
    assert (info.labels, info.value) == (_build_labels(), 1)


async def test_metrics_openmetrics_when_asked(client: TestClient) -> None:
    accept = "application/openmetrics-text; version=1.0.0, text/plain; version=0.0.4; q=0.5"
    resp = await client.get("/metrics", headers={"Accept": accept})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    text = await resp.text()
    assert text.endswith("# EOF\n")
    names = {f.name for f in openmetrics_families(text)}
    assert {"likestream_build_info", "likestream_http_requests"} <= names


async def test_metrics_gzip_when_accepted(client: TestClient) -> None:
    async with aiohttp.ClientSession(auto_decompress=False) as raw:
        url = client.make_url("/metrics")
        async with raw.get(url, headers={"Accept-Encoding": "gzip"}) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Encoding"] == "gzip"
            body = gzip.decompress(await resp.read()).decode()
        async with raw.get(url, headers={"Accept-Encoding": "identity"}) as resp:
            assert "Content-Encoding" not in resp.headers
            plain = await resp.text()
    assert "likestream_build_info{" in body
    assert "likestream_build_info{" in plain


GATEWAY_CHILD = "from likestream.runtime import _metrics; print('up', flush=True); input()"


def test_build_info_adds_up_over_gateway_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", GATEWAY_CHILD],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline() == "up\n"
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        scraped = generate_latest(metrics_registry()).decode()
    finally:
        for child in children:
            child.communicate("\n")
    [info] = [
        s
        for f in text_string_to_metric_families(scraped)
        if f.name == "likestream_build_info"
        for s in f.samples
    ]
    assert (info.labels, info.value) == (_build_labels(), 1)  # one series, no pid label


# -- live connections: not requests ------------------------------------------------


async def test_a_websocket_is_timed_as_a_connection_not_a_request(client: TestClient) -> None:
    requests = _requests("/ws")
    timed = _sample("likestream_http_request_duration_seconds_count", route="/ws")
    lived = _sample("likestream_push_connection_seconds_count", kind="ws")
    async with client.ws_connect("/ws") as ws:
        await ws.send_str('{"op": "subscribe", "items": ["post:9"]}')
        assert (await ws.receive_json(timeout=LIMIT))["likes"] == 1
    await _until(lambda: _requests("/ws") > requests)
    assert _sample("likestream_push_connection_seconds_count", kind="ws") == lived + 1
    assert _sample("likestream_push_connection_seconds_sum", kind="ws") > 0
    assert _sample("likestream_http_request_duration_seconds_count", route="/ws") == timed


async def test_sse_is_timed_as_a_connection_not_a_request(client: TestClient) -> None:
    route = "/items/{item_id}/events"
    requests = _requests(route)
    timed = _sample("likestream_http_request_duration_seconds_count", route=route)
    lived = _sample("likestream_push_connection_seconds_count", kind="sse")
    async with client.get("/items/post:9/events") as resp:
        assert resp.status == 200
        assert b"retry:" in await resp.content.readline()
        resp.close()  # the connection, not only this response
    # The test server cancels the handler of a client gone (a 500 in the counter); a
    # worker's finds out at its next keep-alive: either way the middleware sees it end.
    await _until(lambda: _requests(route) > requests)
    assert _sample("likestream_push_connection_seconds_count", kind="sse") == lived + 1
    assert _sample("likestream_http_request_duration_seconds_count", route=route) == timed


async def test_ordinary_requests_are_still_timed(client: TestClient) -> None:
    route = "/items/{item_id}/likes"
    timed = _sample("likestream_http_request_duration_seconds_count", route=route)
    resp = await client.get("/items/post:9/likes")
    assert resp.status == 200
    assert _sample("likestream_http_request_duration_seconds_count", route=route) == timed + 1
