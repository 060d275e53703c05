"""docs/ARCHITECTURE.md cannot drift silently: what it names exists, and what names it finds it.

Every link into a section of the document (``ARCHITECTURE.md#`` and a heading's anchor),
wherever it is written (code comments, docstrings, the README), must be a heading of the
document; every file it names must exist; every ``LIKESTREAM_*`` it names must be a
setting; the README's settings table, which the document links instead of keeping a
copy, must list every setting.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from likestream.config._settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
README = ROOT / "README.md"

TEXT_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".js", ".html", ".cfg", ".ini", ".txt"}
TEXT_NAMES = {"Makefile", "Dockerfile"}
SKIP_DIRS = {
    ".git",
    ".venv",
    "node_modules",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "bench-results",
    "test-artifacts",
    "data",
}
# Paths the document may name: the repository's own top-level folders.
PATH_RE = re.compile(r"(?<![\w./-])((?:likestream|agents|tables|web|tests|k8s|docs)/[\w./-]*)")
ANCHOR_RE = re.compile(r"ARCHITECTURE\.md#([\w-]+)")
SETTING_RE = re.compile(r"\b" + ENV_PREFIX + r"[A-Z0-9_]+\b")


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    found: set[str] = set()
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            found.add(slug(line.lstrip("#")))
    return found


def repository_texts() -> Iterator[Path]:
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            path = Path(folder) / name
            if path.suffix in TEXT_SUFFIXES or name in TEXT_NAMES:
                yield path


def setting_names() -> set[str]:
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def section(markdown: str, title: str) -> str:
    """The text of the ``## title`` section."""
    start = markdown.index(f"\n## {title}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end != -1 else None]


def test_slug_follows_github() -> None:
    assert slug(" What a read may return") == "what-a-read-may-return"
    assert slug("Newcomer's path") == "newcomers-path"
    assert slug("HTTP API (reads)") == "http-api-reads"


def test_every_reference_to_the_document_names_one_of_its_sections() -> None:
    known = anchors(DOC.read_text())
    referenced: dict[str, list[str]] = {}
    for path in repository_texts():
        for anchor in ANCHOR_RE.findall(path.read_text(errors="replace")):
            referenced.setdefault(anchor, []).append(str(path.relative_to(ROOT)))
    assert len(referenced) >= 4  # the walk found the references (code, tests, README)
    missing = {a: where for a, where in referenced.items() if a not in known}
    assert not missing, f"anchors not in docs/ARCHITECTURE.md: {missing}"


def test_the_document_links_only_sections_that_exist() -> None:
    text = DOC.read_text()
    own = set(re.findall(r"\]\(#([\w-]+)\)", text))
    assert own - anchors(text) == set()
    readme = set(re.findall(r"README\.md#([\w-]+)", text))
    assert readme - anchors(README.read_text()) == set()


def test_no_reference_to_the_old_design_page_is_left() -> None:
    # The contract was once cited as an outside page in capitals; it is this document now.
    old = "DE" + "SIGN"
    stale = [
        str(path.relative_to(ROOT))
        for path in repository_texts()
        if re.search(rf"\b{old}\b", path.read_text(errors="replace"))
    ]
    assert not stale, f"point these into docs/ARCHITECTURE.md instead: {stale}"


@pytest.mark.parametrize("doc", [DOC, README], ids=["architecture", "readme-newcomers-path"])
def test_the_files_the_documents_name_exist(doc: Path) -> None:
    text = doc.read_text()
    if doc == README:
        text = section(text, "Newcomer's path")
    named = {match.rstrip(".") for match in PATH_RE.findall(text)}
    assert len(named) >= 10
    missing = sorted(name for name in named if not (ROOT / name).exists())
    assert not missing, f"{doc.name} names files that do not exist: {missing}"


def test_the_settings_the_document_names_exist() -> None:
    named = set(SETTING_RE.findall(DOC.read_text()))
    assert len(named) >= 10
    assert named - setting_names() == set()


def test_the_readme_settings_table_lists_every_setting() -> None:
    rows = [
        line
        for line in section(README.read_text(), "Settings").splitlines()
        if line.startswith("|")
    ]
    listed = set(SETTING_RE.findall("\n".join(rows)))
    assert setting_names() - listed == set(), "add them to README's Settings table"
    assert listed - setting_names() == set()
