"""The API's contract: an OpenAPI 3.1 document of every public route, and the live protocols.

:data:`DOCUMENT` describes every public operation the app can have (its routes are
checked against it by ``tests/unit/web/test_openapi.py``, so the two cannot drift) and,
with JSON Schemas under ``components/schemas``, the WebSocket frames of ``GET /ws``
(``x-websocket`` on that operation) and the Server-Sent Events of
``GET /items/{item_id}/events``. A running process serves it at ``GET /openapi.json``
narrowed to what it serves (``POST /dev/token`` only with development tokens, the
trending windows it was given, public memberships without a token), and ``GET /docs``
renders it (``static/docs.html``, no third-party script: the page's CSP allows none).
``POST /internal/limits`` is process to process (``_quota.py``) and never in it.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
from aiohttp import hdrs, web

from ._auth import AUTH
from ._page import _static_file
from ._trending import DEFAULT_LIMIT, MAX_LIMIT, TRENDING

__all__ = ["DOCUMENT", "INTERNAL_ROUTES", "OPENAPI", "install_spec", "served_document"]

INTERNAL_ROUTES = frozenset({("POST", "/internal/limits")})
"""Routes the app has that are not public API: between likestream processes only."""

Json = dict[str, Any]

# The ids of likestream/domain/_schema.py (``is_valid_id``): 1-128 of [A-Za-z0-9._:@-].
ID_PATTERN = "^[A-Za-z0-9._:@-]{1,128}$"
# In a path, the same except "." and "..": URL clients (and RFC 3986) remove those
# segments before sending, so such an id cannot be addressed by a path.
PATH_ID_PATTERN = (
    "^(?:[A-Za-z0-9_:@-][A-Za-z0-9._:@-]{0,127}"
    "|\\.[A-Za-z0-9_:@-][A-Za-z0-9._:@-]{0,126}"
    "|\\.\\.[A-Za-z0-9._:@-]{1,126})$"
)


def _ref(name: str, kind: str = "schemas") -> Json:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: Json, description: str, headers: Json | None = None) -> Json:
    response: Json = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def _error(description: str, *headers: str) -> Json:
    return _json(_ref("Error"), description, {h: _ref(h, "headers") for h in headers} or None)


def _html(description: str) -> Json:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _id_param(name: str, description: str) -> Json:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": PATH_ID_PATTERN},
    }


ITEM_ID = _id_param("item_id", "An item id: 1-128 characters of `[A-Za-z0-9._:@-]`.")
USER_ID = _id_param("user_id", "A user id: 1-128 characters of `[A-Za-z0-9._:@-]`.")
STALE_HEADERS = {"X-Likestream-Stale": _ref("Stale", "headers")} | {
    "X-Likestream-Stale-Ms": _ref("StaleMs", "headers")
}
BEARER: list[Json] = [{"bearerAuth": []}]
NO_STORE = {"Cache-Control": _ref("NoStore", "headers")}

E400_ID = _error("A bad id (`invalid_item_id`, `invalid_user_id`).")
E401 = _error(
    "No token (`unauthorized`), not a Bearer one (`invalid_request`), or one that is "
    "malformed, wrongly signed, expired, too long-lived, of another issuer or audience "
    "(`invalid_token`); `WWW-Authenticate` says which.",
    "WWW-Authenticate",
)
E503_READ = _error(
    "`unavailable`: no fresh answer and none within `LIKESTREAM_STALE_MAX_MS`.", "Retry-After"
)
E403_ORIGIN = _error("`origin_not_allowed`: a browser page of an origin not allowed.")

ERROR = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "description": "Stable, for programs."},
                "message": {"type": "string", "description": "For people."},
            },
        }
    },
    "example": {"error": {"code": "invalid_item_id", "message": "invalid item id '?'"}},
}

COUNT = {"type": "integer", "minimum": 0}

# -- the WebSocket and SSE frames ------------------------------------------------------

ITEM_ID_SCHEMA = {"type": "string", "pattern": ID_PATTERN}
WINDOW = {"type": "string", "description": "One of `LIKESTREAM_TRENDING_WINDOWS`, e.g. `1h`."}
TRENDING_ITEMS = {"type": "array", "maxItems": MAX_LIMIT, "items": _ref("TrendingItem")}
WS_ERRORS = [
    "invalid_json",
    "invalid_op",
    "invalid_items",
    "invalid_item_id",
    "too_many_items",
    "not_subscribed",
    "invalid_frame",
    "frame_too_large",
    "rate_limited",
    "server_full",
    "invalid_window",
    "invalid_limit",
]


def _frame(required: list[str], description: str, **properties: Json) -> Json:
    return {
        "type": "object",
        "description": description,
        "required": required,
        "properties": properties,
    }


FRAMES: dict[str, Json] = {
    "WsSubscribe": _frame(
        ["op", "items"],
        "Subscribe to items' counts: the current count of each at once, then every change.",
        op={"const": "subscribe"},
        items={"type": "array", "minItems": 1, "items": ITEM_ID_SCHEMA},
    ),
    "WsUnsubscribe": _frame(
        ["op", "items"],
        "Stop the counts of items (`not_subscribed` names any that were not subscribed).",
        op={"const": "unsubscribe"},
        items={"type": "array", "minItems": 1, "items": ITEM_ID_SCHEMA},
    ),
    "WsSubscribeTrending": _frame(
        ["op", "window"],
        "Subscribe to a window's top items (again: replaces the limit and sends at once).",
        op={"const": "subscribe_trending"},
        window=WINDOW,
        limit={"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    ),
    "WsUnsubscribeTrending": _frame(
        ["op", "window"],
        "Stop a window's top items.",
        op={"const": "unsubscribe_trending"},
        window=WINDOW,
    ),
    "WsClientFrame": {
        "description": "A JSON text frame from the client.",
        "oneOf": [
            _ref("WsSubscribe"),
            _ref("WsUnsubscribe"),
            _ref("WsSubscribeTrending"),
            _ref("WsUnsubscribeTrending"),
        ],
    },
    "WsLikes": _frame(
        ["type", "item_id", "likes"],
        "An item's count: at once on subscribing, then at most once per "
        "`LIKESTREAM_PUSH_INTERVAL_MS`; never older than one already sent.",
        type={"const": "likes"},
        item_id=ITEM_ID_SCHEMA,
        likes=COUNT,
    ),
    "WsTrending": _frame(
        ["type", "window", "items"],
        "A window's top items: at once on subscribing, then when they change.",
        type={"const": "trending"},
        window=WINDOW,
        items=TRENDING_ITEMS,
    ),
    "WsError": _frame(
        ["type", "code", "message"],
        "A refused client frame; the connection stays open.",
        type={"const": "error"},
        code={"type": "string", "enum": WS_ERRORS},
        message={"type": "string"},
    ),
    "WsServerFrame": {
        "description": "A JSON text frame from the server.",
        "oneOf": [_ref("WsLikes"), _ref("WsTrending"), _ref("WsError")],
        "discriminator": {
            "propertyName": "type",
            "mapping": {
                "likes": "#/components/schemas/WsLikes",
                "trending": "#/components/schemas/WsTrending",
                "error": "#/components/schemas/WsError",
            },
        },
    },
    "SseLikes": _frame(
        ["item_id", "likes"],
        "The `data` of an `event: likes`.",
        item_id=ITEM_ID_SCHEMA,
        likes=COUNT,
    ),
    "SseEvent": {
        "type": "object",
        "description": "One event of the stream: `id` is the count's source offset (-1: the "
        "item has had no event yet), sent back as `Last-Event-ID` by a reconnecting "
        "EventSource (so that count is not sent again). "
        "`: keep-alive` comments come every `LIKESTREAM_PUSH_HEARTBEAT_MS`.",
        "required": ["event", "data"],
        "properties": {
            "event": {"const": "likes"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": _ref("SseLikes"),
            },
            "id": {"type": "string", "pattern": "^(-1|[0-9]+)$"},
            "retry": {"type": "integer"},
        },
    },
}

WEBSOCKET = {
    "description": "JSON text frames, both ways. Client frames: at most 16 KiB (over 64 KiB "
    "closes with 1009), 10 per second in bursts of 20 (`rate_limited`).",
    "client": _ref("WsClientFrame"),
    "server": _ref("WsServerFrame"),
    "closeCodes": {
        "1009": "a client frame over 64 KiB",
        "1013": "try again later: the process is full (`LIKESTREAM_PUSH_MAX_CONNECTIONS`, "
        "`LIKESTREAM_PUSH_MAX_CONNECTIONS_PER_ADDRESS`), or the client read too slowly",
    },
    "example": [
        {"client": {"op": "subscribe", "items": ["post:9"]}},
        {"server": {"type": "likes", "item_id": "post:9", "likes": 13}},
        {"client": {"op": "subscribe_trending", "window": "1h", "limit": 10}},
        {
            "server": {
                "type": "trending",
                "window": "1h",
                "items": [{"item_id": "post:9", "likes": 12}],
            }
        },
    ],
}

# -- operations ------------------------------------------------------------------------


def _write(summary: str, description: str, operation_id: str) -> Json:
    return {
        "tags": ["writes"],
        "operationId": operation_id,
        "summary": summary,
        "description": description
        + " The user is the token's `sub`. No body is needed (one up to 1 KiB is ignored). "
        "Retrying is safe: a like is a membership.",
        "security": BEARER,
        "parameters": [ITEM_ID],
        "responses": {
            "202": _json(
                {
                    "type": "object",
                    "required": ["event_id"],
                    "properties": {"event_id": {"type": "string"}},
                },
                "Kafka acknowledged the event (acks=all): it will be counted.",
                NO_STORE,
            ),
            "400": _error("`invalid_item_id`."),
            "401": E401,
            "413": _error("`too_large`: a body over 1 KiB."),
            "429": _error(
                "`rate_limited`: the user's bucket (`LIKESTREAM_BURST`, `LIKESTREAM_RATE`) is "
                "empty; `Retry-After` is the seconds until the next token.",
                "Retry-After",
            ),
            "503": _error(
                "Not confirmed (the event may still be written): `not_acknowledged` (Kafka did "
                "not acknowledge within `LIKESTREAM_PUBLISH_TIMEOUT_MS`) or "
                "`rate_limit_unavailable` (the user's rate limit could not be checked).",
                "Retry-After",
            ),
        },
    }


PATHS: Json = {
    "/items/{item_id}/likes": {
        "get": {
            "tags": ["reads"],
            "operationId": "getLikes",
            "summary": "An item's like count",
            "description": "Any process answers any item: fresh from the owner, or from a "
            "replica, then saying how stale (`X-Likestream-Stale`). An unknown item has 0.",
            "parameters": [ITEM_ID],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["item_id", "likes"],
                        "properties": {"item_id": ITEM_ID_SCHEMA, "likes": COUNT},
                    },
                    "The count.",
                    STALE_HEADERS,
                ),
                "400": E400_ID,
                "503": E503_READ,
            },
        }
    },
    "/items/{item_id}/likes/{user_id}": {
        "get": {
            "tags": ["reads"],
            "operationId": "getMembership",
            "summary": "Whether a user likes an item",
            "description": "Needs a token of that same user (403 with another user's), unless "
            "`LIKESTREAM_PUBLIC_MEMBERSHIPS=true`.",
            "security": BEARER,
            "parameters": [ITEM_ID, USER_ID],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["item_id", "user_id", "liked"],
                        "properties": {
                            "item_id": ITEM_ID_SCHEMA,
                            "user_id": ITEM_ID_SCHEMA,
                            "liked": {"type": "boolean"},
                        },
                    },
                    "The membership.",
                    STALE_HEADERS,
                ),
                "400": E400_ID,
                "401": E401,
                "403": _error(
                    "`forbidden`: the token is another user's "
                    '(`WWW-Authenticate: ... error="insufficient_scope"`).',
                    "WWW-Authenticate",
                ),
                "503": E503_READ,
            },
        }
    },
    "/likes": {
        "get": {
            "tags": ["reads"],
            "operationId": "getBatchLikes",
            "summary": "The like counts of up to 100 items",
            "description": "Repeated ids count once. Stale if any item is, with the largest "
            "`X-Likestream-Stale-Ms`.",
            "parameters": [
                {
                    "name": "items",
                    "in": "query",
                    "required": True,
                    "description": "Item ids, comma separated: `a,b,c`.",
                    "style": "form",
                    "explode": False,
                    "schema": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 100,
                        "items": ITEM_ID_SCHEMA,
                    },
                }
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["likes"],
                        "properties": {
                            "likes": {
                                "type": "object",
                                "propertyNames": ITEM_ID_SCHEMA,
                                "additionalProperties": COUNT,
                            }
                        },
                    },
                    "Each item's count, in the order asked.",
                    STALE_HEADERS,
                ),
                "400": _error("`invalid_items`, `too_many_items` or `invalid_item_id`."),
                "503": E503_READ,
            },
        }
    },
    "/trending": {
        "get": {
            "tags": ["reads"],
            "operationId": "getTrending",
            "summary": "The items with the most likes gained in a window",
            "description": "Over every partition, from what this process has read of the "
            "trending topic (up to `LIKESTREAM_TRENDING_INTERVAL_MS` behind the workers).",
            "parameters": [
                {
                    "name": "window",
                    "in": "query",
                    "description": "One of `LIKESTREAM_TRENDING_WINDOWS`.",
                    "schema": {"type": "string", "default": "1h"},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_LIMIT,
                        "default": DEFAULT_LIMIT,
                    },
                },
            ],
            "responses": {
                "200": _json(_ref("Trending"), "The top items, most likes gained first."),
                "400": _error("`invalid_window` or `invalid_limit`."),
            },
        }
    },
    "/items/{item_id}/like": {
        "post": _write("Like an item", "Answered once Kafka acknowledged the like.", "likeItem"),
        "delete": _write(
            "Unlike an item", "Answered once Kafka acknowledged the unlike.", "unlikeItem"
        ),
    },
    "/ws": {
        "get": {
            "tags": ["live"],
            "operationId": "websocket",
            "summary": "Live counts and trending over a WebSocket",
            "description": "An upgrade to a WebSocket (RFC 6455) speaking the frames of "
            "`x-websocket`. A page of another origin is refused unless it is in "
            "`LIKESTREAM_CORS_ORIGINS`.",
            "responses": {
                "101": {"description": "Switched to the WebSocket protocol."},
                "400": _error("Not a WebSocket handshake (`http_error`)."),
                "403": E403_ORIGIN,
            },
            "x-websocket": WEBSOCKET,
        }
    },
    "/items/{item_id}/events": {
        "get": {
            "tags": ["live"],
            "operationId": "events",
            "summary": "An item's live count as Server-Sent Events",
            "description": "The current count at once, then every change (at most one per "
            "`LIKESTREAM_PUSH_INTERVAL_MS`).",
            "parameters": [
                ITEM_ID,
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "description": "The last event's `id`: its count is not sent again.",
                    "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                },
            ],
            "responses": {
                "200": {
                    "description": "The event stream.",
                    "headers": NO_STORE,
                    "content": {"text/event-stream": {"schema": _ref("SseEvent")}},
                },
                "400": E400_ID,
                "403": E403_ORIGIN,
                "503": _error("`server_full`: the process holds all it can.", "Retry-After"),
            },
        }
    },
    "/healthz": {
        "get": {
            "tags": ["operations"],
            "operationId": "health",
            "summary": "Liveness",
            "responses": {
                "200": _json(
                    {"type": "object", "properties": {"status": {"const": "ok"}}},
                    "The process is up.",
                ),
                "503": _json(
                    {
                        "type": "object",
                        "required": ["status", "reason"],
                        "properties": {
                            "status": {"const": "failing"},
                            "reason": {"type": "string"},
                        },
                    },
                    "The process should be restarted: a worker whose consumer-group member "
                    "has gone `LIKESTREAM_MAX_POLL_INTERVAL_MS` without polling Kafka is out "
                    "of the group.",
                ),
            },
        }
    },
    "/readyz": {
        "get": {
            "tags": ["operations"],
            "operationId": "ready",
            "summary": "Readiness",
            "description": "Ready once the tables are recovered (a gateway: its replica "
            "loaded); not ready before and during rebalances.",
            "responses": {
                "200": _json(_ref("Readiness"), "Ready."),
                "503": _json(
                    _ref("Readiness"), "Not ready.", {"Retry-After": _ref("Retry-After", "headers")}
                ),
            },
        }
    },
    "/status": {
        "get": {
            "tags": ["operations"],
            "operationId": "status",
            "summary": "A summary of this process for operators",
            "description": "Partitions, lag, recovery, connections, throughput; `owners` maps "
            "each partition to the worker URL that owns it.",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["owners", "ready"],
                        "properties": {
                            "owners": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                            "ready": {"type": "boolean"},
                        },
                    },
                    "The summary.",
                    NO_STORE,
                )
            },
        }
    },
    "/metrics": {
        "get": {
            "tags": ["operations"],
            "operationId": "metrics",
            "summary": "Prometheus metrics",
            "responses": {
                "200": {
                    "description": "The Prometheus text format, or OpenMetrics when asked.",
                    "content": {
                        "text/plain": {"schema": {"type": "string"}},
                        "application/openmetrics-text": {"schema": {"type": "string"}},
                    },
                }
            },
        }
    },
    "/": {
        "get": {
            "tags": ["page"],
            "operationId": "page",
            "summary": "The demo page",
            "description": "`?items=a,b,c` picks the items.",
            "responses": {"200": _html("The page.")},
        }
    },
    "/static/{name}": {
        "get": {
            "tags": ["page"],
            "operationId": "staticFile",
            "summary": "A file of the pages (scripts, styles)",
            "parameters": [
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-][A-Za-z0-9._-]*$"},
                }
            ],
            "responses": {
                "200": {
                    "description": "The file.",
                    "content": {
                        t: {"schema": {"type": "string"}}
                        for t in ("text/html", "text/css", "text/javascript")
                    },
                },
                "404": _error("`not_found`."),
            },
        }
    },
    "/docs": {
        "get": {
            "tags": ["page"],
            "operationId": "docs",
            "summary": "This document, for people",
            "responses": {"200": _html("The page.")},
        }
    },
    "/openapi.json": {
        "get": {
            "tags": ["page"],
            "operationId": "openapi",
            "summary": "This document",
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
        }
    },
    "/dev/token": {
        "post": {
            "tags": ["development"],
            "operationId": "devToken",
            "summary": "A short-lived token for any user (development only)",
            "description": "Only with `LIKESTREAM_DEV_TOKENS` (refused in prod): anyone who "
            "can reach the process can act as any user.",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["user_id"],
                            "properties": {"user_id": ITEM_ID_SCHEMA},
                        }
                    }
                },
            },
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["token", "user_id", "expires_in"],
                        "properties": {
                            "token": {"type": "string"},
                            "user_id": ITEM_ID_SCHEMA,
                            "expires_in": {"type": "integer", "minimum": 1},
                        },
                    },
                    "A token (HS256) valid for `expires_in` seconds.",
                    NO_STORE,
                ),
                "400": _error("`invalid_user_id`."),
            },
        }
    },
}


def _header(description: str, schema: Json, required: bool = True) -> Json:
    return {"description": description, "required": required, "schema": schema}


DOCUMENT: Json = {
    "openapi": "3.1.0",
    "info": {
        "title": "likestream",
        "version": "1",
        "description": "Exact real-time like counts. Errors are JSON "
        '`{"error": {"code": "...", "message": "..."}}`; unknown routes get 404 `not_found`, '
        "other methods 405 `method_not_allowed`. Every response carries "
        "`X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`, "
        "`Referrer-Policy: no-referrer` and a `Content-Security-Policy`; origins in "
        "`LIKESTREAM_CORS_ORIGINS` get CORS headers (preflights 204, others 403).",
    },
    "tags": [
        {"name": "reads", "description": "Counts, memberships, trending."},
        {"name": "writes", "description": "Likes and unlikes, with a bearer token."},
        {"name": "live", "description": "Pushes: WebSocket and Server-Sent Events."},
        {"name": "operations", "description": "For operators and orchestrators."},
        {"name": "page", "description": "The demo page and this document."},
        {"name": "development", "description": "Only where development tokens are on."},
    ],
    "paths": PATHS,
    "components": {
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "A JWT whose `sub` is the user: HS256 signed with "
                "`LIKESTREAM_SECRET` (`likestream token alice`), or RS256/ES256 from the "
                "identity provider of `LIKESTREAM_JWKS_URL`.",
            }
        },
        "headers": {
            "Retry-After": _header(
                "Seconds to wait before trying again.", {"type": "integer", "minimum": 1}
            ),
            "WWW-Authenticate": _header(
                'Why the token was refused (RFC 6750): `Bearer realm="likestream"` and, '
                "when a token was sent, `error` and `error_description`.",
                {"type": "string", "pattern": '^Bearer realm="likestream"'},
            ),
            "Stale": _header(
                "Not from the owner's table: from a replica.", {"const": "true"}, False
            ),
            "StaleMs": _header(
                "The answer includes every event committed more than this many ms before it.",
                {"type": "integer", "minimum": 0},
                False,
            ),
            "NoStore": _header("Not to be cached.", {"const": "no-store"}),
        },
        "schemas": {
            "Error": ERROR,
            "Readiness": {
                "type": "object",
                "required": ["ready"],
                "properties": {"ready": {"type": "boolean"}},
            },
            "TrendingItem": {
                "type": "object",
                "required": ["item_id", "likes"],
                "properties": {"item_id": ITEM_ID_SCHEMA, "likes": {"type": "integer"}},
            },
            "Trending": {
                "type": "object",
                "required": ["window", "items"],
                "properties": {
                    "window": WINDOW,
                    "items": {
                        "type": "array",
                        "maxItems": MAX_LIMIT,
                        "items": _ref("TrendingItem"),
                    },
                },
            },
            **FRAMES,
        },
    },
}

OPENAPI = web.AppKey("openapi", bytes)

spec_routes = web.RouteTableDef()


def _public_routes(app: web.Application) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method == hdrs.METH_HEAD:
            continue  # aiohttp adds a HEAD to every GET
        routes.add((route.method, resource.canonical))
    return routes - INTERNAL_ROUTES


def served_document(app: web.Application) -> Json:
    """:data:`DOCUMENT` as ``app`` serves it: only its routes, its trending windows, and no
    token for memberships when they are public."""
    doc = copy.deepcopy(DOCUMENT)
    served = _public_routes(app)
    paths: Json = {}
    for path, operations in doc["paths"].items():
        kept = {m: op for m, op in operations.items() if (m.upper(), path) in served}
        if kept:
            paths[path] = kept
    doc["paths"] = paths
    board = app.get(TRENDING)
    if board is not None and "/trending" in paths:
        window = paths["/trending"]["get"]["parameters"][0]["schema"]
        window["enum"] = list(board.windows)
        window["default"] = board.default_window
    membership = paths.get("/items/{item_id}/likes/{user_id}", {}).get("get")
    if membership is not None and app[AUTH].public_memberships:
        membership["security"] = []
        for status in ("401", "403"):
            del membership["responses"][status]
    return doc


def install_spec(app: web.Application) -> None:
    """Serve the document of ``app`` as it is now: call it once every route is added."""
    app.router.add_routes(spec_routes)
    app[OPENAPI] = orjson.dumps(served_document(app))


@spec_routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json", charset="utf-8")


@spec_routes.get("/docs")
async def docs(request: web.Request) -> web.FileResponse:
    return _static_file("docs.html")
