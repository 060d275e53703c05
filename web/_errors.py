"""JSON errors: ``{"error": {"code": ..., "message": ...}}`` with a fitting status."""

from __future__ import annotations

import orjson
from aiohttp import web

from ._json import json_reply

__all__ = ["ApiError", "error_frame", "error_response", "http_error_response"]


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"error": {"code": code, "message": message}}
    return json_reply(body, status=status, headers=headers)


def error_frame(code: str, message: str) -> str:
    """The same error as a push frame (WebSocket)."""
    return orjson.dumps({"type": "error", "code": code, "message": message}).decode()


_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def http_error_response(exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (404, 405, 413, ...) as JSON errors; ``exc.status`` >= 400."""
    code = _CODES.get(exc.status, "http_error")
    headers = {k: v for k, v in exc.headers.items() if k.lower() != "content-type"}
    return error_response(exc.status, code, exc.reason, headers)
