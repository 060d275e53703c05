"""Request ids and the access log, which never shows a user id.

Each request gets an id: the caller's ``X-Request-Id`` when it is a sane token,
else a fresh one. It is echoed in the response's ``X-Request-Id`` (streamed responses get it
when they are prepared, inside the handler) and set in
``likestream._logging.REQUEST_ID`` for the request's task, so every log line
written while serving it (the access line, errors) carries it.

User ids (they may be e-mail addresses) are logged as keyed hashes (:class:`UserTags`,
``u:`` and 12 hex digits): the same user gets the same tag in every process sharing
the internal secret, so one user's requests can be followed, but a tag does not say
who it is. The access line tags the authenticated user, and the user segment of a
membership read's path.

``ACCESS_SAMPLE`` (``LIKESTREAM_ACCESS_LOG_SAMPLE``, default 1: every line) keeps that
share of the lines of answered requests (status below 400); a refused or failed
request is always logged. Writing the line is the dearest part of a read's own work.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import random
import re
import secrets
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from likestream._logging import REQUEST_ID

from ._auth import USER
from ._errors import error_response

__all__ = [
    "ACCESS_SAMPLE",
    "REQUEST_ID_HEADER",
    "USER_TAGS",
    "UserTags",
    "access_log",
    "add_request_id",
]

REQUEST_ID_HEADER = "X-Request-Id"
_SANE = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
# Probes and scrapes come every few seconds: logged at debug, not info. So do the rate
# limit checks peers ask for: the write they are part of is logged where it arrived.
_QUIET = frozenset({"/healthz", "/readyz", "/metrics", "/internal/limits"})

log = logging.getLogger("likestream.access")
errors = logging.getLogger("likestream.web")


class UserTags:
    """Keyed hashes of user ids for logs."""

    def __init__(self, internal_secret: str | None) -> None:
        """``internal_secret`` None: a key of this process alone (unit tests)."""
        base = internal_secret.encode() if internal_secret is not None else os.urandom(32)
        self._key = hmac.new(base, b"likestream user tags v1", hashlib.sha256).digest()

    def __call__(self, user: str) -> str:
        return "u:" + hmac.new(self._key, user.encode(), hashlib.sha256).hexdigest()[:12]

    def path(self, request: web.Request) -> str:
        """The request's path and query, its user segment (if any) tagged."""
        path = request.path
        user = request.match_info.get("user_id")
        if user is not None and path.endswith("/" + user):
            path = path[: -len(user)] + self(user)
        return f"{path}?{request.query_string}" if request.query_string else path


USER_TAGS = web.AppKey("user_tags", UserTags)
ACCESS_SAMPLE = web.AppKey("access_sample", float)
_OWN_TAGS = UserTags(None)


def _request_id(request: web.Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    # 32 hex digits like uuid4().hex, without building a UUID object on every request.
    return given if _SANE.fullmatch(given) else secrets.token_hex(16)


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost middleware: request id, one access line, a JSON 500 for unhandled errors."""
    request_id = _request_id(request)
    token = REQUEST_ID.set(request_id)
    user = USER.set(None)
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
        errors.exception("unhandled error in %s %s", request.method, _tags(request).path(request))
        response = error_response(500, "internal_error", f"internal error (request {request_id})")
        response.headers[REQUEST_ID_HEADER] = request_id
        return response
    finally:
        millis = (time.perf_counter() - start) * 1000
        level = logging.DEBUG if request.path in _QUIET else logging.INFO
        if log.isEnabledFor(level) and _sampled(request, status):
            _log_access(request, level, status, millis)  # its arguments cost more
        USER.reset(user)
        REQUEST_ID.reset(token)


def _sampled(request: web.Request, status: int) -> bool:
    share = request.app.get(ACCESS_SAMPLE, 1.0)
    return share >= 1.0 or status >= 400 or random.random() < share


def _tags(request: web.Request) -> UserTags:
    return request.app.get(USER_TAGS) or _OWN_TAGS  # the latter: an app not from create_app


def _log_access(request: web.Request, level: int, status: int, millis: float) -> None:
    tags = _tags(request)
    path_qs = tags.path(request)
    user = USER.get()
    tag = tags(user) if user is not None else "-"
    extra = {
        "method": request.method,
        "path": path_qs.partition("?")[0],
        "status": status,
        "duration_ms": round(millis, 3),
        "remote": request.remote,
    }
    if tag != "-":
        extra["user"] = tag
    log.log(
        level,
        '%s %s %d %.1fms %s "%s"',
        request.method,
        path_qs,
        status,
        millis,
        tag,
        request.headers.get("User-Agent", "-"),
        extra=extra,
    )


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: responses a handler streams itself (SSE, WebSocket) get the id."""
    request_id = REQUEST_ID.get()  # still set: such responses are prepared inside the handler
    if request_id is not None:
        response.headers.setdefault(REQUEST_ID_HEADER, request_id)
