"""Progress bars of long CLI work: drawn on a terminal, nothing at all through a pipe."""

from __future__ import annotations

import io
import os
import pty
import sys
from collections.abc import Iterator

import pytest

from likestream.devtools._broker import _run_with_progress
from likestream.runtime._progress import progress_bar

MAVEN_LIKE = [
    sys.executable,
    "-c",
    "for i in range(3): print(f'Downloaded from central: https://repo/x{i}.jar')",
]


@pytest.fixture
def terminal() -> Iterator[tuple[io.TextIOWrapper, int]]:
    """A pseudo-terminal: the stream a process would have as stderr, and its reading end."""
    reader, writer = pty.openpty()
    stream = io.TextIOWrapper(os.fdopen(writer, "wb"), encoding="utf-8", write_through=True)
    yield stream, reader
    stream.close()
    os.close(reader)


def _drain(fd: int) -> str:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def test_a_pipe_gets_nothing() -> None:
    reader, writer = os.pipe()
    with (
        os.fdopen(writer, "w") as stream,
        progress_bar("producing", total=10, unit="events", stream=stream) as bar,
    ):
        assert not bar.shown
        for done in range(11):
            bar.update(done)
    with os.fdopen(reader, "rb") as out:
        assert out.read() == b""


def test_a_terminal_gets_a_bar(terminal: tuple[io.TextIOWrapper, int]) -> None:
    stream, reader = terminal
    with progress_bar("producing", total=10, unit="events", stream=stream) as bar:
        assert bar.shown
        for done in range(11):
            bar.update(done)
    shown = _drain(reader)
    assert "producing" in shown
    assert "10/10" in shown


def test_the_jar_fetch_is_quiet_off_a_terminal(capfd: pytest.CaptureFixture[str]) -> None:
    _run_with_progress(MAVEN_LIKE)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_the_jar_fetch_counts_files_on_a_terminal(
    terminal: tuple[io.TextIOWrapper, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, reader = terminal
    monkeypatch.setattr(sys, "stderr", stream)
    _run_with_progress(MAVEN_LIKE)
    shown = _drain(reader)
    assert "fetching Kafka" in shown
    assert "3 files" in shown
