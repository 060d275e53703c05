"""The layout of docs/ARCHITECTURE.md#layout: one-way imports, no generic top-level modules."""

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


KAFKA_CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient"}
FACTORY = ROOT / "likestream" / "kafka" / "_factory.py"


def _constructions(path: Path) -> list[str]:
    """aiokafka clients built in ``path``, and calls given faust's ``broker=``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if name in KAFKA_CLIENTS:
            found.append(f"{name}(...) at line {node.lineno}")
        if any(k.arg in ("broker", "bootstrap_servers") for k in node.keywords):
            found.append(f"{name}(broker=/bootstrap_servers=...) at line {node.lineno}")
    return found


def test_kafka_clients_come_from_the_one_factory() -> None:
    """Every Kafka connection gets the security settings: none is built by hand."""
    paths = [
        path
        for folder in ("likestream", "web", "agents", "tables", "tests")
        for path in (ROOT / folder).rglob("*.py")
        if path != FACTORY and ".venv" not in path.parts
    ]
    assert len(paths) > 50  # the walk found the code
    bad = {str(p.relative_to(ROOT)): c for p in paths if (c := _constructions(p))}
    assert bad == {}, "build Kafka clients with likestream.kafka._factory.KafkaConfig"
    assert _constructions(FACTORY)  # the check sees them where they are
