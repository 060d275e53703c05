"""What a process proves and checks with, built once at start-up from the settings.

Every check of the token and internal-secret settings happens here, before anything
else runs: a worker or gateway that would accept forged tokens does not start.
Production requires an issuer and an audience, the internal secret, and either
``LIKESTREAM_SECRET`` or ``LIKESTREAM_JWKS_URL`` (https, readable at start-up).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from likestream.config._settings import Settings, SettingsError
from likestream.domain._tokens import TokenPolicy, Tokens
from likestream.runtime._jwks import JwksError, JwksKeys
from likestream.runtime._secret import internal_secret, previous_secrets, signing_secret

__all__ = ["Credentials", "load_credentials", "token_policy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credentials:
    tokens: Tokens
    """Verifies bearer tokens; mints them when there is an HS256 secret."""
    internal_secret: str
    """Key of ``web._reads.forwarding_proof`` and of the user-id hashes in logs."""


def token_policy(settings: Settings) -> TokenPolicy:
    """Issuer, audience and lifetime every token must have; prod requires the first two."""
    if settings.env == "prod":
        for name in ("jwt_issuer", "jwt_audience"):
            if getattr(settings, name) is None:
                raise SettingsError(
                    f"LIKESTREAM_{name.upper()}: required when LIKESTREAM_ENV=prod "
                    "(tokens of other issuers or for other services must not be accepted)"
                )
    return TokenPolicy(
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        max_lifetime=settings.jwt_max_lifetime_s,
    )


def load_credentials(settings: Settings) -> Credentials:
    """The checked credentials; :class:`SettingsError` naming the variable otherwise.
    Reads the identity provider's keys (blocking) when ``jwks_url`` is set."""
    policy = token_policy(settings)
    internal = internal_secret(settings)
    signing, previous = signing_secret(settings), previous_secrets(settings)
    jwks = None
    if settings.jwks_url is not None:
        jwks = _jwks(settings, settings.jwks_url)
    return Credentials(Tokens(signing, previous, policy, jwks), internal)


def _jwks(settings: Settings, url: str) -> JwksKeys:
    if settings.env == "prod" and not url.startswith("https://"):
        raise SettingsError("LIKESTREAM_JWKS_URL: must be https:// when LIKESTREAM_ENV=prod")
    keys = JwksKeys(url, settings.jwks_refresh_s)
    try:
        keys.load()
    except JwksError as exc:
        if settings.env == "prod":
            raise SettingsError(f"LIKESTREAM_JWKS_URL: {exc}") from None
        log.warning("LIKESTREAM_JWKS_URL: %s; reading it again later (dev only)", exc)
    return keys
