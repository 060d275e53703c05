"""Read views: counts and memberships (``_reads.py`` finds who answers), health, metrics."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from likestream.domain._schema import is_valid_id
from likestream.tables import NotServable, StateReader

from ._auth import authorize_member
from ._errors import ApiError
from ._json import json_reply
from ._reads import READER, stale_headers

__all__ = ["LIVENESS", "STATE", "metrics_registry", "routes"]

STATE = web.AppKey("state", StateReader)
LIVENESS: web.AppKey[Callable[[], str | None]] = web.AppKey("liveness")
"""Why the process should be restarted, or None: what ``/healthz`` says."""
MAX_BATCH = 100
RETRY_AFTER = {"Retry-After": "1"}

routes = web.RouteTableDef()


def _id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not is_valid_id(value):
        raise ApiError(
            400, f"invalid_{name}", f"{name} must be 1-128 characters of [A-Za-z0-9._:@-]"
        )
    return value


def _unavailable(exc: NotServable) -> ApiError:
    return ApiError(503, "unavailable", str(exc), RETRY_AFTER)


async def _likes(request: web.Request, items: list[str]) -> tuple[dict[str, int], float | None]:
    try:
        reader = request.app[READER]
        return await reader.likes(items, reader.forwarded(request))
    except NotServable as exc:
        raise _unavailable(exc) from None


@routes.get("/items/{item_id}/likes")
async def item_likes(request: web.Request) -> web.Response:
    item = _id(request, "item_id")
    likes = request.app[READER].local_likes(item)  # most reads: no forwarding to decide
    if likes is not None:
        return json_reply({"item_id": item, "likes": likes})
    counts, stale = await _likes(request, [item])
    return json_reply({"item_id": item, "likes": counts[item]}, headers=stale_headers(stale))


@routes.get("/items/{item_id}/likes/{user_id}")
async def user_liked(request: web.Request) -> web.Response:
    item, user = _id(request, "item_id"), _id(request, "user_id")
    reader = request.app[READER]
    forwarded = reader.forwarded(request)
    if not forwarded:  # a peer forwards only what its own caller was allowed to read
        await authorize_member(request, user)
    try:
        liked, stale = await reader.liked(item, user, forwarded)
    except NotServable as exc:
        raise _unavailable(exc) from None
    return json_reply(
        {"item_id": item, "user_id": user, "liked": liked}, headers=stale_headers(stale)
    )


@routes.get("/likes")
async def batch_likes(request: web.Request) -> web.Response:
    raw = request.query.get("items", "")
    ids = dict.fromkeys(raw.split(","))  # in order, each once
    ids.pop("", None)
    items = list(ids)
    if not items:
        raise ApiError(400, "invalid_items", "items must list 1 to 100 item ids, comma separated")
    if len(items) > MAX_BATCH:
        raise ApiError(400, "too_many_items", f"at most {MAX_BATCH} items per request")
    bad = next((i for i in items if not is_valid_id(i)), None)
    if bad is not None:
        raise ApiError(400, "invalid_item_id", f"invalid item id {bad[:140]!r}")
    likes, stale = await _likes(request, items)
    return json_reply(
        {"likes": {item: likes[item] for item in items}}, headers=stale_headers(stale)
    )


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    problem = request.app[LIVENESS]()
    if problem is not None:
        return json_reply({"status": "failing", "reason": problem}, status=503)
    return json_reply({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    if request.app[STATE].ready():
        return json_reply({"ready": True})
    return json_reply({"ready": False}, status=503, headers=RETRY_AFTER)


def metrics_registry() -> Collector:
    """What ``/metrics`` serves: this process's metrics; in prometheus-client's
    multiprocess mode (the processes of a multi-process gateway,
    ``likestream/runtime/_supervisor.py``), those of every process sharing
    ``PROMETHEUS_MULTIPROC_DIR``, added up as each gauge's mode says."""
    return _registry(_multiprocess_dir())


def _multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


@functools.cache
def _registry(multiprocess_dir: str | None) -> Collector:
    if multiprocess_dir is None:
        return REGISTRY
    registry = CollectorRegistry()
    # It reads the directory's files at every scrape: one collector serves them all.
    MultiProcessCollector(registry, multiprocess_dir)  # type: ignore[no-untyped-call]
    return registry


@functools.cache
def _exposition(multiprocess_dir: str | None) -> Handler:
    return make_aiohttp_handler(_registry(multiprocess_dir))


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.StreamResponse:
    """prometheus-client's own handler: the text format, or OpenMetrics when the scraper
    asks for it (``Accept: application/openmetrics-text``), gzip when it accepts that."""
    return await _exposition(_multiprocess_dir())(request)
