"""Progress bars of long CLI work (the jar fetch, ``produce --load``, the bench's phases).

rich's bars on stderr, and only when stderr is a terminal: piped or redirected (CI, a log
file, ``2>&1 | tee``) nothing is drawn and nothing is written, not even a ``\\r``. rich's
own terminal detection is not used for that decision because ``FORCE_COLOR`` and the like
turn it on for pipes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["Bar", "progress_bar"]


class Bar:
    """One bar; :meth:`update` is cheap enough to call per item of work, and a no-op
    when no bar is shown."""

    def __init__(self, progress: Progress | None, task: TaskID | None) -> None:
        self._progress = progress
        self._task = task

    @property
    def shown(self) -> bool:
        return self._progress is not None

    def update(self, completed: float) -> None:
        """``completed`` units of work done so far."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=completed)


def _columns(total: float | None, unit: str) -> list[ProgressColumn]:
    columns: list[ProgressColumn] = [TextColumn("{task.description}"), BarColumn()]
    if total is None:  # a pulsing bar and a running count
        columns.append(TextColumn(f"{{task.completed:,.0f}} {unit}".rstrip()))
    else:
        columns += [
            MofNCompleteColumn(),
            TextColumn(unit),
            TaskProgressColumn(),
            TimeRemainingColumn(),
        ]
    columns.append(TimeElapsedColumn())
    return columns


@contextmanager
def progress_bar(
    description: str, total: float | None = None, unit: str = "", stream: TextIO | None = None
) -> Iterator[Bar]:
    """A bar of ``total`` units (None: unknown) on ``stream`` (default stderr) while the
    block runs, if ``stream`` is a terminal; else a :class:`Bar` that shows nothing."""
    out = stream if stream is not None else sys.stderr
    if not out.isatty():
        yield Bar(None, None)
        return
    progress = Progress(*_columns(total, unit), console=Console(file=out), transient=False)
    with progress:
        yield Bar(progress, progress.add_task(description, total=total))
