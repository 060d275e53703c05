"""Bearer tokens for the write API: HS256 JWTs whose ``sub`` is the user id.

The algorithm is pinned: a token whose header names any other algorithm
(``none`` included) is refused before its signature is looked at.
"""

from __future__ import annotations

import time

import jwt

from ._schema import is_valid_id

__all__ = ["ALGORITHM", "InvalidToken", "mint_token", "verify_token"]

ALGORITHM = "HS256"


class InvalidToken(ValueError):
    """A token that must not be accepted; ``str(exc)`` says why, safe to show the caller."""


def mint_token(secret: str, user_id: str, ttl_seconds: int) -> str:
    """A token for ``user_id`` that expires ``ttl_seconds`` from now."""
    if not is_valid_id(user_id):
        raise ValueError("user id must be 1-128 characters of [A-Za-z0-9._:@-]")
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    now = int(time.time())
    claims = {"sub": user_id, "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> str:
    """The user id of a valid token; :class:`InvalidToken` otherwise."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("token expired") from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"token has no {exc.claim!r} claim") from None
    except jwt.InvalidAlgorithmError:
        raise InvalidToken(f"token is not signed with {ALGORITHM}") from None
    except jwt.InvalidSignatureError:
        raise InvalidToken("token signature does not verify") from None
    except jwt.DecodeError as exc:
        raise InvalidToken(f"token is malformed: {exc}") from None
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"token is invalid: {exc}") from None
    user = claims["sub"]
    if not is_valid_id(user):
        raise InvalidToken("token subject is not a valid user id")
    return str(user)
