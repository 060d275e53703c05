"""The JWT signing secret: ``LIKESTREAM_SECRET``, or a generated one in development.

Production (``LIKESTREAM_ENV=prod``) refuses a missing or weak secret. In
development an unset secret is generated once per machine and kept in
``dev-secret`` under the cache directory (``LIKESTREAM_CACHE_DIR``, default
``~/.cache/likestream``), readable by its owner only, so that every worker and
``likestream token`` on the machine sign and verify with the same key.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from ._broker import default_cache_dir
from ._settings import Settings, SettingsError

__all__ = ["MIN_SECRET_BYTES", "dev_secret", "dev_secret_path", "signing_secret", "weakness"]

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


def signing_secret(settings: Settings) -> str:
    """The secret to sign and verify tokens with; :class:`SettingsError` if prod has none."""
    given = settings.secret.get_secret_value() if settings.secret is not None else ""
    if not given:  # unset, or set to nothing
        if settings.env == "prod":
            raise SettingsError("LIKESTREAM_SECRET: required when LIKESTREAM_ENV=prod")
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
