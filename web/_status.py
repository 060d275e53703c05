"""``GET /status``: a JSON summary of this process for operators (``likestream status``)."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from ._json import json_reply
from ._reads import READER
from ._views import STATE

__all__ = ["STATUS", "StatusSource", "status_routes"]


class StatusSource(Protocol):
    """What ``/status`` shows: partitions, lag, recovery, connections, throughput."""

    def status(self) -> dict[str, Any]: ...


STATUS = web.AppKey("status", StatusSource)

status_routes = web.RouteTableDef()


@status_routes.get("/status")
async def status(request: web.Request) -> web.Response:
    source = request.app.get(STATUS)
    ready = request.app[STATE].ready()
    body = source.status() if source is not None else {}
    # Where this process sends reads it cannot answer itself (partition -> worker URL).
    active = request.app[READER].owners.placement.active
    owners = {str(p): url for p, url in sorted(active.items())}
    return json_reply(
        {**body, "owners": owners, "ready": ready}, headers={"Cache-Control": "no-store"}
    )
