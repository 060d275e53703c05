"""JSON replies, encoded by orjson: one helper for every JSON body the API sends.

The bytes differ from the standard json module's only in spacing (``{"a":1}``, not
``{"a": 1}``) and in writing non-ASCII text as UTF-8 rather than ``\\u`` escapes: the same
JSON to any parser. The Content-Type stays ``application/json; charset=utf-8``.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

__all__ = ["json_reply"]


def json_reply(
    data: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )
