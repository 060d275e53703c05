"""``likestream worker``: agents, tables and the web server in one process."""

from __future__ import annotations

import asyncio

import faust

from ._app import build
from ._settings import Settings
from ._topics import ensure_topics

__all__ = ["run_worker"]


def run_worker(settings: Settings) -> None:
    asyncio.run(ensure_topics(settings))
    pipeline = build(settings)
    worker = faust.Worker(
        pipeline.app,
        pipeline.web,
        loglevel=settings.log_level,
        quiet=True,
    )
    worker.execute_from_commandline()
