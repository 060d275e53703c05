"""The demo page in a real headless Chromium: two users, live counters, rollback, throttling.

The page's buttons are ``<like-button>`` elements (``web/static/like-button.js``; its own
tests, from a page of another origin, are in ``test_like_button.py``); Playwright's CSS
selectors reach into their open shadow roots.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import pytest
from conftest import ARTIFACTS, Cluster, Worker, report
from playwright.async_api import Browser, Page, expect

from likestream.client import LikeClient

pytestmark = pytest.mark.integration

ITEMS = ["page:1", "page:2", "page:3"]
WAIT_MS = 60_000
# The page encodes ids in paths (":" is %3A).
WRITE_URL = {
    item: re.compile(f"/items/{item.replace(':', '(:|%3A)')}/like$") for item in ITEMS
}  # generous: the machine is shared


@pytest.fixture(scope="module")
async def worker(cluster: Cluster) -> AsyncIterator[Worker]:
    instance = cluster.worker("w1")
    # LIKESTREAM_DEV_TOKENS is on by default in dev.
    async with instance.running():
        yield instance


async def open_as(
    browser: Browser, worker: Worker, user: str, items: list[str] = ITEMS, wait: str = ""
) -> Page:
    """The page of ``items``, signed in as ``user`` (after the count of ``wait`` shows,
    if given)."""
    context = await browser.new_context(viewport={"width": 720, "height": 520})
    page = await context.new_page()
    await page.goto(f"{worker.url}/?items={','.join(items)}")
    if wait:
        await expect(count(page, wait)).to_have_text("1", timeout=WAIT_MS)
    await expect(page.locator("#connection")).to_have_attribute(
        "data-state", "live", timeout=WAIT_MS
    )
    await page.fill("#user", user)
    await page.click("#signin button")
    await expect(page.locator("#who")).to_have_text(f"Signed in as {user}.", timeout=WAIT_MS)
    return page


def button(page: Page, item: str):  # type: ignore[no-untyped-def]
    return page.locator(f'li[data-item="{item}"] like-button button')


def count(page: Page, item: str):  # type: ignore[no-untyped-def]
    return page.locator(f'li[data-item="{item}"] like-button .count')


async def test_a_like_in_one_page_shows_in_the_other(
    browser: Browser, worker: Worker, request: pytest.FixtureRequest
) -> None:
    alice = await open_as(browser, worker, "alice")
    bob = await open_as(browser, worker, "bob")
    for page in (alice, bob):
        await expect(count(page, "page:1")).to_have_text("0", timeout=WAIT_MS)

    began = time.monotonic()
    await button(alice, "page:1").click()
    await expect(button(alice, "page:1")).to_have_attribute("aria-pressed", "true")
    await expect(count(bob, "page:1")).to_have_text("1", timeout=WAIT_MS)  # no reload
    seen = time.monotonic() - began
    await expect(count(alice, "page:1")).to_have_text("1", timeout=WAIT_MS)
    await expect(button(bob, "page:1")).to_have_attribute("aria-pressed", "false")
    ARTIFACTS.mkdir(exist_ok=True)
    await alice.screenshot(path=str(ARTIFACTS / "page-alice-liked.png"))
    await bob.screenshot(path=str(ARTIFACTS / "page-bob-sees-it.png"))

    # Unlike, once the write is through (the button is not pending any more).
    await expect(button(alice, "page:1")).to_have_attribute("data-pending", "false")
    await _click_until(alice, "page:1", "false")
    await expect(count(bob, "page:1")).to_have_text("0", timeout=WAIT_MS)
    await expect(count(alice, "page:1")).to_have_text("0", timeout=WAIT_MS)
    report(
        request.config,
        f"page: a like clicked in one Chromium page showed in the other in {seen:.2f}s "
        "(click -> POST -> Kafka -> agent -> like-counts -> tail -> WebSocket -> DOM)",
    )


async def _click_until(page: Page, item: str, pressed: str) -> None:
    # Clicks closer together than the page's throttle are ignored by design: click
    # again until the toggle is taken.
    for _ in range(100):
        await button(page, item).click()
        if await button(page, item).get_attribute("aria-pressed") == pressed:
            return
    pytest.fail(f"{item} never became aria-pressed={pressed}")


async def test_rapid_clicks_are_throttled(browser: Browser, worker: Worker) -> None:
    page = await open_as(browser, worker, "carol")
    writes: list[str] = []
    page.on(
        "request",
        lambda r: writes.append(r.method) if WRITE_URL["page:2"].search(r.url) else None,
    )
    await expect(count(page, "page:2")).to_have_text("0", timeout=WAIT_MS)
    await button(page, "page:2").click(click_count=3, delay=0)
    await expect(button(page, "page:2")).to_have_attribute("data-pending", "false")
    await expect(count(page, "page:2")).to_have_text("1", timeout=WAIT_MS)
    assert writes == ["POST"]
    await expect(button(page, "page:2")).to_have_attribute("aria-pressed", "true")


async def test_a_failed_write_is_rolled_back(browser: Browser, worker: Worker) -> None:
    page = await open_as(browser, worker, "dave")
    await expect(count(page, "page:3")).to_have_text("0", timeout=WAIT_MS)
    body = '{"error": {"code": "not_acknowledged", "message": "Kafka is away"}}'
    await page.route(
        WRITE_URL["page:3"],
        lambda route: route.fulfill(status=503, body=body, content_type="application/json"),
    )
    await button(page, "page:3").click()
    await expect(page.locator("#message")).to_contain_text("Kafka is away", timeout=WAIT_MS)
    await expect(button(page, "page:3")).to_have_attribute("aria-pressed", "false")
    await expect(count(page, "page:3")).to_have_text("0")


async def test_the_page_reconnects_and_resubscribes(
    browser: Browser, worker: Worker, cluster: Cluster
) -> None:
    page = await open_as(browser, worker, "erin")
    await expect(count(page, "page:3")).to_have_text("0", timeout=WAIT_MS)
    worker.stop()
    await expect(page.locator("#connection")).to_have_attribute(
        "data-state", "reconnecting", timeout=WAIT_MS
    )
    worker.start()
    await worker.wait_ready()
    await expect(page.locator("#connection")).to_have_attribute(
        "data-state", "live", timeout=WAIT_MS
    )
    # A like from elsewhere reaches the page: it subscribed again on the new connection.
    async with LikeClient(cluster.kafka, cluster.topic) as client:
        await client.like("frank", "page:3")
    await expect(count(page, "page:3")).to_have_text("1", timeout=WAIT_MS)


async def test_the_trending_panel_shows_the_hot_items(
    browser: Browser, worker: Worker, cluster: Cluster
) -> None:
    page = await open_as(browser, worker, "gina")
    async with LikeClient(cluster.kafka, cluster.topic) as client:
        for user in ("h1", "h2", "h3"):
            await client.like(user, "page:hot")
        await client.like("h1", "page:warm")
    hot = page.locator('#trending-items li[data-item="page:hot"] .gained')
    await expect(hot).to_have_text("+3", timeout=WAIT_MS)
    await expect(page.locator("#trending-items li").first).to_have_attribute(
        "data-item", "page:hot"
    )
    await page.click('#trending .windows button[data-window="1m"]')
    await expect(page.locator("#trending")).to_have_attribute("data-window", "1m")
    await expect(hot).to_have_text("+3", timeout=WAIT_MS)
    await expect(page.locator('#trending-items li[data-item="page:warm"] .gained')).to_have_text(
        "+1", timeout=WAIT_MS
    )
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "page-trending.png"), full_page=True)


async def test_signing_in_shows_what_the_user_already_likes(
    browser: Browser, worker: Worker, cluster: Cluster
) -> None:
    # Memberships are private: the page reads them with the user's own token.
    async with LikeClient(cluster.kafka, cluster.topic) as client:
        await client.like("ivy@example.com", "page:mine")
    items = ["page:mine", "page:other"]
    page = await open_as(browser, worker, "ivy@example.com", items, wait="page:mine")
    await expect(button(page, "page:mine")).to_have_attribute(
        "aria-pressed", "true", timeout=WAIT_MS
    )
    await expect(button(page, "page:other")).to_have_attribute("aria-pressed", "false")
    assert "ivy@example.com" not in worker.log.read_text()  # its reads are logged hashed
