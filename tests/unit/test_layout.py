"""The layout of docs/ARCHITECTURE.md#layout: rooms by role, imports pointing one way.

likestream/ holds five rooms and the public modules; agents/, tables/ and web/ live at the
repository root and are installed as likestream.agents, likestream.tables, likestream.web.
From the bottom up:

* ``likestream.domain`` (pure rules): imports nothing else from likestream;
* ``likestream.config`` (the settings): only the domain and itself;
* ``likestream.kafka`` (Kafka I/O): only the domain, the settings and itself;
* ``likestream/client.py`` (the public producer client): only those three;
* tables/, agents/, web/: the domain, the settings, Kafka I/O, ``likestream.client`` and, of the
  runtime, only ``_metrics``, ``_logging`` and ``_pids`` (which themselves import nothing
  above Kafka I/O); tables/ none of agents/ and web/, agents/ not web/, web/ not agents/;
* ``likestream.runtime`` (processes and wiring): anything above, never the developer
  tools, ``cli`` or ``api_client``;
* ``likestream/api_client.py`` (the public API client): the domain and ``runtime._live``;
* ``likestream.devtools`` (broker, bench; not in the production image): imported by
  nothing but ``likestream/cli.py``, inside the commands that run them, and the tests.

Relative imports count as what they resolve to; every module of likestream/ must be in a
room or be one of the public modules.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "likestream"
ROOMS = ("domain", "config", "kafka", "runtime", "devtools")
PUBLIC = {"__init__.py", "__main__.py", "client.py", "api_client.py", "cli.py"}
SHARED_RUNTIME = (
    "likestream.runtime._metrics",
    "likestream.runtime._logging",
    "likestream.runtime._pids",
)
DOMAIN = ("likestream.domain",)
CONFIG = (*DOMAIN, "likestream.config")
KAFKA_IO = (*CONFIG, "likestream.kafka")
BESIDE_THE_APP = (*KAFKA_IO, "likestream.client", *SHARED_RUNTIME)
# module prefix -> the likestream modules it may import (its own package always)
ALLOWED: dict[str, tuple[str, ...]] = {
    "likestream.domain": DOMAIN,
    "likestream.config": CONFIG,
    "likestream.kafka": KAFKA_IO,
    "likestream.client": KAFKA_IO,
    "likestream.api_client": (*DOMAIN, "likestream.runtime._live"),
    **{name: KAFKA_IO for name in SHARED_RUNTIME},
    "likestream.tables": (*BESIDE_THE_APP, "likestream.tables"),
    "likestream.agents": (*BESIDE_THE_APP, "likestream.tables", "likestream.agents"),
    "likestream.web": (*BESIDE_THE_APP, "likestream.tables", "likestream.web"),
}
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "likestream.runtime": ("likestream.devtools", "likestream.cli", "likestream.api_client"),
}
DEVTOOLS = "likestream.devtools"


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def modules() -> Iterator[tuple[str, Path]]:
    """Every module of the installed likestream package: (dotted name, file)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("agents", "tables", "web") or ".venv" in path.parts:
            continue  # the symlinks: walked below at their real place
        yield _dotted(("likestream", *rel.parts)), path
    for folder in ("agents", "tables", "web"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield _dotted(("likestream", *path.relative_to(ROOT).parts)), path


def _dotted(parts: tuple[str, ...]) -> str:
    name = ".".join(parts).removesuffix(".py")
    return name.removesuffix(".__init__")


def imported(path: Path, module: str, top_level_only: bool = False) -> set[str]:
    """The likestream modules (and names) ``path`` imports, relative imports resolved."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # module level, including under if/try, not inside functions
        nodes = [n for top in tree.body for n in _not_in_functions(top)]
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if n.startswith("likestream.")}


def _not_in_functions(node: ast.AST) -> Iterator[ast.AST]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        return
    yield node
    for child in ast.iter_child_nodes(node):
        yield from _not_in_functions(child)


def test_every_module_is_in_a_room() -> None:
    loose = [
        str(path.relative_to(ROOT)) for path in PACKAGE.glob("*.py") if path.name not in PUBLIC
    ]
    assert loose == [], "put each module in a room: likestream/{domain,kafka,runtime,devtools}"
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        *ROOMS,
        "agents",
        "tables",
        "web",
    }
    for room in ROOMS:
        init = PACKAGE / room / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{room}: say its role"
        assert "docs/ARCHITECTURE.md#layout" in doc, f"{room}: point to its rule"


def test_imports_point_one_way() -> None:
    """The rules of this module's docstring, for every module of likestream."""
    walked = 0
    bad: dict[str, set[str]] = {}
    for module, path in modules():
        walked += 1
        names = imported(path, module)
        own = module if path.name == "__init__.py" else module.rpartition(".")[0]
        allowed = next(
            (
                v
                for k, v in sorted(ALLOWED.items(), key=lambda kv: -len(kv[0]))
                if _under(module, (k,))
            ),
            None,
        )
        if allowed is not None:
            wrong = {n for n in names if not _under(n, (*allowed, own))}
        else:
            banned = next((v for k, v in FORBIDDEN.items() if _under(module, (k,))), ())
            wrong = {n for n in names if _under(n, banned)}
        if wrong:
            bad[str(path.relative_to(ROOT))] = wrong
    assert walked > 100  # the walk found the subpackages too
    assert bad == {}


def test_only_the_cli_imports_the_developer_tools_and_only_when_run() -> None:
    """The production image has no likestream/devtools: importing it anywhere but inside
    the cli's broker and bench commands would break a worker or a gateway there."""
    users = {
        str(path.relative_to(ROOT))
        for module, path in modules()
        if not _under(module, (DEVTOOLS,)) and _under_any(imported(path, module), DEVTOOLS)
    }
    assert users == {"likestream/cli.py"}
    cli = PACKAGE / "cli.py"
    assert not _under_any(imported(cli, "likestream.cli", top_level_only=True), DEVTOOLS)


def _under_any(names: set[str], prefix: str) -> bool:
    return any(_under(n, (prefix,)) for n in names)


# A process where likestream.devtools cannot be imported, as in the production image.
WITHOUT_DEVTOOLS = "import sys; sys.modules['likestream.devtools'] = None; "


def test_the_production_image_leaves_out_the_developer_tools() -> None:
    """The Dockerfile removes likestream/devtools after copying the package and before
    installing it, in the same step, and checks it is absent."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    steps = [" ".join(line.split()) for line in text.splitlines() if not line.startswith("#")]
    copy = steps.index("COPY likestream ./likestream")
    install = next(i for i, s in enumerate(steps) if "pip install --no-deps" in s)
    assert copy < install
    step = steps[install]
    assert step.startswith("RUN rm -rf likestream/devtools &&"), step
    assert 'find_spec("likestream.devtools")' in step
    assert all("likestream/devtools" not in s for s in steps[:copy] if s.startswith("COPY"))


def test_everything_but_the_developer_tools_imports_without_them() -> None:
    names = [m for m, _ in modules() if not _under(m, (DEVTOOLS,)) and m != "likestream.__main__"]
    code = WITHOUT_DEVTOOLS + "import importlib; [importlib.import_module(n) for n in sys.argv[1:]]"
    run = subprocess.run(
        [sys.executable, "-c", code, *names], capture_output=True, text=True, cwd=ROOT
    )
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize(
    "argv", [["broker", "start"], ["broker", "status"], ["bench", "ingest"], ["bench"]]
)
def test_the_cli_says_the_developer_tools_are_not_installed(argv: list[str]) -> None:
    code = WITHOUT_DEVTOOLS + "from likestream.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "LIKESTREAM_CACHE_DIR": "/nonexistent"}
    run = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert run.returncode == 2
    assert f"likestream {argv[0]}: developer tools are not in this install" in run.stderr
    assert "Traceback" not in run.stderr
    assert run.stdout == ""


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
