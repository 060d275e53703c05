"""JSON errors: ``{"error": {"code": ..., "message": ...}}`` with a fitting status."""

from __future__ import annotations

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from ._json import json_reply

__all__ = ["ApiError", "error_frame", "error_response", "errors_middleware"]


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


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _CODES.get(exc.status, "http_error")
        headers = {k: v for k, v in exc.headers.items() if k.lower() != "content-type"}
        return error_response(exc.status, code, exc.reason, headers)
