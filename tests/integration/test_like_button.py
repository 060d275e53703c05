"""``<like-button>`` embedded in a page of another origin, in a real headless Chromium.

The host page is served by a small HTTP server of the test on ``127.0.0.1``; it loads
``like-button.js`` from the worker at ``localhost`` (another origin: the module, the
writes, the membership reads and the WebSocket all cross origins, allowed by
``LIKESTREAM_CORS_ORIGINS``) and hands the buttons a token as a site would. The worker
allows each user one write per 100 s (``LIKESTREAM_BURST=1``), so a second write is
refused with a real 429.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import ARTIFACTS, Cluster, Worker, free_port
from playwright.async_api import Browser, Locator, Page, Request, WebSocket, expect

from likestream.client import LikeClient
from likestream.domain._tokens import mint_token

pytestmark = pytest.mark.integration

WAIT_MS = 60_000  # generous: the machine is shared
ACCENT = "rgb(0, 90, 200)"
# The host page's script: how a site hands the buttons its user's token, and a record of
# what the buttons tell it, for the tests to read.
HOST_SCRIPT = """
import { LikeButton } from "%(module)s";
window.LikeButton = LikeButton;
window.likeErrors = [];
document.addEventListener("like-error", (event) => window.likeErrors.push(event.detail));
"""
HOST_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>A site with like buttons</title>
  <script type="module" src="%(module)s"></script>
  <script type="module">%(script)s</script>
  <style>
    like-button { --like-button-color: %(accent)s; }
    like-button::part(count) { font-weight: 700; }
  </style>
</head>
<body>
  <h1>Posts</h1>
  %(buttons)s
</body>
</html>
"""


@pytest.fixture(scope="module")
def host_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
async def worker(cluster: Cluster, host_port: int) -> AsyncIterator[Worker]:
    instance = cluster.worker(
        "w1", burst="1", rate="0.01", cors_origins=f"http://127.0.0.1:{host_port}"
    )
    async with instance.running():
        yield instance


@pytest.fixture(scope="module")
async def host(worker: Worker, host_port: int) -> AsyncIterator[str]:
    """The site: ``/?items=a,b`` is a page with a ``<like-button>`` per item."""
    module = f"{worker.url}/static/like-button.js"

    async def page(request: web.Request) -> web.Response:
        items = request.query.get("items", "").split(",")
        buttons = "\n  ".join(
            f'<p>{html.escape(i)} <like-button item="{html.escape(i)}"></like-button></p>'
            for i in items
        )
        body = HOST_PAGE % {
            "module": module,
            "script": HOST_SCRIPT % {"module": module},
            "accent": ACCENT,
            "buttons": buttons,
        }
        return web.Response(text=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", host_port).start()
    try:
        yield f"http://127.0.0.1:{host_port}"
    finally:
        await runner.cleanup()


class Site:
    """One visitor's page of the host site."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.sockets: list[WebSocket] = []
        self.sent: list[dict[str, Any]] = []  # the frames sent on them
        self.writes: list[str] = []  # the method of every write the page sent
        page.on("websocket", self._socket)
        page.on("request", self._request)

    def _socket(self, ws: WebSocket) -> None:
        self.sockets.append(ws)
        ws.on("framesent", lambda payload: self.sent.append(json.loads(payload)))

    def _request(self, request: Request) -> None:
        if request.url.endswith("/like"):
            self.writes.append(request.method)

    def button(self, item: str) -> Locator:
        return self.page.locator(f'like-button[item="{item}"]').first.locator("button")

    def count(self, item: str) -> Locator:
        return self.page.locator(f'like-button[item="{item}"]').first.locator(".count")

    async def sign_in(self, cluster: Cluster, user: str) -> None:
        token = mint_token(cluster.secret, user, 3600)
        await self.page.evaluate("(token) => LikeButton.setToken(token)", token)

    async def errors(self, count: int) -> list[dict[str, Any]]:
        await self.page.wait_for_function(f"window.likeErrors.length >= {count}")
        errors: list[dict[str, Any]] = await self.page.evaluate("window.likeErrors")
        return errors

    async def feed_state(self, state: str) -> None:
        await self.page.wait_for_function(f"LikeButton.feed().state === {state!r}", timeout=WAIT_MS)


async def visit(browser: Browser, host: str, items: list[str]) -> Site:
    context = await browser.new_context(viewport={"width": 640, "height": 400})
    site = Site(await context.new_page())
    await site.page.goto(f"{host}/?items={','.join(items)}")
    await site.page.wait_for_function("window.LikeButton !== undefined")
    return site


async def like_over_http(worker: Worker, cluster: Cluster, user: str, item: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{worker.url}/items/{item}/like", headers=cluster.bearer(user)) as resp,
    ):
        assert resp.status == 202, await resp.text()


async def test_a_click_in_one_page_shows_in_the_other_over_one_socket_each(
    browser: Browser, host: str, cluster: Cluster
) -> None:
    alice = await visit(browser, host, ["btn:1", "btn:2", "btn:1"])
    bob = await visit(browser, host, ["btn:1"])
    await alice.sign_in(cluster, "alice")
    await bob.sign_in(cluster, "bob")
    for site in (alice, bob):
        await expect(site.count("btn:1")).to_have_text("0", timeout=WAIT_MS)
    await expect(alice.count("btn:2")).to_have_text("0", timeout=WAIT_MS)

    await alice.button("btn:1").click()
    # Both of alice's btn:1 buttons show it at once: one state per item.
    for nth in range(2):
        shown = alice.page.locator("like-button").nth(nth * 2).locator("button")
        await expect(shown).to_have_attribute("aria-pressed", "true")
    await expect(bob.count("btn:1")).to_have_text("1", timeout=WAIT_MS)  # no reload
    await expect(bob.button("btn:1")).to_have_attribute("aria-pressed", "false")
    await expect(alice.count("btn:1")).to_have_text("1")
    ARTIFACTS.mkdir(exist_ok=True)
    await alice.page.screenshot(path=str(ARTIFACTS / "like-button-host-page.png"))

    # Three buttons, two items: one WebSocket, one subscribe frame of both items.
    assert len(alice.sockets) == 1
    assert alice.sockets[0].url.startswith("ws://localhost:")
    assert [frame["op"] for frame in alice.sent] == ["subscribe"]
    assert sorted(alice.sent[0]["items"]) == ["btn:1", "btn:2"]
    # An item is unsubscribed when its last button goes, not before.
    async with alice.sockets[0].expect_event("framesent") as sent:
        await alice.page.evaluate(
            """() => ['like-button[item="btn:2"]', 'like-button[item="btn:1"]']
                 .forEach((selector) => document.querySelector(selector).remove())"""
        )
    assert json.loads(await sent.value) == {"op": "unsubscribe", "items": ["btn:2"]}
    assert alice.writes == ["POST"]


async def test_a_refused_click_is_rolled_back_and_told_to_the_host(
    browser: Browser, host: str, cluster: Cluster
) -> None:
    site = await visit(browser, host, ["btn:busy"])
    await site.sign_in(cluster, "rita")
    button = site.button("btn:busy")
    await expect(site.count("btn:busy")).to_have_text("0", timeout=WAIT_MS)
    await expect(button).to_have_attribute("data-pending", "false", timeout=WAIT_MS)
    # Every value aria-pressed takes, to see the optimistic change that is rolled back.
    await button.evaluate(
        """(button) => {
          window.pressed = [button.getAttribute("aria-pressed")];
          new MutationObserver(() => window.pressed.push(button.getAttribute("aria-pressed")))
            .observe(button, { attributeFilter: ["aria-pressed"] });
        }"""
    )

    # Hammering: one write in flight at a time, so three clicks send one.
    await button.click(click_count=3, delay=0)
    await expect(button).to_have_attribute("aria-pressed", "true")
    await expect(button).to_have_attribute("data-pending", "false", timeout=WAIT_MS)
    await expect(site.count("btn:busy")).to_have_text("1", timeout=WAIT_MS)
    assert site.writes == ["POST"]

    # The user's one write per 100 s is spent: the unlike is refused with a real 429.
    await button.click()
    [error] = await site.errors(1)
    assert error["status"] == 429
    assert error["code"] == "rate_limited"
    assert error["item"] == "btn:busy"
    assert error["liked"] is False
    assert error["retryAfter"] >= 1
    await expect(button).to_have_attribute("aria-pressed", "true")
    await expect(button).to_have_attribute("data-pending", "false", timeout=WAIT_MS)
    await expect(site.count("btn:busy")).to_have_text("1")
    assert await site.page.evaluate("window.pressed") == ["false", "true", "false", "true"]
    assert site.writes == ["POST", "DELETE"]

    # Within Retry-After the button does not ask again: refused here, nothing shown.
    await button.click()
    errors = await site.errors(2)
    assert (errors[1]["status"], errors[1]["code"]) == (429, "rate_limited")
    await expect(button).to_have_attribute("aria-pressed", "true")
    assert site.writes == ["POST", "DELETE"]
    assert await site.page.evaluate("window.pressed") == ["false", "true", "false", "true"]


async def test_without_a_token_a_click_changes_nothing(browser: Browser, host: str) -> None:
    site = await visit(browser, host, ["btn:anon"])
    await expect(site.count("btn:anon")).to_have_text("0", timeout=WAIT_MS)
    await site.button("btn:anon").click()
    [error] = await site.errors(1)
    assert (error["status"], error["code"]) == (401, "unauthorized")
    await expect(site.button("btn:anon")).to_have_attribute("aria-pressed", "false")
    await expect(site.count("btn:anon")).to_have_text("0")
    assert site.writes == []


async def test_the_button_reconnects_after_the_server_restarts(
    browser: Browser, host: str, worker: Worker, cluster: Cluster
) -> None:
    site = await visit(browser, host, ["btn:r"])
    await expect(site.count("btn:r")).to_have_text("0", timeout=WAIT_MS)
    await site.feed_state("live")
    worker.stop()
    await site.feed_state("reconnecting")
    worker.start()
    await worker.wait_ready()
    # A like made after the restart reaches the same page: it subscribed again.
    await like_over_http(worker, cluster, "frank", "btn:r")
    await expect(site.count("btn:r")).to_have_text("1", timeout=WAIT_MS)
    await site.feed_state("live")
    assert len(site.sockets) >= 2  # a new connection, not a reload


async def test_the_button_is_accessible(
    browser: Browser, host: str, worker: Worker, cluster: Cluster
) -> None:
    async with LikeClient(cluster.kafka, cluster.topic) as client:
        await client.like("ally", "btn:a1")  # past the API: ally's one write is for below
    site = await visit(browser, host, ["btn:a1", "btn:a2"])
    await expect(site.count("btn:a1")).to_have_text("1", timeout=WAIT_MS)
    await site.sign_in(cluster, "ally")
    liked, other = site.button("btn:a1"), site.button("btn:a2")
    # What the user already likes is read with their token.
    await expect(liked).to_have_attribute("aria-pressed", "true", timeout=WAIT_MS)
    await expect(other).to_have_attribute("aria-pressed", "false", timeout=WAIT_MS)
    await expect(site.count("btn:a2")).to_have_text("0", timeout=WAIT_MS)

    # A real button, named by its visible text (the heart is decoration).
    buttons = site.page.get_by_role("button")
    await expect(buttons).to_have_count(2)
    await expect(site.page.get_by_role("button", name="Like 1", exact=True)).to_have_attribute(
        "aria-pressed", "true"
    )
    for button in (liked, other):
        visible = " ".join(re.sub(r"[♡♥]", "", await button.inner_text()).split())
        assert visible in ("Like 0", "Like 1")
        await expect(button).to_have_accessible_name(visible)

    # The keyboard toggles it, and the name follows the count it shows.
    await other.focus()
    await site.page.keyboard.press("Enter")
    await expect(other).to_have_attribute("aria-pressed", "true")
    await expect(other).to_have_accessible_name("Like 1")
    await expect(other).to_have_attribute("data-pending", "false", timeout=WAIT_MS)
    await expect(site.count("btn:a2")).to_have_text("1", timeout=WAIT_MS)

    # No live region: remote count changes are not announced.
    live = await site.page.evaluate(
        """() => [...document.querySelectorAll("like-button")].flatMap((b) =>
             [...b.shadowRoot.querySelectorAll("[aria-live], [role=status], [role=log],"
                                              + " [role=alert]")].map((n) => n.outerHTML))"""
    )
    assert live == []

    # Styled by the host page: a custom property and a part.
    icon = site.page.locator('like-button[item="btn:a1"]').locator(".icon")
    await expect(icon).to_have_css("color", ACCENT)
    await expect(site.count("btn:a1")).to_have_css("font-weight", "700")
