"""The secrets: the HS256 token key ``LIKESTREAM_SECRET`` (or a generated one in
development), the former keys still verifying, and the internal secret.

Production (``LIKESTREAM_ENV=prod``) refuses a weak secret, and a missing one unless
tokens come from an identity provider (``LIKESTREAM_JWKS_URL``). In development an
unset secret is generated once per machine and kept in ``dev-secret`` under the cache
directory (``LIKESTREAM_CACHE_DIR``, default ``~/.cache/likestream``), readable by its
owner only, so that every worker and ``likestream token`` on the machine sign and
verify with the same key.

The internal secret keys what processes prove to each other (forwarded reads) and the
user-id hashes in logs. Production requires its own (a token key is not one: with an
identity provider there is none); development derives it from the signing secret, so
the processes of one machine (or sharing ``LIKESTREAM_SECRET``) agree.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from likestream.config._settings import Settings, SettingsError
from likestream.runtime._cache_dir import default_cache_dir

__all__ = [
    "MIN_SECRET_BYTES",
    "dev_secret",
    "dev_secret_path",
    "internal_secret",
    "previous_secrets",
    "signing_secret",
    "weakness",
]

log = logging.getLogger(__name__)

# HS256 keys shorter than its 32-byte digest are below RFC 7518's minimum.
MIN_SECRET_BYTES = 32
MIN_DISTINCT_CHARS = 8


def weakness(secret: str) -> str | None:
    """Why ``secret`` is too weak to sign tokens with, or None."""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        return f"shorter than {MIN_SECRET_BYTES} bytes"
    if len(set(secret)) < MIN_DISTINCT_CHARS:
        return f"fewer than {MIN_DISTINCT_CHARS} different characters"
    return None


def signing_secret(settings: Settings) -> str | None:
    """The HS256 secret to sign and verify tokens with: None in prod when tokens come only
    from the identity provider; :class:`SettingsError` if prod has neither, or a weak one."""
    given = settings.secret.get_secret_value() if settings.secret is not None else ""
    if not given:  # unset, or set to nothing
        if settings.env == "prod":
            if settings.jwks_url is not None:
                return None
            raise SettingsError(
                "LIKESTREAM_SECRET: required when LIKESTREAM_ENV=prod "
                "(or LIKESTREAM_JWKS_URL, for tokens from an identity provider)"
            )
        path = dev_secret_path()
        log.warning(
            "LIKESTREAM_SECRET is not set: using the development secret in %s "
            "(dev only; production requires LIKESTREAM_SECRET)",
            path,
        )
        return dev_secret(path)
    problem = weakness(given)
    if problem is not None:
        if settings.env == "prod":
            raise SettingsError(
                f"LIKESTREAM_SECRET: too weak ({problem}); use e.g. "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
            )
        log.warning("LIKESTREAM_SECRET is weak (%s): refused when LIKESTREAM_ENV=prod", problem)
    return given


def previous_secrets(settings: Settings) -> list[str]:
    """``LIKESTREAM_PREVIOUS_SECRETS``: former HS256 keys that still verify."""
    raw = settings.previous_secrets
    found = [s.strip() for s in raw.get_secret_value().split(",")] if raw is not None else []
    found = [s for s in found if s]
    for number, secret in enumerate(found, 1):
        problem = weakness(secret)
        if problem is not None and settings.env == "prod":
            raise SettingsError(
                f"LIKESTREAM_PREVIOUS_SECRETS: secret {number} too weak ({problem})"
            )
    return found


def internal_secret(settings: Settings) -> str:
    """The key of what processes prove to each other; :class:`SettingsError` if prod has
    none, a weak one, or the token key again."""
    given = settings.internal_secret.get_secret_value() if settings.internal_secret else ""
    if settings.env == "prod":
        if not given:
            raise SettingsError(
                "LIKESTREAM_INTERNAL_SECRET: required when LIKESTREAM_ENV=prod; use e.g. "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
            )
        problem = weakness(given)
        if problem is not None:
            raise SettingsError(f"LIKESTREAM_INTERNAL_SECRET: too weak ({problem})")
        token_keys = [settings.secret, settings.previous_secrets]
        if any(k is not None and given in k.get_secret_value().split(",") for k in token_keys):
            raise SettingsError(
                "LIKESTREAM_INTERNAL_SECRET: must differ from the token secrets "
                "(LIKESTREAM_SECRET, LIKESTREAM_PREVIOUS_SECRETS)"
            )
        return given
    if given:
        return given
    # Dev: the token key may be the on-disk one or LIKESTREAM_SECRET; either way every
    # process of the machine has the same, and so derives the same internal secret.
    token_key = settings.secret.get_secret_value() if settings.secret is not None else ""
    base = token_key or dev_secret(dev_secret_path())
    return hmac.new(base.encode(), b"likestream internal secret v1", hashlib.sha256).hexdigest()


def dev_secret_path() -> Path:
    return default_cache_dir() / "dev-secret"


def dev_secret(path: Path) -> str:
    """The secret stored at ``path``, generated there first if missing."""
    if not path.exists():
        _create(path, secrets.token_urlsafe(48))
    return path.read_text().strip()


def _create(path: Path, secret: str) -> None:
    # Written in full to a private temporary file, then linked into place: a
    # process starting at the same moment sees either no file or the whole
    # secret, and the first link wins.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secret + "\n")
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
