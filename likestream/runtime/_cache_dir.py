"""Where likestream keeps what outlives a process on a machine: the development secret
(``_secret.py``), and for the developer tools the Kafka jars, the broker's state and the
bench's peers."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir"]


def default_cache_dir() -> Path:
    """``LIKESTREAM_CACHE_DIR``, else ``~/.cache/likestream``."""
    env = os.environ.get("LIKESTREAM_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "likestream"
