"""``likestream gateway`` with ``LIKESTREAM_GATEWAY_PROCS`` > 1: N gateways on one port.

The command becomes a small supervisor. It refuses a port some other process already
holds, creates the topics once, then starts N child gateways, each a fresh interpreter
running ``likestream gateway`` with one process, its own event loop, its own tail of
``like-counts`` and its own Kafka producer, all bound to the same host and port with
``SO_REUSEPORT``, so the kernel spreads new connections over them. Each child gets the
supervisor's effective settings through its environment (flags included; the secret
never on a command line), its own ``<data dir>/gateway-<i>``, and
``PROMETHEUS_MULTIPROC_DIR``: a fresh directory where every child keeps its metrics, so
that the ``/metrics`` of whichever child a scrape reaches adds up all of them
(``web/_views.py``).

SIGTERM and SIGINT are forwarded to the children (each in its own process group, so a
terminal's Ctrl-C reaches them once, through here); each closes its push clients and
flushes its producer as a single gateway does, and the supervisor exits 0 when every
child did. A child that exits on its own stops the others and the supervisor exits 1:
see :meth:`Supervisor.run` for why it does not restart it.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from likestream.config._settings import ENV_PREFIX, Settings, SettingsError
from likestream.domain._retry import retrying
from likestream.kafka._topics import KafkaUnreachable, ensure_topics, gateway_topics
from likestream.runtime._credentials import load_credentials
from likestream.runtime._logging import logging_config

__all__ = ["STOP_SECONDS", "SUPERVISED_BY", "Supervisor", "child_env", "supervise"]

log = logging.getLogger(__name__)

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
SUPERVISED_BY = "--supervised-by"
"""The children's hidden flag: the supervisor's pid (bind with SO_REUSEPORT, create no
topics, stop if the supervisor is gone)."""

# Kubernetes gives the pod 45 s (terminationGracePeriodSeconds) and spends 5 on preStop;
# a child stops in about 10 s (open pushes, then the producer). Past this the supervisor
# kills what is left and exits 1, still before the kubelet's SIGKILL.
STOP_SECONDS = 35.0
POLL_SECONDS = 0.2


def child_env(
    settings: Settings, index: int, inherited: Mapping[str, str], metrics_dir: str
) -> dict[str, str]:
    """The environment of child ``index``: ``inherited`` without its settings, then the
    supervisor's effective settings as one process with its own data dir, and the
    multiprocess metrics directory."""
    names = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in inherited.items() if k not in names and k != MULTIPROC_DIR}
    env.update(settings.as_env())
    env[ENV_PREFIX + "GATEWAY_PROCS"] = "1"
    env[ENV_PREFIX + "DATA_DIR"] = str(Path(settings.data_dir) / f"gateway-{index}")
    env[MULTIPROC_DIR] = metrics_dir
    return env


def check_port_free(host: str, port: int) -> None:
    """Refuse a port that a process already listens on. The children bind with
    SO_REUSEPORT, which would otherwise quietly share the port with another group of
    gateways run by the same user; a bind without it fails on any listener."""
    for family, kind, proto, _, address in socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio binds
            try:
                sock.bind(address)
            except OSError as exc:
                raise SettingsError(
                    f"LIKESTREAM_WEB_PORT: {host}:{port} is in use ({exc.strerror})"
                ) from None


class Supervisor:
    """Starts the children, forwards stop signals, and waits for them."""

    def __init__(self, settings: Settings, metrics_dir: str) -> None:
        self.settings = settings
        self.metrics_dir = metrics_dir
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping: int | None = None  # the signal being forwarded, once stopping
        self.failed = False

    def command(self) -> list[str]:
        return [sys.executable, "-m", "likestream", "gateway", SUPERVISED_BY, str(os.getpid())]

    def start(self) -> None:
        for index in range(self.settings.gateway_procs):
            if self.stopping is not None:
                return
            env = child_env(self.settings, index, os.environ, self.metrics_dir)
            # Own process group: Ctrl-C reaches the supervisor only, which forwards it once.
            self.children[index] = subprocess.Popen(self.command(), env=env, process_group=0)
            log.info("gateway: process %d started (pid %d)", index, self.children[index].pid)

    def stop(self, signum: int) -> None:
        """Forward ``signum`` to every live child, once; later calls do nothing."""
        if self.stopping is not None:
            return
        self.stopping = signum
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop(signum)

    def run(self) -> int:
        """Run the children until they have all exited; the exit code of the command.

        A child that dies unexpectedly ends the pod rather than being restarted here:
        with SO_REUSEPORT the kernel just stops sending it connections, so nothing else
        would notice a pod running on fewer processes than its CPU limit pays for (its
        probes reach a live child), and a crash loop inside one container is hidden from
        ``kubectl get pods``, from alerts and from the restart backoff Kubernetes already
        has. Exiting 1 makes it visible and restores the full pod.
        """
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        deadline: float | None = None
        try:
            self.start()
            live = dict(self.children)
            while live:
                for index, proc in list(live.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    del live[index]
                    self._reap(index, proc.pid, code)
                if self.stopping is not None and deadline is None:
                    deadline = time.monotonic() + STOP_SECONDS
                if deadline is not None and live and time.monotonic() > deadline:
                    log.error(
                        "gateway: %d processes still running %.0fs after the stop signal; "
                        "killing them",
                        len(live),
                        STOP_SECONDS,
                    )
                    for proc in live.values():
                        proc.kill()
                    self.failed = True
                    deadline = float("inf")  # killed: now just reap them
                if live:
                    time.sleep(POLL_SECONDS)
        finally:
            for proc in self.children.values():  # only if run() itself failed
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            for s, handler in previous.items():
                signal.signal(s, handler)
        return 1 if self.failed else 0

    def _reap(self, index: int, pid: int, code: int) -> None:
        # Its live gauges (connections) leave the sums; its counters stay, as they should.
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self.metrics_dir)  # type: ignore[no-untyped-call]
        if self.stopping is None:
            log.error(
                "gateway: process %d (pid %d) exited with %d; stopping the others", index, pid, code
            )
            self.failed = True
            self.stop(signal.SIGTERM)
        elif code not in (0, -self.stopping):
            # Killed by the forwarded signal itself: it came before the child had set up
            # its handlers, so it had nothing to close or flush yet.
            log.error("gateway: process %d (pid %d) stopped with exit code %d", index, pid, code)
            self.failed = True
        else:
            log.info("gateway: process %d (pid %d) stopped", index, pid)


def supervise(settings: Settings) -> int:
    """``likestream gateway`` with more than one process; returns the exit code."""
    logging.config.dictConfig(logging_config(settings))
    load_credentials(settings)  # prod refuses missing or weak secrets before anything runs
    check_port_free(settings.web_host, settings.web_port)
    asyncio.run(
        retrying(
            "creating topics",
            lambda: ensure_topics(settings, gateway_topics(settings)),
            (KafkaUnreachable,),
        )
    )
    # Fresh and private: the children's metric files, removed when they are all gone.
    metrics_dir = tempfile.mkdtemp(prefix="likestream-metrics-")
    log.info(
        "gateway: %d processes on %s:%d (SO_REUSEPORT)",
        settings.gateway_procs,
        settings.web_host,
        settings.web_port,
    )
    try:
        return Supervisor(settings, metrics_dir).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
