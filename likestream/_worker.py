"""``likestream worker``: agents, tables and the web server in one process."""

from __future__ import annotations

import asyncio

import faust

from ._app import build
from ._secret import signing_secret
from ._settings import Settings
from ._topics import ensure_topics

__all__ = ["run_worker"]


def run_worker(settings: Settings) -> None:
    secret = signing_secret(settings)  # prod refuses a missing or weak one before anything runs
    asyncio.run(ensure_topics(settings))
    pipeline = build(settings, secret)
    worker = faust.Worker(
        pipeline.app,
        pipeline.web,
        loglevel=settings.log_level,
        quiet=True,
    )
    worker.execute_from_commandline()
