"""``fanout``: N WebSocket clients subscribed to one hot item that keeps changing; the
largest N whose p99 delivery delay stays under 1 s.

The steps (``--fanout``, default 500, 1,000, 2,000, 5,000, 10,000 clients) add clients to
the ones already connected, all in helper processes; then the hot item takes ``HOT_RATE``
likes per second for ``STEP_SECONDS``, each by a fresh user, and the delay of every
(client, change) pair is measured as in ``latency``. The steps stop at the first that
misses (p99 >= 1 s, a client dropped by the worker, a connection refused), when the next
would need more file descriptors than RLIMIT_NOFILE allows, or when the time budget
(``--fanout-budget``) is spent.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

from ._audience import Client, Delays, Helpers, Sent, helpers
from ._common import BenchConfig, Result, command, cpu_seconds, raise_open_files, say
from ._lab import Lab, WorkerProcess
from ._latency import counts_delays, follow_counts, paced_likes, push_figures, ws_worker

__all__ = ["Step", "fanout"]

HOT = "item:hot"
HOT_RATE = 20.0  # likes/s on the hot item: every 100 ms window has a change to push
STEP_SECONDS = 10.0
WAIT_SECONDS = 10.0
BOUND_MS = 1000.0
FD_SPARE = 1000  # descriptors each process keeps for Kafka, RocksDB and the rest


@dataclass
class Step:
    clients: int
    figures: dict[str, float]
    closed: int
    failed: int
    connect_s: float
    worker_cpu: float
    """Cores the worker used during the load (1.0 is one core busy)."""
    clients_cpu: float
    load: float
    """The machine's 1-minute load average after the step (2 cores: over 2 is a queue)."""

    @property
    def passed(self) -> bool:
        return self.figures["p99_ms"] < BOUND_MS and not self.closed and not self.failed

    def line(self) -> str:
        f = self.figures
        return (
            f"{self.clients:,} clients: p50 {f['p50_ms']:,.0f} ms, p99 {f['p99_ms']:,.0f} ms, "
            f"max {f['max_ms']:,.0f} ms (to like-counts: p99 {f['counts_p99_ms']:,.0f} ms), "
            f"{f['missing']:,.0f} changes missing, "
            f"{self.closed} dropped, {self.failed} refused; connected in "
            f"{self.connect_s:.1f}s; worker {self.worker_cpu:.2f} cores, clients "
            f"{self.clients_cpu:.2f} cores, load average {self.load:.1f}"
        )


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


async def _step(
    crowd: Helpers, worker: WorkerProcess, connected: int, clients: int, count: int
) -> Step:
    """Grow to ``clients``, then a load of ``STEP_SECONDS``; ``count`` is the hot item's."""
    began = time.monotonic()
    failed, error = await crowd.open(worker.url, [[HOT]] * (clients - connected))
    connect_s = time.monotonic() - began
    if failed:
        say(f"fanout: {failed} connections refused, first: {error}")
    await crowd.mark()
    sent, cores, counts = await _hot_load(crowd, worker, count)
    delays, closed = await crowd.collect(sent, WAIT_SECONDS)
    figures = {"events": len(sent[HOT][1]), **push_figures(delays)}
    figures["counts_p99_ms"] = round(counts.percentile(99), 1)
    return Step(clients, figures, closed, failed, connect_s, *cores, os.getloadavg()[0])


async def _hot_load(
    crowd: Helpers, worker: WorkerProcess, count: int
) -> tuple[Sent, tuple[float, float], Delays]:
    """``HOT_RATE`` likes/s on the hot item for ``STEP_SECONDS``: what was sent, the cores
    the worker and the clients used meanwhile, and the delays to the like-counts record."""
    assert worker.proc is not None
    pids = [worker.proc.pid]
    records = Client([HOT])
    follower = asyncio.create_task(follow_counts(worker.settings, records))
    before, began = (_cpu(pids), _cpu(crowd.pids)), time.monotonic()
    stamps = await paced_likes(worker.settings, [HOT], HOT_RATE, STEP_SECONDS)
    span = time.monotonic() - began
    cores = ((_cpu(pids) - before[0]) / span, (_cpu(crowd.pids) - before[1]) / span)
    sent = {HOT: (count + 1, stamps[HOT])}
    return sent, cores, await counts_delays(follower, records, sent)


def _stop_reason(clients: int, open_files: int, began: float, cfg: BenchConfig) -> str:
    if clients + FD_SPARE > open_files:
        return f"{clients:,} clients not tried: RLIMIT_NOFILE is {open_files:,}"
    if time.monotonic() - began > cfg.fanout_budget:
        return f"{clients:,} clients not tried: the {cfg.fanout_budget:.0f}s budget is spent"
    return ""


async def fanout(lab: Lab, cfg: BenchConfig) -> Result:
    began = time.monotonic()
    open_files = raise_open_files()
    worker = await ws_worker(lab, "fanout")
    steps: list[Step] = []
    notes: list[str] = []
    connected = count = 0
    async with helpers(cfg.ws_procs, worker.settings.data_dir.parent / "clients.log") as crowd:
        for clients in sorted(cfg.fanout):
            reason = _stop_reason(clients, open_files, began, cfg)
            if reason:
                notes.append(reason)
                break
            say(f"fanout: {clients:,} clients on {HOT}, {HOT_RATE:.0f} likes/s")
            try:
                step = await _step(crowd, worker, connected, clients, count)
            except Exception as exc:  # keep the steps that passed
                notes.append(f"{clients:,} clients: failed: {exc!r}")
                break
            say(f"fanout: {step.line()}")
            steps.append(step)
            connected, count = clients, count + round(step.figures["events"])
            if not step.passed:
                break
    return _fanout_result(cfg, steps, notes)


def _fanout_result(cfg: BenchConfig, steps: list[Step], notes: list[str]) -> Result:
    passed = [s for s in steps if s.passed]
    best = passed[-1] if passed else None
    figures: dict[str, float] = {
        "clients": best.clients if best else 0,
        "p99_ms": best.figures["p99_ms"] if best else float("nan"),
        "worker_cores": round(best.worker_cpu, 2) if best else float("nan"),
        "clients_cores": round(best.clients_cpu, 2) if best else float("nan"),
        "hot_likes_per_s": HOT_RATE,
    }
    result = Result(
        "fanout",
        command("fanout", cfg, "fanout", "fanout_budget", "ws_procs"),
        figures,
        limits=(
            "one worker process fans each change of the hot item out to every subscriber "
            "(a dirty mark per client, one coalesced frame per client per 100 ms: about 10 "
            "frames/s per client) and writes every frame from the one event loop that also "
            "folds the events, so a busy push path delays the like-counts record too (the "
            "'to like-counts' p99 of each step tells the two apart); the "
            f"clients ({cfg.ws_procs} helper process(es)) parse every frame and share the 2 "
            "cores with the worker, the broker and the producer, so the client side caps "
            "the figure too: see the cores each used per step"
        ),
    )
    result.target("clients with p99 < 1 s", figures["clients"], ">=", 5000)
    result.notes += [s.line() for s in steps] + notes
    return result
