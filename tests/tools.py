"""The programs the tests run besides Python, installed by ``make tools`` (a step of
``make test`` and ``make unit``): a missing one fails its tests, never skips them."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from likestream.devtools._broker import default_cache_dir

__all__ = ["KUSTOMIZE_VERSION", "kustomize", "promtool"]

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"
# The one pin is the Makefile's; the directory is read now, before a test's clean
# environment can drop LIKESTREAM_CACHE_DIR.
KUSTOMIZE_VERSION = re.search(  # type: ignore[union-attr]
    r"^KUSTOMIZE_VERSION := (\S+)$", MAKEFILE.read_text(), flags=re.MULTILINE
)[1]
_KUSTOMIZE = default_cache_dir() / "tools" / f"kustomize-{KUSTOMIZE_VERSION}" / "kustomize"


def kustomize() -> str:
    """The pinned kustomize that ``make tools`` built."""
    if not _KUSTOMIZE.is_file():
        pytest.fail(f"kustomize {KUSTOMIZE_VERSION} is not built: run `make tools` ({_KUSTOMIZE})")
    return str(_KUSTOMIZE)


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: run `make tools` (Debian's prometheus package)")
    return found
