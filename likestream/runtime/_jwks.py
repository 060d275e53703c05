"""The identity provider's public keys (``LIKESTREAM_JWKS_URL``), read with PyJWT's
``PyJWKClient`` and kept in memory, so verifying a token never waits on the network.

The set is read at start-up, again every ``LIKESTREAM_JWKS_REFRESH_S`` (a key the
provider removed stops verifying then), and when a token names a key not in it (the
provider added one), but at most once per :data:`COOLDOWN_S`: tokens with made-up kids
cannot make this process hammer the provider. ``PyJWKClient`` reads with blocking
urllib, so reads off start-up run in a thread. A failed read keeps the keys of the last
good one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import jwt

from likestream.domain._tokens import PUBLIC_KEY_ALGORITHMS

__all__ = ["COOLDOWN_S", "JwksError", "JwksKeys", "parse_jwks"]

log = logging.getLogger(__name__)

COOLDOWN_S = 10.0
TIMEOUT_S = 5.0


class JwksError(RuntimeError):
    """The key set could not be read or has no usable key."""


def parse_jwks(doc: Any) -> dict[str, jwt.PyJWK]:
    """The signing keys of a JWK Set by kid: RSA (RS256) and EC P-256 (ES256) keys only;
    symmetric keys, keys for encryption, keys without a kid and keys PyJWT cannot read are
    left out (a public key set must never hand out an HMAC secret)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwksError('not a JWK Set (a JSON object with a "keys" list)')
    out: dict[str, jwt.PyJWK] = {}
    for entry in doc["keys"]:
        if not isinstance(entry, dict):
            continue
        kid, use = entry.get("kid"), entry.get("use", "sig")
        if not isinstance(kid, str) or use != "sig":
            continue
        if entry.get("kty") not in PUBLIC_KEY_ALGORITHMS.values():
            continue
        try:
            key = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError) as exc:
            log.warning("JWKS key %r left out: %s", kid[:64], exc)
            continue
        if PUBLIC_KEY_ALGORITHMS.get(key.algorithm_name) != key.key_type:
            continue  # e.g. an EC key on another curve, or RSA for PS256
        out[kid] = key
    return out


class JwksKeys:
    """The keys of one JWKS URL, as last read (``_tokens.KeySet``)."""

    def __init__(self, url: str, refresh_s: float, cooldown_s: float = COOLDOWN_S) -> None:
        self.url = url
        self.refresh_s = refresh_s
        self.cooldown_s = cooldown_s
        # Its own cache off: this class is the cache, and decides when to read again.
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=TIMEOUT_S)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._attempted = -float("inf")
        self._pending: asyncio.Future[bool] | None = None

    def get(self, kid: str) -> jwt.PyJWK | None:
        return self._keys.get(kid)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def load(self) -> None:
        """Read the set now (blocking); :class:`JwksError` if that fails."""
        self._attempted = time.monotonic()
        try:
            doc = self._client.fetch_data()
        except jwt.PyJWKClientError as exc:
            raise JwksError(f"cannot read {self.url}: {exc}") from None
        keys = parse_jwks(doc)
        if not keys:
            log.warning("the JWK Set at %s has no RS256/ES256 signing key", self.url)
        self._keys = keys

    async def refresh(self) -> bool:
        """Read the set again, unless it was read less than the cooldown ago; whether it
        was read. Concurrent callers share one read."""
        if self._pending is None:
            if time.monotonic() - self._attempted < self.cooldown_s:
                return False
            self._pending = asyncio.ensure_future(self._reload())
            self._pending.add_done_callback(self._done)
        return await asyncio.shield(self._pending)

    def _done(self, _: asyncio.Future[bool]) -> None:
        self._pending = None

    async def _reload(self) -> bool:
        try:
            await asyncio.to_thread(self.load)
        except JwksError as exc:
            log.warning("JWKS: %s; keeping the %d keys read before", exc, len(self._keys))
            return False
        return True

    async def keep_fresh(self) -> None:
        """Read the set every ``refresh_s`` seconds, forever (cancel to stop)."""
        while True:
            await asyncio.sleep(self.refresh_s)
            self._attempted = -float("inf")  # a scheduled read is never skipped
            await self.refresh()
