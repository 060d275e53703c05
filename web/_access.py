"""Request ids and the access log, which never shows a user id.

Each request gets an id: the caller's ``X-Request-Id`` when it is a sane token,
else a fresh one. It is echoed in the response's ``X-Request-Id`` (streamed responses get it
when they are prepared, inside the handler) and set in
``likestream.runtime._logging.REQUEST_ID`` for the request's task, so every log line
written while serving it (the access line, errors) carries it.

User ids (they may be e-mail addresses) are logged as keyed hashes (:class:`UserTags`,
``u:`` and 12 hex digits): the same user gets the same tag in every process sharing
the internal secret, so one user's requests can be followed, but a tag does not say
who it is. The access line tags the authenticated user, and the user segment of a
membership read's path.

``ACCESS_SAMPLE`` (``LIKESTREAM_ACCESS_LOG_SAMPLE``, default 0.01) keeps that share of
the lines of successful reads (GET or HEAD, status 2xx, answered within
:data:`SLOW_SECONDS`), chosen at random; 1 keeps every line. Everything else is always
logged: writes, preflights, redirects, refused and failed requests, slow reads. Under read
load the line was the dearest part of a read after aiohttp itself (a sixth of the event
loop's time, ``BENCHMARKS.md``), and a read's answer says nothing a sample does not.
The line is built by hand (:class:`_AccessRecord`, without
``LogRecord.__init__``'s per-record lookups) and handed to the logging handlers as any
record; the worker's handler (``likestream.runtime._logging.StepFlushingHandler``) writes the
lines of one event loop step with one write(2). ``_front.py`` writes it for every
request.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import os
import random
import re
import secrets
import sys
import threading
import time
from typing import Any

from aiohttp import web

from ._auth import USER

__all__ = [
    "ACCESS_SAMPLE",
    "REQUEST_ID_HEADER",
    "SLOW_SECONDS",
    "USER_TAGS",
    "UserTags",
    "request_id",
    "tags_of",
    "write_access_line",
]

REQUEST_ID_HEADER = "X-Request-Id"
_SANE = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
# Probes and scrapes come every few seconds: logged at debug, not info. So do the rate
# limit checks peers ask for: the write they are part of is logged where it arrived.
_QUIET = frozenset({"/healthz", "/readyz", "/metrics", "/internal/limits"})

log = logging.getLogger("likestream.access")

SLOW_SECONDS = 0.5
"""A read answered this slowly is logged whatever ``ACCESS_SAMPLE`` says."""
_SAMPLED_METHODS = frozenset({"GET", "HEAD"})


class UserTags:
    """Keyed hashes of user ids for logs."""

    def __init__(self, internal_secret: str) -> None:
        base = internal_secret.encode()
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


# Fresh ids: 32 hex digits, a random half per process and a counter. Unique without a
# system call per request (secrets.token_hex reads the kernel's random source each time);
# an id names a request in the logs and is no secret.
_PREFIX = secrets.token_hex(8)
_NEXT = itertools.count(1).__next__


def request_id(request: web.Request) -> str:
    """The caller's ``X-Request-Id`` when it is a sane token, else a fresh one."""
    given = request.headers.get(REQUEST_ID_HEADER)
    if given is not None and _SANE.fullmatch(given):
        return given
    return f"{_PREFIX}{_NEXT() & 0xFFFF_FFFF_FFFF_FFFF:016x}"


def tags_of(request: web.Request) -> UserTags:
    return request.app[USER_TAGS]


def write_access_line(request: web.Request, request_id: str, status: int, seconds: float) -> None:
    """The request's access line, if its level is enabled and it is sampled."""
    # The sample first: most reads stop here, before anything else is looked up.
    share = request.app.get(ACCESS_SAMPLE, 1.0)
    if (
        share < 1.0
        and 200 <= status < 300
        and seconds < SLOW_SECONDS
        and request.method in _SAMPLED_METHODS
        and random.random() >= share
    ):
        return
    level = logging.DEBUG if request.path in _QUIET else logging.INFO
    if not log.isEnabledFor(level):
        return
    tags = tags_of(request)
    path_qs = tags.path(request)
    user = USER.get()
    tag = tags(user) if user is not None else "-"
    millis = seconds * 1000
    method = request.method
    path = path_qs.partition("?")[0]
    agent = request.headers.get("User-Agent", "-")
    record = _AccessRecord(
        level,
        f'{method} {path_qs} {status} {millis:.1f}ms {tag} "{agent}"',
        request_id,
    )
    record.method, record.path, record.status = method, path, status
    record.duration_ms, record.remote = round(millis, 3), request.remote
    if user is not None:
        record.user = tag
    log.handle(record)  # the handlers' filters and formats, as for any record


class _AccessRecord(logging.LogRecord):
    """An access line's record, made without ``LogRecord.__init__``, which looks up the
    caller's frame and file name, the thread's and the process's on every record: the
    dearest part of a line, when every access line comes from this one function. It has
    every attribute a LogRecord has (formatters read them from ``__dict__``). The extras
    (method, path, status, duration_ms, remote, user) are set by the caller, as ``extra=``
    would be; the message comes formatted (no ``args``)."""

    method: str
    path: str
    status: int
    duration_ms: float
    remote: str | None
    user: str

    def __init__(self, level: int, message: str, request_id: str) -> None:
        now = time.time()
        vars(self).update(_whose())
        self.msg = message
        self.levelno = level
        self.levelname = logging.getLevelName(level)
        self.created = now
        self.msecs = int((now - int(now)) * 1000) + 0.0
        self.relativeCreated = (now - _BORN) * 1000
        self.request_id = request_id  # RequestIdFilter keeps it


_BORN = time.time()
# The attributes of an access line's record that are the same on every line of a thread:
# asking the system for the thread's and the process's names per line costs more than
# the rest of the record.
_WHOSE: dict[int, dict[str, Any]] = {}
os.register_at_fork(after_in_child=_WHOSE.clear)


def _whose() -> dict[str, Any]:
    ident = threading.get_ident()
    found = _WHOSE.get(ident)
    if found is None:
        mp = sys.modules.get("multiprocessing")
        found = _WHOSE[ident] = {
            "name": log.name,
            "args": (),
            "pathname": __file__,
            "filename": os.path.basename(__file__),
            "module": __name__.rpartition(".")[2],
            "funcName": "write_access_line",
            "lineno": 0,
            "exc_info": None,
            "exc_text": None,
            "stack_info": None,
            "taskName": None,  # Python 3.12 has it
            "thread": ident,
            "threadName": threading.current_thread().name,
            "process": os.getpid(),
            "processName": mp.current_process().name if mp is not None else "MainProcess",
        }
    return found
