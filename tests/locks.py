"""The hashed lock files of the image (``make lock``), read for the tests."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_LOCK = ROOT / "requirements.lock"
BUILD_LOCK = ROOT / "requirements-build.lock"

# The image's platforms: python:3.11-slim on Linux x86_64 and arm64.
PLATFORMS = tuple(
    {
        "implementation_name": "cpython",
        "os_name": "posix",
        "platform_machine": machine,
        "platform_python_implementation": "CPython",
        "platform_system": "Linux",
        "python_full_version": "3.11.15",
        "python_version": "3.11",
        "sys_platform": "linux",
    }
    for machine in ("x86_64", "aarch64")
)

_PIN_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>\S+)"
    r"(?:\s*;\s*(?P<marker>[^\\]+?))?\s*$"
)
_HASH_RE = re.compile(r"--hash=sha256:([0-9a-f]{64})$")


@dataclass(frozen=True)
class Pin:
    name: NormalizedName
    version: Version
    marker: Marker | None
    hashes: tuple[str, ...]

    def on_linux(self) -> bool:
        """Whether the image installs it on some platform of PLATFORMS."""
        return self.marker is None or any(self.marker.evaluate(dict(p)) for p in PLATFORMS)


def read_lock(path: Path) -> dict[NormalizedName, Pin]:
    """The pins of a ``pip-compile``-style lock: ``name==version [; marker]`` lines, each
    followed by its ``--hash`` lines; anything else a lock may not hold raises."""
    pins: dict[NormalizedName, Pin] = {}
    entries: list[list[str]] = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if raw[0].isspace():
            assert entries, f"{path.name}: a continuation before any pin: {raw!r}"
            entries[-1].append(line.removesuffix("\\").strip())
        else:
            entries.append([line.removesuffix("\\").strip()])
    for head, *options in entries:
        match = _PIN_RE.match(head)
        assert match, f"{path.name}: not an exact pin: {head!r}"
        hashes = []
        for option in options:
            found = _HASH_RE.match(option)
            assert found, f"{path.name}: unexpected option {option!r} for {head!r}"
            hashes.append(found.group(1))
        name = canonicalize_name(match["name"])
        assert name not in pins, f"{path.name}: {name} pinned twice"
        marker = Marker(match["marker"]) if match["marker"] else None
        pins[name] = Pin(name, Version(match["version"]), marker, tuple(hashes))
    return pins
