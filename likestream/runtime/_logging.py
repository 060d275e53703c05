"""Logs: plain lines for people, or JSON lines (``LIKESTREAM_LOG_FORMAT=json``).

One configuration for everything in the process, faust's and aiokafka's loggers
included: :func:`logging_config` is handed to ``faust.Worker`` (which applies it
with ``logging.config.dictConfig`` instead of its own colour formatter).
The request id of the HTTP request being served (``X-Request-Id``) lives in a
context variable that every record picks up, so access and error logs carry it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from contextvars import ContextVar
from typing import Any

import orjson

from likestream.config._settings import Settings
from likestream.kafka._internals import PausedPartitionsFilter

__all__ = [
    "REQUEST_ID",
    "JsonFormatter",
    "PlainFormatter",
    "RequestIdFilter",
    "StepFlushingHandler",
    "logging_config",
]

REQUEST_ID: ContextVar[str | None] = ContextVar("likestream_request_id", default=None)

# Attributes every LogRecord has; anything else was passed with ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "request_id", "taskName"}
)


class RequestIdFilter(logging.Filter):
    """Stamps each record with the request id of the request being served, if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


def _timestamp(record: logging.LogRecord) -> str:
    return f"{_second(int(record.created))}.{int(record.msecs):03d}Z"


@functools.lru_cache(maxsize=4)
def _second(epoch: int) -> str:
    # Formatted once a second rather than per line: a busy worker writes thousands a second.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            doc["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra that JSON cannot hold is logged as its str().
        return orjson.dumps(doc, default=str).decode()


class PlainFormatter(logging.Formatter):
    """``2026-11-27T19:40:01.123Z INFO likestream.access [req-id] message``."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        rid = f" [{request_id}]" if request_id else ""
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}{rid}: "
        line += record.getMessage()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class StepFlushingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that flushes at most once per event loop step on a thread that
    runs one: a busy process writes many lines a step (an access line per request) and
    one write(2) carries them all, instead of one each. Warnings and worse, and lines of
    a thread without a running loop, are flushed at once; at exit ``logging.shutdown``
    flushes the rest. A process killed outright loses at most its last step's lines."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._due: asyncio.AbstractEventLoop | None = None
        """The loop a flush is scheduled on, if any."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        due = self._due
        if due is loop:
            return
        if due is not None and not due.is_closed():
            self.flush()  # a flush is due on another thread's loop: this line cannot wait
            return
        self._due = loop
        loop.call_soon(self._flush_due)

    def _flush_due(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._due = None
        self.flush()


def logging_config(settings: Settings) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dictionary: one handler on stdout, the chosen format."""
    formatter = JsonFormatter if settings.log_format == "json" else PlainFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": RequestIdFilter},
            "paused": {"()": PausedPartitionsFilter, "topic": settings.topic},
        },
        "formatters": {"default": {"()": formatter}},
        "handlers": {
            "default": {
                "()": StepFlushingHandler,
                "stream": "ext://sys.stdout",
                "formatter": "default",
                "filters": ["request_id", "paused"],
            }
        },
        "root": {"level": settings.log_level.upper(), "handlers": ["default"]},
    }
