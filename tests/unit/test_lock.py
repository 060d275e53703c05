"""The image's locks agree with pyproject.toml: ``make lock`` after every dependency change.

requirements.lock pins every runtime dependency and everything they pull in, each with
the hashes of its files; requirements-build.lock the tools that build them
(Dockerfile). ``make install`` installs requirements.lock first, so the packages
installed here are the image's, and their metadata says what each one needs.
"""

from __future__ import annotations

import tomllib
from collections import deque
from importlib import metadata

import pytest
from locks import BUILD_LOCK, PLATFORMS, ROOT, RUNTIME_LOCK, Pin, read_lock
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

RELOCK = "run `make lock` (and `make install`)"


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _runtime_requirements() -> list[Requirement]:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    return [Requirement(r) for r in project["dependencies"]]


def _applies(req: Requirement, extra: str = "") -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**p, "extra": extra}) for p in PLATFORMS)


def _satisfied(req: Requirement, pins: dict[NormalizedName, Pin], why: str) -> Pin:
    pin = pins.get(canonicalize_name(req.name))
    assert pin is not None, f"{req} ({why}) is not in requirements.lock: {RELOCK}"
    assert req.specifier.contains(pin.version, prereleases=True), (
        f"requirements.lock pins {pin.name}=={pin.version}, {why} needs {req}: {RELOCK}"
    )
    assert pin.on_linux(), f"{pin.name} is pinned only off Linux"
    return pin


def test_every_pin_is_exact_and_hashed() -> None:
    for path in (RUNTIME_LOCK, BUILD_LOCK):
        pins = read_lock(path)
        assert len(pins) >= 5, path.name
        for pin in pins.values():
            assert pin.hashes, f"{path.name}: {pin.name} has no --hash"


def test_the_lock_pins_every_runtime_dependency() -> None:
    pins = read_lock(RUNTIME_LOCK)
    for req in _runtime_requirements():
        if _applies(req):
            _satisfied(req, pins, "pyproject.toml")


def test_the_lock_is_closed_under_the_installed_metadata() -> None:
    """Everything a locked package needs on the image's platforms is locked too (pip's
    --require-hashes refuses an unpinned one at build time). What each needs comes from
    its installed metadata: the installed version must be the locked one."""
    pins = read_lock(RUNTIME_LOCK)
    wanted: deque[tuple[Requirement, str]] = deque(
        (r, "pyproject.toml") for r in _runtime_requirements() if _applies(r)
    )
    seen: set[tuple[NormalizedName, str]] = set()
    while wanted:
        req, why = wanted.popleft()
        pin = _satisfied(req, pins, why)
        installed = metadata.distribution(pin.name)
        assert installed.version == str(pin.version), (
            f"{pin.name} {installed.version} is installed, the lock has {pin.version}: {RELOCK}"
        )
        for extra in ("", *sorted(req.extras)):
            if (pin.name, extra) in seen:
                continue
            seen.add((pin.name, extra))
            for text in installed.requires or []:
                sub = Requirement(text)
                if _applies(sub, extra):
                    wanted.append((sub, f"{pin.name}[{extra}]" if extra else pin.name))
    needed = {name for name, _ in seen}
    unused = {p.name for p in pins.values() if p.on_linux()} - needed
    assert unused == set(), f"locked but needed by nothing: {RELOCK}"


def test_the_build_lock_builds_the_project_and_agrees_with_the_runtime_lock() -> None:
    build, runtime = read_lock(BUILD_LOCK), read_lock(RUNTIME_LOCK)
    system = _pyproject()["build-system"]
    assert isinstance(system, dict)
    for text in system["requires"]:
        pin = build.get(canonicalize_name(Requirement(text).name))
        assert pin is not None, f"{text} ([build-system]) is not in requirements-build.lock"
        assert Requirement(text).specifier.contains(pin.version)
    for text in (ROOT / "requirements-build.in").read_text().splitlines():
        if text.strip() and not text.startswith("#"):
            req = Requirement(text)
            pin = build.get(canonicalize_name(req.name))
            assert pin is not None, f"{req}: {RELOCK}"
            assert req.specifier.contains(pin.version), f"{req}: {RELOCK}"
    # Installed one after the other into one venv: a package in both, one version.
    for name in build.keys() & runtime.keys():
        assert build[name].version == runtime[name].version, f"{name}: {RELOCK}"


@pytest.mark.parametrize("broken", ["pin", "hash"])
def test_the_reader_refuses_a_loose_lock(tmp_path: pytest.TempPathFactory, broken: str) -> None:
    text = {
        "pin": "aiohttp>=3.9 \\\n    --hash=sha256:" + "0" * 64 + "\n",
        "hash": "aiohttp==3.9.0 \\\n    --hash=md5:abc\n",
    }[broken]
    path = tmp_path / "x.lock"  # type: ignore[operator]
    path.write_text(text)
    with pytest.raises(AssertionError):
        read_lock(path)
