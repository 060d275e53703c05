"""The demo page at ``GET /`` and the embeddable ``<like-button>`` (static ES modules under
``/static/``, no build step), and dev-only tokens.

``POST /dev/token`` exists only when ``LIKESTREAM_DEV_TOKENS`` is on (the dev
default, refused in prod): it mints a short-lived write token for whatever user
name the visitor picks, so the page can use the real write API.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from aiohttp import web

from likestream.domain._schema import is_valid_id

from ._auth import AUTH
from ._errors import ApiError
from ._json import json_reply

__all__ = ["DEV_TOKEN_TTL", "STATIC", "dev_routes", "page_routes"]

STATIC = Path(__file__).parent / "static"
DEV_TOKEN_TTL = 15 * 60
# The page's own scripts, styles and same-origin API and WebSocket calls; nothing else.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

page_routes = web.RouteTableDef()
dev_routes = web.RouteTableDef()


@page_routes.get("/")
async def page(request: web.Request) -> web.FileResponse:
    return _static_file("index.html")


@page_routes.get("/static/{name}")
async def static(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    # Only the files shipped in web/static, by plain name: no paths, no dotfiles.
    if "/" in name or "\\" in name or name.startswith(".") or not (STATIC / name).is_file():
        raise ApiError(404, "not_found", "no such file")
    return _static_file(name)


def _static_file(name: str) -> web.FileResponse:
    response = web.FileResponse(STATIC / name)
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["Cache-Control"] = "no-cache"
    if name.endswith(".js"):  # module scripts need a JavaScript type
        response.content_type = "text/javascript"
        # Module scripts are fetched with CORS: any site may load the embeddable button
        # (like-button.js and what it imports). Public code without credentials; what the
        # button then calls still needs the site in LIKESTREAM_CORS_ORIGINS.
        response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@dev_routes.post("/dev/token")
async def dev_token(request: web.Request) -> web.Response:
    raw = await request.content.read(1025)
    try:
        body = orjson.loads(raw) if len(raw) <= 1024 else None
    except orjson.JSONDecodeError:
        body = None
    user = body.get("user_id") if isinstance(body, dict) else None
    if not is_valid_id(user):
        raise ApiError(
            400, "invalid_user_id", 'expected {"user_id": "..."}: 1-128 of [A-Za-z0-9._:@-]'
        )
    assert isinstance(user, str)
    tokens = request.app[AUTH].tokens
    ttl = min(DEV_TOKEN_TTL, tokens.policy.max_lifetime)
    token = tokens.mint(user, ttl)
    return json_reply(
        {"token": token, "user_id": user, "expires_in": ttl},
        headers={"Cache-Control": "no-store"},
    )
