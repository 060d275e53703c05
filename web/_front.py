"""The one middleware every request passes: request id, CORS preflights, JSON errors,
metrics, the access line, headers.

One layer for all of them rather than a middleware each: every middleware costs a
coroutine and a call per request, which a read (a dict's worth of work in RocksDB)
noticeably pays. In order, a request:

1. gets its request id (``_access.py``), set in ``likestream.runtime._logging.REQUEST_ID`` for
   every log line written while serving it, and echoed in ``X-Request-Id``;
2. is answered as a CORS preflight (``_headers.py``), or by its handler, whose
   :class:`~._errors.ApiError` and aiohttp refusals (404, 405, 413) become JSON errors
   and whose unhandled exceptions become a JSON 500 naming the request id (and are
   logged with the traceback);
3. is counted by route and status (``likestream_http_requests_total``) and timed
   (``likestream_http_request_duration_seconds``, live connections left out);
4. gets its access line (``_access.py``).

Security and CORS headers and the request id header are added to every response it
returns unprepared; a handler that streams its response (SSE, WebSocket upgrades,
whose headers leave before it returns) adds them itself with
:func:`~._headers.stream_headers`. aiohttp's ``on_response_prepare`` signal did it
before: sent for every response, it cost a read more than the headers themselves.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from likestream.runtime._logging import REQUEST_ID
from likestream.runtime._metrics import HTTP_REQUESTS, HTTP_SECONDS, STEP_COUNTS

from ._access import REQUEST_ID_HEADER, request_id, tags_of, write_access_line
from ._auth import USER
from ._errors import ApiError, error_response, http_error_response
from ._headers import add_headers, preflight
from ._push import PUSH_PATHS

__all__ = ["front"]

errors = logging.getLogger("likestream.web")


@web.middleware
async def front(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request_id(request)
    rid_token = REQUEST_ID.set(rid)
    user_token = USER.set(None)
    start = time.perf_counter()
    status = 500
    try:
        response: web.StreamResponse | None = preflight(request)
        if response is None:
            try:
                response = await handler(request)
            except ApiError as exc:
                response = error_response(exc.status, exc.code, exc.message, exc.headers)
            except web.HTTPException as exc:
                if exc.status < 400:  # a redirect: aiohttp sends it
                    status = exc.status
                    add_headers(request, exc.headers)
                    exc.headers[REQUEST_ID_HEADER] = rid
                    raise
                response = http_error_response(exc)
        status = response.status
        if not response.prepared:  # streamed ones got them from stream_headers
            add_headers(request, response.headers)
            response.headers[REQUEST_ID_HEADER] = rid
        return response
    except web.HTTPException:
        raise
    except Exception:
        path = tags_of(request).path(request)
        errors.exception("unhandled error in %s %s", request.method, path)
        response = error_response(500, "internal_error", f"internal error (request {rid})")
        add_headers(request, response.headers)
        response.headers[REQUEST_ID_HEADER] = rid
        return response
    finally:
        seconds = time.perf_counter() - start
        _count(request, status, seconds)
        write_access_line(request, rid, status, seconds)
        USER.reset(user_token)
        REQUEST_ID.reset(rid_token)


class _Route:
    """A route's metric children, looked up once: a labelled child costs more to find
    than to update, and every request updates them."""

    __slots__ = ("by_status", "name", "seconds")

    def __init__(self, name: str) -> None:
        self.name = name
        # Live connections last as long as the client stays: timed by their own metric.
        self.seconds: Any = None if name in PUSH_PATHS else HTTP_SECONDS.labels(route=name)
        self.by_status: dict[int, Any] = {}

    def count(self, status: int, seconds: float) -> None:
        if self.seconds is not None:
            self.seconds.observe(seconds)
        child = self.by_status.get(status)
        if child is None:
            child = HTTP_REQUESTS.labels(route=self.name, status=str(status))
            self.by_status[status] = child
        STEP_COUNTS.inc(child)


_ROUTES: dict[str, _Route] = {}


def _count(request: web.Request, status: int, seconds: float) -> None:
    resource = request.match_info.route.resource
    name = resource.canonical if resource is not None else "unmatched"
    route = _ROUTES.get(name)
    if route is None:
        route = _ROUTES[name] = _Route(name)
    route.count(status, seconds)
