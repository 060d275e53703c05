"""Request ids and the access log.

Each request gets an id: the caller's ``X-Request-Id`` when it is a sane token,
else a fresh one. It is echoed in the response's ``X-Request-Id`` (streamed responses get it
when they are prepared, inside the handler) and set in
``likestream._logging.REQUEST_ID`` for the request's task, so every log line
written while serving it (the access line, errors) carries it.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from likestream._logging import REQUEST_ID

from ._errors import error_response

__all__ = ["REQUEST_ID_HEADER", "access_log", "add_request_id"]

REQUEST_ID_HEADER = "X-Request-Id"
_SANE = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
# Probes and scrapes come every few seconds: logged at debug, not info. So do the rate
# limit checks peers ask for: the write they are part of is logged where it arrived.
_QUIET = frozenset({"/healthz", "/readyz", "/metrics", "/internal/limits"})

log = logging.getLogger("likestream.access")
errors = logging.getLogger("likestream.web")


def _request_id(request: web.Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _SANE.fullmatch(given) else uuid.uuid4().hex


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost middleware: request id, one access line, a JSON 500 for unhandled errors."""
    request_id = _request_id(request)
    token = REQUEST_ID.set(request_id)
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        if not response.prepared:  # streamed ones got it from add_request_id
            response.headers[REQUEST_ID_HEADER] = request_id
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except Exception:
        errors.exception("unhandled error in %s %s", request.method, request.path)
        response = error_response(500, "internal_error", f"internal error (request {request_id})")
        response.headers[REQUEST_ID_HEADER] = request_id
        return response
    finally:
        millis = (time.perf_counter() - start) * 1000
        level = logging.DEBUG if request.path in _QUIET else logging.INFO
        if log.isEnabledFor(level):  # its arguments cost more than the check
            _log_access(request, level, status, millis)
        REQUEST_ID.reset(token)


def _log_access(request: web.Request, level: int, status: int, millis: float) -> None:
    log.log(
        level,
        '%s %s %d %.1fms "%s"',
        request.method,
        request.path_qs,
        status,
        millis,
        request.headers.get("User-Agent", "-"),
        extra={
            "method": request.method,
            "path": request.path,
            "status": status,
            "duration_ms": round(millis, 3),
            "remote": request.remote,
        },
    )


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: responses a handler streams itself (SSE, WebSocket) get the id."""
    request_id = REQUEST_ID.get()  # still set: such responses are prepared inside the handler
    if request_id is not None:
        response.headers.setdefault(REQUEST_ID_HEADER, request_id)
