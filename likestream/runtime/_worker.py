"""``likestream worker``: agents, tables and the web server in one process."""

from __future__ import annotations

import asyncio
import gc
import logging.config

import faust

from likestream.config._settings import Settings
from likestream.domain._retry import retrying
from likestream.kafka._factory import warn_if_plaintext
from likestream.kafka._topics import KafkaUnreachable, ensure_topics
from likestream.runtime._credentials import load_credentials
from likestream.runtime._faust_app import build
from likestream.runtime._logging import logging_config
from likestream.tables import changelog_topic

__all__ = ["run_worker"]


# The fold allocates a few short-lived objects per event (records, events, rows); with
# Python's default (700, 10, 10) the young generation is collected every few dozen
# events. Fewer, larger young collections cut the worker's CPU per event by about a
# seventh in a micro-benchmark of the fold (BENCHMARKS.md); memory stays bounded.
GC_THRESHOLDS = (50_000, 10, 10)


def run_worker(settings: Settings) -> None:
    # Before anything logs (the dev-secret notice, topic creation); faust applies it again.
    logging.config.dictConfig(logging_config(settings))
    # Prod refuses missing or weak secrets, or an unreadable JWKS, before anything runs.
    credentials = load_credentials(settings)
    warn_if_plaintext(settings)
    changelogs = [changelog_topic(settings.app_id)]
    asyncio.run(
        retrying(
            "creating topics",
            lambda: ensure_topics(settings, changelogs=changelogs),
            (KafkaUnreachable,),
        )
    )
    pipeline = build(settings, credentials)
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()  # what start-up built lives as long as the process: never scanned again
    worker = faust.Worker(
        pipeline.app,
        pipeline.web,
        pipeline.sampler,
        loglevel=settings.log_level,
        quiet=True,
        # Faust's loggers, ours and aiokafka's all go through one handler and format.
        logging_config=logging_config(settings),
    )
    # Faust's progress spinner writes to stdout between log lines: not in a log stream.
    worker.spinner = None
    worker.execute_from_commandline()
