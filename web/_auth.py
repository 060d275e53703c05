"""Bearer authentication (RFC 6750): the user is the token's subject.

Writes need a token; so do membership reads, whose user must be the token's own unless
memberships are public (``LIKESTREAM_PUBLIC_MEMBERSHIPS``). The tokens are checked by
``likestream.domain._tokens.Tokens``, built once per process; the identity provider's keys it
holds are read again in the background while the app runs (:func:`tokens_ctx`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass, field

from aiohttp import hdrs, web

from likestream.domain._tokens import InvalidToken, Tokens

from ._errors import ApiError

__all__ = ["AUTH", "USER", "Auth", "authenticate", "authorize_member", "tokens_ctx"]

REALM = 'Bearer realm="likestream"'
USER: ContextVar[str | None] = ContextVar("likestream_user", default=None)
"""The authenticated user of the request being served, for the access log (which sets
it to None around each request)."""


@dataclass(frozen=True)
class Auth:
    tokens: Tokens = field(default_factory=Tokens)
    """Default: no keys, so no token is accepted."""
    public_memberships: bool = False


AUTH = web.AppKey("auth", Auth)


async def authenticate(request: web.Request) -> str:
    """The user id of the request's bearer token; 401 with ``WWW-Authenticate`` otherwise.
    Without I/O for a token whose key is known (always, for HS256)."""
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    if not header:
        # RFC 6750 section 3.1: no error code when no credentials were sent.
        raise ApiError(401, "unauthorized", "an Authorization: Bearer token is required", _www())
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "invalid_request",
            "expected Authorization: Bearer <token>",
            _www("invalid_request", "expected a Bearer token"),
        )
    try:
        user = await request.app[AUTH].tokens.verify_async(token.strip())
    except InvalidToken as exc:
        raise ApiError(401, "invalid_token", str(exc), _www("invalid_token", str(exc))) from None
    USER.set(user)
    return user


async def authorize_member(request: web.Request, user: str) -> None:
    """A membership read of ``user``: allowed when memberships are public, else only with
    a token of that user (401 without a valid one, 403 with another user's)."""
    if request.app[AUTH].public_memberships:
        return
    if await authenticate(request) != user:
        raise ApiError(
            403, "forbidden", "a token may read only its own user's memberships", _www_scope()
        )


def _www(error: str | None = None, description: str = "") -> dict[str, str]:
    if error is None:
        return {hdrs.WWW_AUTHENTICATE: REALM}
    # The description is a quoted-string: keep it to plain printable characters.
    safe = "".join(c for c in description if c.isascii() and c.isprintable() and c not in '"\\')
    return {
        hdrs.WWW_AUTHENTICATE: f'{REALM}, error="{error}", error_description="{safe}"',
    }


def _www_scope() -> dict[str, str]:
    # RFC 6750 section 3.1: a valid token without the rights is insufficient_scope.
    return _www("insufficient_scope", "the token's subject is another user")


async def tokens_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the identity provider's keys are read again periodically."""
    jwks = app[AUTH].tokens.jwks
    task = asyncio.create_task(jwks.keep_fresh()) if jwks is not None else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
