"""Headers on every response: the usual security headers, and CORS for configured origins.

The middleware (``_front.py``) adds them to every response it returns unprepared (all
but streamed ones, error responses included), and a handler that streams its response
(SSE, WebSocket upgrades, whose headers leave before it returns) calls
:func:`stream_headers` before preparing it. Not an ``on_response_prepare`` hook: aiohttp
sends that signal for every response, a coroutine per receiver, which a read pays.
Security headers are defaults: a handler that serves a page can set its own
``Content-Security-Policy``. Strict-Transport-Security belongs to whatever
terminates TLS in front of the workers.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import hdrs, web
from multidict import CIMultiDict

from likestream.runtime._logging import REQUEST_ID

from ._access import REQUEST_ID_HEADER
from ._errors import ApiError, error_response

__all__ = ["CORS_ORIGINS", "add_headers", "check_origin", "preflight", "stream_headers"]

CORS_ORIGINS = web.AppKey("cors_origins", frozenset)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
ALLOW_METHODS = "GET, POST, DELETE"
ALLOW_HEADERS = "Authorization, Content-Type"
# Browsers see these on cross-origin answers: why to wait, why a token failed, how stale.
EXPOSE_HEADERS = "Retry-After, WWW-Authenticate, X-Likestream-Stale, X-Likestream-Stale-Ms"
PREFLIGHT_MAX_AGE = "600"
INTERNAL_PREFIX = "/internal/"


def _allowed_origin(request: web.Request) -> str | None:
    if request.path.startswith(INTERNAL_PREFIX):
        return None  # process to process only: no browser page may call it
    origin = request.headers.get(hdrs.ORIGIN)
    allowed = request.app[CORS_ORIGINS]
    if origin and (origin in allowed or "*" in allowed):
        return origin
    return None


def check_origin(request: web.Request) -> None:
    """Refuse a browser page of another origin (403) unless LIKESTREAM_CORS_ORIGINS allows
    it. For the live routes: a WebSocket is not covered by CORS, so without this any page
    could open one with the visitor's cookies and network position (cross-site WebSocket
    hijacking). Same origin: the Origin's host and port are the Host the request was sent
    to (the scheme may differ behind a proxy that ends TLS). No Origin: not a browser."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None or _allowed_origin(request) is not None:
        return
    if urlsplit(origin).netloc.lower() != request.host.lower():
        raise ApiError(
            403,
            "origin_not_allowed",
            "this page's origin is neither this server's nor in LIKESTREAM_CORS_ORIGINS",
        )


def preflight(request: web.Request) -> web.Response | None:
    """The answer to a CORS preflight request (the allowed origin is added by
    :func:`add_headers`); None for any other request."""
    if request.method != hdrs.METH_OPTIONS or not request.headers.get(
        hdrs.ACCESS_CONTROL_REQUEST_METHOD
    ):
        return None
    if _allowed_origin(request) is None:
        return error_response(
            403, "origin_not_allowed", "this origin is not in LIKESTREAM_CORS_ORIGINS"
        )
    return web.Response(
        status=204,
        headers={
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: ALLOW_METHODS,
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOW_HEADERS,
            hdrs.ACCESS_CONTROL_MAX_AGE: PREFLIGHT_MAX_AGE,
        },
    )


def add_headers(request: web.Request, headers: CIMultiDict[str]) -> None:
    """Security headers, and CORS ones for an allowed origin, into a response's
    ``headers`` (those a handler set stay)."""
    headers.merge(SECURITY_HEADERS)
    if not request.app[CORS_ORIGINS]:
        return
    # Answers differ by Origin, so caches must key on it.
    vary = headers.get(hdrs.VARY)
    headers[hdrs.VARY] = f"{vary}, Origin" if vary else "Origin"
    origin = _allowed_origin(request)
    if origin is not None:
        headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
        headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSE_HEADERS


def stream_headers(request: web.Request, response: web.StreamResponse) -> None:
    """What the middleware adds to a response, for one its handler streams: call it
    before ``response.prepare``. The request id is the one the middleware set."""
    add_headers(request, response.headers)
    rid = REQUEST_ID.get()
    if rid is not None:
        response.headers[REQUEST_ID_HEADER] = rid
