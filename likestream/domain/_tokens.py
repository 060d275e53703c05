"""Bearer tokens: JWTs whose ``sub`` is the user id, checked against one policy.

Two kinds of keys, never mixed:

- **HS256 secrets** (``LIKESTREAM_SECRET`` signs, ``LIKESTREAM_PREVIOUS_SECRETS`` still
  verify): for development, ``likestream token`` and ``POST /dev/token``. Each secret's
  ``kid`` is derived from it (:func:`key_id`), so a token names the key it was signed with
  and a rotated-out secret simply stops matching;
- **RS256/ES256 public keys** of an identity provider, from its JWKS (``_jwks.py``): no
  process holds a key that can sign.

The header's ``alg`` picks the kind and its ``kid`` the key: an HS256 token is checked
only against the secrets, an RS256/ES256 one only against a JWKS key of that type (so a
token "signed" with a public key as an HMAC secret finds no key), and every other
algorithm (``none`` included) is refused before any key is looked at. Every token must
carry ``sub``, ``iat`` and ``exp``, live at most the policy's maximum lifetime, and match
its issuer and audience when the policy names them.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

from likestream.domain._schema import is_valid_id

__all__ = [
    "ALGORITHM",
    "PUBLIC_KEY_ALGORITHMS",
    "InvalidToken",
    "KeySet",
    "TokenPolicy",
    "Tokens",
    "UnknownKey",
    "key_id",
    "mint_token",
]

ALGORITHM = "HS256"
# Each public-key algorithm with the JWK key type it needs.
PUBLIC_KEY_ALGORITHMS = {"RS256": "RSA", "ES256": "EC"}
# Clock skew between the token's issuer and this process, seconds.
LEEWAY = 30


class InvalidToken(ValueError):
    """A token that must not be accepted; ``str(exc)`` says why, safe to show the caller."""


class UnknownKey(InvalidToken):
    """A public-key token whose ``kid`` is not in the key set as last read: reading the set
    again may find it (the identity provider added a key)."""


@dataclass(frozen=True)
class TokenPolicy:
    issuer: str | None = None
    """Required ``iss``; None: not checked (dev)."""
    audience: str | None = None
    """Required ``aud``; None: a token must carry none."""
    max_lifetime: int = 86_400
    """The most ``exp - iat`` may be, seconds: a stolen token is good for at most this."""


class KeySet(Protocol):
    """The public keys of an identity provider, as last read (``_jwks.JwksKeys``)."""

    def get(self, kid: str) -> jwt.PyJWK | None: ...

    async def refresh(self) -> bool:
        """Read the set again unless it was read very recently; whether it was."""
        ...

    async def keep_fresh(self) -> None:
        """Read the set again periodically, forever (runs with the web app)."""
        ...


def key_id(secret: str) -> str:
    """The ``kid`` of an HS256 secret: derived from it, revealing nothing about it."""
    return hmac.new(secret.encode(), b"likestream kid v1", hashlib.sha256).hexdigest()[:16]


def mint_token(
    secret: str, user_id: str, ttl_seconds: int, policy: TokenPolicy | None = None
) -> str:
    """An HS256 token for ``user_id`` that expires ``ttl_seconds`` from now, with the
    policy's issuer and audience and the secret's ``kid``."""
    policy = policy or TokenPolicy()
    if not is_valid_id(user_id):
        raise ValueError("user id must be 1-128 characters of [A-Za-z0-9._:@-]")
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    if ttl_seconds > policy.max_lifetime:
        raise ValueError(
            f"ttl_seconds must be at most {policy.max_lifetime} (LIKESTREAM_JWT_MAX_LIFETIME_S)"
        )
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + ttl_seconds}
    if policy.issuer is not None:
        claims["iss"] = policy.issuer
    if policy.audience is not None:
        claims["aud"] = policy.audience
    return jwt.encode(claims, secret, algorithm=ALGORITHM, headers={"kid": key_id(secret)})


class Tokens:
    """Verifies bearer tokens (and mints HS256 ones when it has a secret). Built once per
    process from the settings (``_secret.tokens``)."""

    def __init__(
        self,
        signing: str | None = None,
        previous: Sequence[str] = (),
        policy: TokenPolicy | None = None,
        jwks: KeySet | None = None,
    ) -> None:
        """``signing``: the HS256 key that signs (and verifies); ``previous``: HS256 keys
        that only verify; ``jwks``: the identity provider's public keys."""
        self.policy = policy or TokenPolicy()
        self.jwks = jwks
        self._signing = signing
        self._secrets = {key_id(s): s for s in previous}
        if signing is not None:
            self._secrets[key_id(signing)] = signing

    @property
    def can_mint(self) -> bool:
        return self._signing is not None

    def mint(self, user_id: str, ttl_seconds: int) -> str:
        if self._signing is None:
            raise ValueError(
                "no LIKESTREAM_SECRET to sign with: tokens come from the identity provider"
            )
        return mint_token(self._signing, user_id, ttl_seconds, self.policy)

    async def verify_async(self, token: str) -> str:
        """:meth:`verify`, reading the key set again once when the token names a key it
        does not have (at most as often as ``KeySet.refresh`` allows)."""
        try:
            return self.verify(token)
        except UnknownKey:
            if self.jwks is None or not await self.jwks.refresh():
                raise
        return self.verify(token)

    def verify(self, token: str) -> str:
        """The user id of a valid token; :class:`InvalidToken` otherwise. Never does I/O."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"token is malformed: {exc}") from None
        alg, kid = header.get("alg"), header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("token kid is not a string")
        key: Any
        if alg == ALGORITHM:
            key = self._secret(kid)
        elif alg in PUBLIC_KEY_ALGORITHMS and self.jwks is not None:
            key = self._public_key(alg, kid)
        else:
            raise InvalidToken(f"token is not signed with {' or '.join(self._algorithms())}")
        return self._decode(token, key, alg)

    def _algorithms(self) -> list[str]:
        out = [ALGORITHM] if self._secrets else []
        return out + (list(PUBLIC_KEY_ALGORITHMS) if self.jwks is not None else [])

    def _secret(self, kid: str | None) -> str:
        if not self._secrets:
            raise InvalidToken("HS256 tokens are not accepted here: no LIKESTREAM_SECRET")
        if kid is None:
            # Tokens minted before kids: only the current secret may have signed them.
            if self._signing is None:
                raise InvalidToken("HS256 token has no kid")
            return self._signing
        found = self._secrets.get(kid)
        if found is None:
            raise InvalidToken("token kid names no secret of this service (rotated out?)")
        return found

    def _public_key(self, alg: str, kid: str | None) -> Any:
        assert self.jwks is not None
        if kid is None:
            raise InvalidToken(f"{alg} token has no kid")
        jwk = self.jwks.get(kid)
        if jwk is None:
            raise UnknownKey("token kid names no key of the identity provider")
        if jwk.key_type != PUBLIC_KEY_ALGORITHMS[alg] or jwk.algorithm_name != alg:
            raise InvalidToken(f"token kid names a {jwk.algorithm_name} key, not {alg}")
        return jwk.key

    def _decode(self, token: str, key: Any, alg: str) -> str:
        policy = self.policy
        required = ["sub", "iat", "exp"] + ["iss"] * (policy.issuer is not None)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=policy.issuer,
                audience=policy.audience,
                leeway=LEEWAY,
                options={"require": required},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"token has no {exc.claim!r} claim") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("token issuer is not accepted") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("token audience is not accepted") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidToken(f"token is not signed with {alg}") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("token signature does not verify") from None
        except jwt.DecodeError as exc:
            raise InvalidToken(f"token is malformed: {exc}") from None
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"token is invalid: {exc}") from None
        lifetime = int(claims["exp"]) - int(claims["iat"])  # both checked to be integers
        if lifetime > policy.max_lifetime:
            raise InvalidToken(
                f"token lives {lifetime}s, longer than the {policy.max_lifetime}s accepted"
            )
        user = claims["sub"]
        if not is_valid_id(user):
            raise InvalidToken("token subject is not a valid user id")
        return str(user)
