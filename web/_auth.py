"""Bearer authentication of the write API (RFC 6750): the user is the token's subject."""

from __future__ import annotations

from aiohttp import hdrs, web

from likestream._tokens import InvalidToken, verify_token

from ._errors import ApiError

__all__ = ["authenticate"]

REALM = 'Bearer realm="likestream"'


def authenticate(request: web.Request, secret: str) -> str:
    """The user id of the request's bearer token; 401 with ``WWW-Authenticate`` otherwise."""
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
        return verify_token(secret, token.strip())
    except InvalidToken as exc:
        raise ApiError(401, "invalid_token", str(exc), _www("invalid_token", str(exc))) from None


def _www(error: str | None = None, description: str = "") -> dict[str, str]:
    if error is None:
        return {hdrs.WWW_AUTHENTICATE: REALM}
    # The description is a quoted-string: keep it to plain printable characters.
    safe = "".join(c for c in description if c.isascii() and c.isprintable() and c not in '"\\')
    return {
        hdrs.WWW_AUTHENTICATE: f'{REALM}, error="{error}", error_description="{safe}"',
    }
