"""The API against its own document: schemathesis reads ``/openapi.json`` from a live worker
and a live gateway (real broker, real processes) and sends what the document allows and
what it does not. Every response must be no 5xx, of a documented status, content type,
headers and body; an operation that needs a token must refuse a request without one, or
with a made-up one.

Bounded: 25 examples per operation and mode, derandomized (the same cases every run).
Also here, on the same processes: the largest batch the document allows reaches the
handler, and ``/docs`` renders the served document in Chromium.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import schemathesis
from conftest import Cluster, Worker
from hypothesis import HealthCheck, Phase, given, settings
from playwright.async_api import Browser, expect
from schemathesis import GenerationMode
from yarl import URL

from likestream.domain._schema import is_valid_id
from likestream.domain._tokens import mint_token

pytestmark = pytest.mark.integration

# Writes are rate limited per user: high enough that the examples are not all 429 (429
# is still in the document, and the unit tests check it).
LIMITS = {"burst": "100000", "rate": "100000"}
TESTER = "spec-tester"
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "ignored_auth",
]
CONFIG: dict[str, Any] = {
    "checks": {"enabled": False} | {name: {"enabled": True} for name in CHECKS},
    "request-timeout": 10,
    "max-stream-events": 1,  # GET /items/{item_id}/events: the first count, then hang up
    # ... or, when Last-Event-ID says the client has it already, no event: stop waiting.
    "operations": [{"include-operation-id": "events", "request-timeout": 1}],
}

EXAMPLES = 25  # per operation and mode (valid and invalid requests)
SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: report the case as found
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
async def api_worker(cluster: Cluster) -> AsyncIterator[Worker]:
    instance = cluster.worker("w1", **LIMITS)
    async with instance.running():
        await _settled(instance, cluster)
        yield instance


@pytest.fixture(scope="module")
async def api_gateway(cluster: Cluster, api_worker: Worker) -> AsyncIterator[Worker]:
    instance = cluster.worker("g1", command="gateway", **LIMITS)
    async with instance.running():
        await _settled(instance, cluster)
        yield instance


async def _settled(process: Worker, cluster: Cluster) -> None:
    """Until the process knows the owners: a write (its rate limit is the owner's) and a
    membership read answer without a 503 (documented, but a 5xx all the same)."""
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            async with http.post(
                f"{process.url}/items/warm-up/like", headers=cluster.bearer(TESTER)
            ) as write:
                pass
            async with http.get(
                f"{process.url}/items/warm-up/likes/{TESTER}", headers=cluster.bearer(TESTER)
            ) as read:
                pass
            if write.status == 202 and read.status == 200:
                return
            await asyncio.sleep(0.2)
    pytest.fail(f"{process.command} never took a write: {write.status}, {read.status}")


def _schema(process: Worker) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(CONFIG)
    return schemathesis.openapi.from_url(f"{process.url}/openapi.json", config=config)


def _token(cluster: Cluster, case: schemathesis.Case) -> dict[str, str]:
    """A valid token for every case: of the path's user when there is one (memberships
    are private), so that reads of it succeed and the probes without it must fail."""
    user = (case.path_parameters or {}).get("user_id")
    token = mint_token(cluster.secret, user if is_valid_id(user) else TESTER, 600)
    return {"Authorization": f"Bearer {token}"}


def _keeps_its_document(process: Worker, cluster: Cluster, subtests: pytest.Subtests) -> None:
    schema = _schema(process)
    schema.validate()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]
    for operation in operations:
        modes = [GenerationMode.POSITIVE]
        if operation.body or any(True for _ in operation.iter_parameters()):
            modes.append(GenerationMode.NEGATIVE)  # something to get wrong
        for mode in modes:
            with subtests.test(operation=operation.label, mode=mode.value):

                @SETTINGS
                @given(case=operation.as_strategy(mode))
                def check(case: schemathesis.Case) -> None:
                    case.call_and_validate(headers=_token(cluster, case))

                check()


# Plain functions: schemathesis's requests block, and the processes are others.
def test_worker_keeps_its_document(
    api_worker: Worker, cluster: Cluster, subtests: pytest.Subtests
) -> None:
    _keeps_its_document(api_worker, cluster, subtests)


def test_gateway_keeps_its_document(
    api_gateway: Worker, cluster: Cluster, subtests: pytest.Subtests
) -> None:
    _keeps_its_document(api_gateway, cluster, subtests)


async def test_the_largest_batch_fits_in_a_request_line(
    api_worker: Worker, api_gateway: Worker, http: aiohttp.ClientSession
) -> None:
    """100 ids of 128 characters, nearly every byte percent-encoded: what the document allows
    must reach the handler (aiohttp's default limit is 8190 bytes, answered in plain
    text), on a worker and on a gateway."""
    ids = [f"{n:03d}:" + "@" * 124 for n in range(100)]
    query = "%2C".join(quote(i, safe="") for i in ids)
    for process in (api_worker, api_gateway):
        url = URL(f"{process.url}/likes?items={query}", encoded=True)
        assert len(str(url)) > 30_000  # aiohttp's default: 8190
        async with http.get(url) as resp:
            assert resp.status == 200, await resp.text()
            assert list((await resp.json())["likes"]) == ids


async def test_docs_page_renders_the_served_document(
    api_gateway: Worker, http: aiohttp.ClientSession, browser: Browser
) -> None:
    """``GET /docs`` in Chromium: every operation of the gateway's document shown, and
    nothing refused by the page's Content-Security-Policy or thrown by its script."""
    async with http.get(f"{api_gateway.url}/openapi.json") as resp:
        doc = await resp.json()
    expected = sum(len(ops) for ops in doc["paths"].values())
    problems: list[str] = []
    page = await browser.new_page()
    try:
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on(
            "console",
            lambda msg: problems.append(msg.text) if "Security Policy" in msg.text else None,
        )
        await page.goto(f"{api_gateway.url}/docs")
        await expect(page.locator("section.op")).to_have_count(expected, timeout=30_000)
        await expect(page.locator("#websocket")).to_contain_text("subscribe_trending")
    finally:
        await page.close()
    assert problems == []
