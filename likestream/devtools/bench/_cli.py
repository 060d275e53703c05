"""The ``likestream bench`` command: arguments, the run of each scenario, the result files."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from likestream.devtools.bench._common import BenchConfig, Result, raise_open_files, say
from likestream.devtools.bench._fanout import fanout
from likestream.devtools.bench._idle import idle
from likestream.devtools.bench._ingest import ingest
from likestream.devtools.bench._ingest_live import ingest_live
from likestream.devtools.bench._lab import Lab
from likestream.devtools.bench._latency import latency
from likestream.devtools.bench._peers import PEERS
from likestream.devtools.bench._reads_bench import reads
from likestream.devtools.bench._report import hand_written, machine, merge_report, report, table
from likestream.devtools.bench._soak import soak
from likestream.devtools.bench._soak_report import plot, section
from likestream.devtools.bench._state_bench import state

__all__ = ["SCENARIOS", "add_parser", "config_from", "run_bench"]

SCENARIOS = ("ingest", "reads", "state", "latency", "fanout", "idle", "ingest-live", "soak")
STANDARD = SCENARIOS[:-1]
"""What ``likestream bench`` runs when no scenario is named (``make bench``): not the soak,
a long run of its own command."""
PLOT = "soak.svg"


def _numbers(text: str) -> tuple[int, ...]:
    """``500,1000,2000`` as a tuple of positive ints."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas: {text!r}"
        ) from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive numbers: {text!r}")
    return values


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number: {text!r}")
    return value


def _peers(text: str) -> tuple[str, ...]:
    """``kstreams,quix`` (or ``none``) as a tuple of known peer names."""
    if text.strip().lower() == "none":
        return ()
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [n for n in names if n not in PEERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected 'none' or peers among {', '.join(PEERS)}: {text!r}"
        )
    return names


def add_parser(sub: Any) -> None:
    bench = sub.add_parser(
        "bench",
        help="benchmarks against same-run baselines",
        description="Run the benchmark scenarios, each against a baseline measured in the "
        "same run, on a broker and worker processes of its own (free ports, a temporary "
        "state dir). Takes minutes per scenario and all the machine's cores.",
    )
    bench.add_argument(
        "scenario", nargs="*", metavar="SCENARIO", help=f"{', '.join(SCENARIOS)} (default: all)"
    )
    d = BenchConfig()
    add = bench.add_argument
    add("--events", type=int, default=d.events, help="ingest: events")
    add("--items", type=int, default=d.items, help="ingest, reads, state, latency: items")
    add("--users", type=int, default=d.users, help="ingest, reads, state: users")
    add("--memberships", type=int, default=d.memberships, help="state")
    add("--partitions", type=int, default=d.partitions, help="of the events topic")
    add("--cap", type=float, default=d.cap, help="ingest, state: longest folding window, s")
    add("--duration", type=float, default=d.duration, help="reads (maximum rate), latency: s")
    add("--clients", type=int, default=d.clients, help="reads: connections")
    add(
        "--rate",
        type=float,
        default=None,
        help="latency, soak: events/s (default: 50%% of ingest, or of the soak's calibration)",
    )
    add("--rates", type=_numbers, default=d.rates, help="reads: fixed rates, req/s (500,1000)")
    add("--fanout", type=_numbers, default=d.fanout, help="fanout: client counts to try")
    add(
        "--fanout-budget",
        type=float,
        default=d.fanout_budget,
        help="fanout: no step after this many s on one server",
    )
    add("--idle", type=_numbers, default=d.idle, help="idle: connection counts to try")
    add("--live-events", type=int, default=d.live_events, help="ingest-live: events")
    add("--live-clients", type=int, default=d.live_clients, help="ingest-live: subscribers")
    add(
        "--ws-procs",
        type=int,
        default=d.ws_procs,
        help="latency, fanout, idle, ingest-live: client processes",
    )
    add(
        "--peers",
        type=_peers,
        default=d.peers,
        help=f"ingest: peers to run too, among {','.join(PEERS)}, or none",
    )
    add(
        "--tool",
        choices=["auto", "wrk", "aiohttp"],
        default=d.tool,
        help="reads: the load generator (auto: wrk when installed)",
    )
    add("--minutes", type=_positive, default=d.minutes, help="soak: how long the load runs")
    add("--subscribers", type=int, default=d.subscribers, help="soak: live WebSocket clients")
    add("--read-rate", type=_positive, default=d.read_rate, help="soak: reads/s via the gateway")
    add(
        "--sample-seconds",
        type=_positive,
        default=None,
        help="soak: seconds between samples (default: 60, or a 30th of a shorter run)",
    )
    add("--seed", type=int, default=d.seed, help="of the synthetic events")
    add("--out", type=Path, default=d.out, help="results.json and results.md")
    add("--report", type=Path, default=None, help="also write BENCHMARKS.md")
    add("--keep", action="store_true", help="keep the temporary state dir")


def config_from(args: argparse.Namespace) -> BenchConfig:
    return BenchConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(BenchConfig)})


async def _scenario(lab: Lab, cfg: BenchConfig, name: str, ingest_rate: float | None) -> Result:
    if name == "ingest":
        return await ingest(lab, cfg)
    if name == "reads":
        return await reads(lab, cfg)
    if name == "state":
        return await state(lab, cfg)
    if name == "latency":
        return await latency(lab, cfg, ingest_rate)
    if name == "idle":
        return await idle(lab, cfg)
    if name == "ingest-live":
        return await ingest_live(lab, cfg)
    if name == "soak":
        return await soak(lab, cfg)
    return await fanout(lab, cfg)


async def _run(
    lab: Lab, cfg: BenchConfig, scenarios: list[str], signals: list[int]
) -> list[Result]:
    """The ``scenarios`` one after another, until a signal is noted in ``signals``: it
    cancels the running one, but one that awaits a task it cancelled itself may take the
    cancellation for its own and end normally."""
    results: list[Result] = []
    ingest_rate: float | None = None
    for name in scenarios:
        if signals:
            break
        began = time.monotonic()
        say(f"== {name}")
        try:
            result = await _scenario(lab, cfg, name, ingest_rate)
        except Exception as exc:  # one failed scenario does not cost the others
            say(f"{name} failed: {exc!r}")
            result = Result(name, f"likestream bench {name}", {}, notes=[f"failed: {exc!r}"])
        finally:
            for worker in lab.workers:
                worker.stop(timeout=30)
        if name == "ingest" and result.figures:
            ingest_rate = result.figures["events_per_s"]
        result.notes.append(f"scenario took {time.monotonic() - began:.0f}s")
        results.append(result)
    return results


def _keep_logs(root: Path, out: Path) -> None:
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for log in [
        *root.glob("*/worker.log"),
        *root.glob("*/gateway.log"),
        *root.glob("*/clients.log"),
        *root.glob("*/peer-*.log"),
    ]:
        shutil.copy(log, logs / f"{log.parent.name.rsplit('-', 1)[0]}-{log.name}")


def _write(cfg: BenchConfig, results: list[Result], took: float, report_to: Path | None) -> None:
    info = machine()
    cfg.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "machine": info,
        "config": {k: str(v) for k, v in dataclasses.asdict(cfg).items()},
        "seconds": round(took, 1),
        "results": [dataclasses.asdict(r) for r in results],
    }
    (cfg.out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    (cfg.out / "results.md").write_text(table(results))
    invocation = "likestream " + " ".join(sys.argv[1:]) if sys.argv[1:] else "likestream bench"
    standard = [r for r in results if r.scenario != "soak"]
    soaked = next((r for r in results if r.scenario == "soak"), None)
    if soaked is not None and soaked.samples:
        (cfg.out / PLOT).write_text(plot(soaked.samples))
    if report_to is not None:
        old = report_to.read_text() if report_to.exists() else ""
        main = report(standard, info, invocation, took, hand_written(old)) if standard else None
        soak_text = None
        if soaked is not None:
            plot_name = None
            if soaked.samples:
                plot_name = f"{report_to.stem}-{PLOT}"
                (report_to.parent / plot_name).write_text(plot(soaked.samples))
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            load = info["load average at the end (1, 5, 15 min)"]
            soak_text = section(soaked, invocation, when, load, plot_name)
        report_to.write_text(merge_report(old, main, soak_text))


@contextlib.contextmanager
def _ended_as_by_ctrl_c() -> Iterator[list[int]]:
    """SIGTERM ends the bench as Ctrl-C (SIGINT) does, and the signals received are noted
    in the list it gives. Python's default for SIGTERM ends the process at once, leaving
    the lab's broker, workers and gateways running; this way, inside ``asyncio.run`` the
    running scenario is cancelled (its ``finally`` blocks stop its helper processes) and
    outside it KeyboardInterrupt is raised, so that ``run_bench`` stops the lab and
    removes its state dir as at a normal end."""
    received: list[int] = []

    def interrupt(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        # asyncio.run's own SIGINT handler while it runs (it cancels the main task), else
        # Python's default one (KeyboardInterrupt).
        on_sigint = signal.getsignal(signal.SIGINT)
        if not callable(on_sigint):
            raise KeyboardInterrupt
        on_sigint(signum, frame)

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, before)


@contextlib.contextmanager
def _deaf() -> Iterator[None]:
    """SIGTERM and SIGINT ignored: the lab's clean-up runs to its end once begun (a
    second signal would otherwise leave the processes it had yet to stop)."""
    before = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def run_bench(args: argparse.Namespace) -> int:
    scenarios = list(dict.fromkeys(args.scenario)) or list(STANDARD)
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        print(
            f"likestream bench: unknown scenario {unknown[0]!r}; choose from "
            f"{', '.join(SCENARIOS)}",
            file=sys.stderr,
        )
        return 2
    cfg = config_from(args)
    raise_open_files()  # before any worker or helper process starts: they inherit it
    root = Path(tempfile.mkdtemp(prefix="likestream-bench-"))
    lab = Lab(root, cfg.partitions)
    began = time.monotonic()
    with _ended_as_by_ctrl_c() as received:
        try:
            lab.start()
            results = asyncio.run(_run(lab, cfg, scenarios, received))
            if received:  # a scenario took the cancellation for its own (see _run)
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            signum = received[0] if received else signal.SIGINT
            say(f"stopped by {signal.Signals(signum).name}")
            return 128 + signum
        finally:
            with _deaf():
                lab.stop()
                _keep_logs(root, cfg.out)
                if args.keep:
                    say(f"state kept in {root}")
                else:
                    shutil.rmtree(root, ignore_errors=True)
    took = time.monotonic() - began
    _write(cfg, results, took, args.report)
    print(table(results))
    say(f"done in {took:.0f}s; results in {cfg.out / 'results.json'}")
    return 1 if any(not r.figures for r in results) else 0
