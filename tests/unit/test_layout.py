"""The layout of DESIGN section 2: one-way imports, no generic top-level modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "tables": {"likestream.agents", "likestream.web"},
    "agents": {"likestream.web"},
    "web": {"likestream.agents"},
}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package: str) -> None:
    for path in (ROOT / package).glob("*.py"):
        bad = {
            name
            for name in imported(path)
            for banned in FORBIDDEN[package]
            if name == banned or name.startswith(banned + ".")
        }
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_only_the_likestream_namespace_is_installed(tmp_path: Path) -> None:
    code = (
        "import importlib.util as u, likestream.agents, likestream.tables, likestream.web;"
        "print([n for n in ('agents', 'tables', 'web') if u.find_spec(n)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
