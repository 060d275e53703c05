"""A missing Java or Maven is one clear line, not a stack trace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def run_start(tmp_path: Path, path: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path, "LIKESTREAM_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "likestream",
            "broker",
            "start",
            "--port",
            "1",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_missing_java(tmp_path: Path) -> None:
    done = run_start(tmp_path, str(tmp_path / "empty"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "likestream: Java 17+ is needed for the embedded broker: install it "
        "(apt-get install openjdk-17-jre-headless)"
    ]


def test_missing_maven(tmp_path: Path) -> None:
    java = shutil.which("java")
    assert java is not None
    only_java = tmp_path / "bin"
    only_java.mkdir()
    (only_java / "java").symlink_to(java)
    done = run_start(tmp_path, str(only_java))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "likestream: Maven is needed to fetch Kafka: install it (apt-get install maven)"
    ]
