"""``reads``: ``GET /items/{id}/likes`` at maximum rate (wrk when installed, else aiohttp
clients) and at fixed rates (``--rates``, an open-loop aiohttp generator), then batch reads
(``GET /likes?items=`` with ``BATCH`` ids) at maximum rate, against a bare aiohttp handler
returning dict lookups under the same loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import aiohttp

from likestream.devtools.bench._common import (
    BenchConfig,
    Result,
    command,
    cpu_seconds,
    free_port,
    percentile,
    say,
)
from likestream.devtools.bench._lab import Lab, WorkerProcess, create_topics, wait_committed
from likestream.kafka._factory import KafkaConfig
from likestream.runtime._produce import produce, synthetic_events

__all__ = ["blame", "open_loop", "reads", "wrk_ms"]

BATCH = 100  # ids per batch read: the API's most (web/_views.py MAX_BATCH)
RATE_SECONDS = 10.0  # each fixed-rate run, at most: --duration when shorter
DRAIN_SECONDS = 5.0  # after a fixed-rate run, for the answers still due
LATE_START = 1.0  # s after its time: a request the generator itself was late to start
# The maximum-rate runs alternate between the worker and the bare handler, each round
# --duration / ROUNDS long: other work on a shared machine comes and goes within a run,
# and rounds side by side meet the same of it (a worker-then-bare order did not: the same
# code measured 0.64 and 0.96 in two runs alone on the machine).
ROUNDS = 3

# The baseline encodes its answer as the worker does (orjson, web/_json.py).
_BARE_SERVER = """
import sys
import orjson
from aiohttp import web
port, items = int(sys.argv[1]), int(sys.argv[2])
counts = {f"item:{i}": i % 97 for i in range(items)}
async def likes(request):
    item = request.match_info["item_id"]
    body = orjson.dumps({"item_id": item, "likes": counts.get(item, 0)})
    return web.Response(body=body, content_type="application/json", charset="utf-8")
async def batch(request):
    items = list(dict.fromkeys(i for i in request.query.get("items", "").split(",") if i))
    body = orjson.dumps({"likes": {item: counts.get(item, 0) for item in items}})
    return web.Response(body=body, content_type="application/json", charset="utf-8")
app = web.Application(handler_args={"max_line_size": 64 * 1024})
app.router.add_get("/items/{item_id}/likes", likes)
app.router.add_get("/likes", batch)
web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
"""

_WRK_SCRIPT = """
math.randomseed(1)
request = function()
  return wrk.format("GET", "/items/item:" .. math.random(0, %(last)d) .. "/likes")
end
"""

_WRK_BATCH_SCRIPT = """
math.randomseed(2)
request = function()
  local ids = {}
  for i = 1, %(batch)d do ids[i] = "item:" .. math.random(0, %(last)d) end
  return wrk.format("GET", "/likes?items=" .. table.concat(ids, ","))
end
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        return float("nan")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _wrk(url: str, items: int, cfg: BenchConfig, script_dir: Path, batch: bool) -> dict[str, float]:
    script = script_dir / ("batch.lua" if batch else "reads.lua")
    text = _WRK_BATCH_SCRIPT if batch else _WRK_SCRIPT
    script.write_text(text % {"last": items - 1, "batch": BATCH})
    cmd = [
        "wrk",
        "-t1",
        f"-c{cfg.clients}",
        f"-d{max(1, round(cfg.duration))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    out = done.stdout
    figures: dict[str, float] = {}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    figures["requests_per_s"] = round(float(rps.group(1)) if rps else float("nan"))
    for pct in ("50", "99"):
        match = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.MULTILINE)
        figures[f"p{pct}_ms"] = round(wrk_ms(match.group(1)) if match else float("nan"), 3)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    figures["errors"] = int(non2xx.group(1)) if non2xx else 0
    return figures


def _path(index: int, items: int, batch: bool) -> str:
    if not batch:
        return f"/items/item:{index}/likes"
    ids = ",".join(f"item:{(index + n * 7919) % items}" for n in range(BATCH))
    return f"/likes?items={ids}"


async def _aiohttp_load(url: str, items: int, cfg: BenchConfig, batch: bool) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + cfg.duration
    connector = aiohttp.TCPConnector(limit=cfg.clients)

    async def client(index: int, http: aiohttp.ClientSession) -> None:
        nonlocal errors
        i = index
        while time.monotonic() < deadline:
            i = (i * 7919 + 1) % items
            began = time.perf_counter()
            async with http.get(url + _path(i, items, batch)) as resp:
                await resp.read()
                errors += resp.status != 200
            latencies.append((time.perf_counter() - began) * 1000)

    began = time.monotonic()
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(client(n, http) for n in range(cfg.clients)))
    return _figures(latencies, time.monotonic() - began, errors)


def _figures(latencies: list[float], span: float, errors: int) -> dict[str, float]:
    return {
        "requests_per_s": round(len(latencies) / span),
        "p50_ms": round(percentile(latencies, 50), 3),
        "p99_ms": round(percentile(latencies, 99), 3),
        "errors": errors,
    }


async def open_loop(
    url: str, items: int, rate: float, duration: float, connections: int
) -> dict[str, float]:
    """GETs at ``rate``/s on schedule whatever the answers (open loop, like wrk2): each
    latency counts from the request's scheduled time, so a slow answer also counts the
    wait of the requests queued behind it (no coordinated omission)."""
    latencies: list[float] = []
    errors = 0
    started: dict[int, float] = {}

    async def one(http: aiohttp.ClientSession, index: int, due: float) -> None:
        nonlocal errors
        # When this process's loop got to the request (lateness here is the generator's
        # own: a busy or starved loop), before any wait for a connection (the server's).
        started[index] = time.monotonic() - due
        try:
            async with http.get(f"{url}/items/item:{index * 7919 % items}/likes") as resp:
                await resp.read()
                errors += resp.status != 200
        except aiohttp.ClientError:
            errors += 1
            return
        latencies.append((time.monotonic() - due) * 1000)

    tasks: list[asyncio.Task[None]] = []
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:
        began = time.monotonic()
        while (elapsed := time.monotonic() - began) < duration:
            for index in range(len(tasks), int(elapsed * rate) + 1):
                tasks.append(asyncio.create_task(one(http, index, began + index / rate)))
            await asyncio.sleep(0.001)
        late = await _drain(tasks, DRAIN_SECONDS)
    span = time.monotonic() - began
    # The unanswered at the cut count as late as they were then: lower bounds.
    waited = [(span - index / rate) * 1000 for index in late]
    figures = _figures(latencies + waited, span, errors)
    figures["requests_per_s"] = round(len(latencies) / span)
    figures["unanswered"] = len(late)
    figures["unanswered_generator"], figures["unanswered_server"] = blame(late, started)
    figures["start_lag_p99_ms"] = round(percentile(list(started.values()), 99) * 1000, 1)
    return figures


def blame(late: list[int], started: dict[int, float]) -> tuple[int, int]:
    """The unanswered requests ``late`` split into the generator's and the server's: a
    request whose loop got to it more than ``LATE_START`` s after its time (``started``:
    its lateness then), or never, is the generator's; the server had the rest in time."""
    generator = sum(1 for index in late if started.get(index, math.inf) > LATE_START)
    return generator, len(late) - generator


async def _drain(tasks: list[asyncio.Task[None]], limit: float) -> list[int]:
    """Wait up to ``limit`` s for ``tasks``; cancel the rest and return their indexes."""
    if tasks:
        await asyncio.wait(tasks, timeout=limit)
    late = [index for index, task in enumerate(tasks) if not task.done()]
    for index in late:
        tasks[index].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return late


async def _load(
    url: str, items: int, cfg: BenchConfig, script_dir: Path, tool: str, batch: bool = False
) -> dict[str, float]:
    if tool == "wrk":
        return await asyncio.to_thread(_wrk, url, items, cfg, script_dir, batch)
    return await _aiohttp_load(url, items, cfg, batch)


@contextlib.asynccontextmanager
async def bare_server(items: int) -> AsyncIterator[tuple[str, int]]:
    """The baseline: a bare aiohttp handler returning a dict lookup; yields its URL and
    process id."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    bare = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _BARE_SERVER,
        str(port),
        str(items),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await _wait_answering(f"{url}/items/item:0/likes", limit=30)
        yield url, bare.pid
    finally:
        bare.terminate()
        await asyncio.wait_for(bare.wait(), 10)


async def _wait_answering(url: str, limit: float) -> None:
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)


def _rate_seconds(cfg: BenchConfig) -> float:
    return min(cfg.duration, RATE_SECONDS)


async def _max_rate(
    servers: list[tuple[str, int]], cfg: BenchConfig, script_dir: Path
) -> tuple[list[dict[str, float]], float]:
    """Maximum-rate runs of ``servers`` (URL, pid: the worker, then the baseline) in
    :data:`ROUNDS` alternating rounds; each server's median figures (errors added up),
    and the median of the rounds' ratios of the first's rate to the second's.
    ``cpu_us_per_req``: the server's CPU time per answer, which other work on a shared
    machine sways less than the rate."""
    short = dataclasses.replace(cfg, duration=max(1.0, cfg.duration / ROUNDS))
    rounds: list[list[dict[str, float]]] = [[] for _ in servers]
    for _ in range(ROUNDS):
        for (url, pid), runs in zip(servers, rounds, strict=True):
            runs.append(await _timed(pid, _load(url, cfg.items, short, script_dir, cfg.tool)))
    first, second = rounds
    ratios = [
        a["requests_per_s"] / max(b["requests_per_s"], 1)
        for a, b in zip(first, second, strict=True)
    ]
    say(f"reads:   rounds: {rounds}")
    medians = [
        {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        | {"errors": sum(run["errors"] for run in runs)}
        for runs in rounds
    ]
    return medians, statistics.median(ratios)


async def _measure(url: str, pid: int, cfg: BenchConfig, script_dir: Path) -> dict[str, float]:
    """One open-loop run per fixed rate, then batch reads at maximum rate (``batch_*``;
    ``batch_counts_per_s``: item counts answered a second)."""
    figures: dict[str, float] = {"errors": 0, "unanswered": 0}
    for rate in cfg.rates:
        got = await open_loop(url, cfg.items, rate, _rate_seconds(cfg), cfg.clients)
        say(f"reads:   at {rate:,} req/s: {got}")
        figures |= {f"at_{rate}_p50_ms": got["p50_ms"], f"at_{rate}_p99_ms": got["p99_ms"]}
        figures[f"at_{rate}_per_s"] = got["requests_per_s"]
        figures["errors"] += got["errors"]
        figures["unanswered"] += got["unanswered"]
    batch = await _timed(pid, _load(url, cfg.items, cfg, script_dir, cfg.tool, batch=True))
    say(f"reads:   batches of {BATCH}: {batch}")
    figures |= {f"batch_{key}": value for key, value in batch.items() if key != "errors"}
    figures["batch_counts_per_s"] = batch["requests_per_s"] * BATCH
    figures["errors"] += batch["errors"]
    return figures


async def _timed(pid: int, load: Awaitable[dict[str, float]]) -> dict[str, float]:
    """``load``'s figures, and the CPU time process ``pid`` spent per request meanwhile."""
    cpu, began = cpu_seconds(pid), time.monotonic()
    figures = dict(await load)
    requests = figures["requests_per_s"] * (time.monotonic() - began)
    figures["cpu_us_per_req"] = round((cpu_seconds(pid) - cpu) / max(requests, 1) * 1e6)
    return figures


async def _preloaded_worker(lab: Lab, cfg: BenchConfig) -> WorkerProcess:
    """A ready worker whose events are all folded."""
    settings = lab.cluster("reads")
    await create_topics(settings)
    preload = min(cfg.events, 10_000)
    say(f"reads: preloading {preload:,} events over {cfg.items:,} items")
    events = synthetic_events(preload, cfg.items, cfg.users, seed=cfg.seed)
    await produce(KafkaConfig.from_settings(settings), settings.topic, events, preload)
    worker = lab.worker(settings)
    await worker.start_ready()
    await wait_committed(settings, limit=300)
    return worker


async def reads(lab: Lab, cfg: BenchConfig) -> Result:
    tool = cfg.tool if cfg.tool != "auto" else ("wrk" if shutil.which("wrk") else "aiohttp")
    cfg = dataclasses.replace(cfg, tool=tool)
    worker = await _preloaded_worker(lab, cfg)
    script_dir = lab.root
    rates = ", ".join(f"{r:,}" for r in cfg.rates)
    say(f"reads: {tool}, {cfg.clients} connections, {cfg.duration:.0f}s, then {rates} req/s")
    async with bare_server(cfg.items) as (bare_url, bare_pid):
        say(f"reads: maximum rate, {ROUNDS} rounds, worker and a bare aiohttp dict lookup in turn")
        servers = [(worker.url, worker.pid), (bare_url, bare_pid)]
        (got, base), ratio = await _max_rate(servers, cfg, script_dir)
        got |= await _measure(worker.url, worker.pid, cfg, script_dir)
        say(f"reads: worker {got}")
        base |= await _measure(bare_url, bare_pid, cfg, script_dir)
        say(f"reads: bare {base}")
    worker.stop()
    return _reads_result(cfg, tool, got, base, ratio)


def _reads_result(
    cfg: BenchConfig, tool: str, got: dict[str, float], base: dict[str, float], ratio: float
) -> Result:
    """``ratio``: the median of the maximum-rate rounds' ratios of the worker's rate to
    the bare handler's."""
    result = Result(
        "reads",
        command("reads", cfg, "items", "clients", "duration", "rates") + f" --tool {tool}",
        got,
        base,
        ratio=float(f"{ratio:.3g}"),
        limits=(
            f"one worker process (one core for its event loop) while the load generator "
            f"({tool} at maximum rate, a Python open-loop aiohttp generator at fixed rates, "
            "whose own CPU use caps the rates it can hold) takes the other core. At maximum "
            f"rate the worker and the bare handler take turns, {ROUNDS} rounds each (figures: "
            "each server's medians; ratio: the median of the rounds' ratios), so that both "
            "meet the machine's other work alike; cpu_us_per_req (each server's CPU per "
            "answer) is the steadier comparison still. A fresh read of one count: the item's "
            "partition (kept by id), the partitions served here now (actives and readiness, "
            "worked out once per event loop step), then the fold's own count row of the item, "
            "a dict lookup (a read takes the row from RocksDB once and keeps it among the "
            "fold's rows, which the fold keeps newest and forgets on a revocation, a rewind or "
            "a failed delivery: tables/_state.py). Profile of the worker under wrk (py-spy, "
            "every on-CPU sample): aiohttp's own request parsing, routing and response writing "
            "and the kernel's socket writes most of it, as for the bare handler; the one "
            "middleware (web/_front.py) about 14%: the handler 7% (the JSON reply 4%, the "
            "checks and the count 2%, the id check 0.6%), metrics 2.4% (the duration "
            "histogram's observe the most of it; the request and read counters are added up "
            "and handed over once per loop step), the request id 1%, the access line 0.6% "
            "(LIKESTREAM_ACCESS_LOG_SAMPLE: 1 successful read in 100 by default), headers "
            "0.5%; aiohttp writes the four security headers and the request id header beside "
            "its own, and wraps a coroutine around any middleware. "
            f"Batch reads ask {BATCH} random ids a request (batch_counts_per_s: counts "
            "answered a second): readiness and this process's actives checked once, the "
            "items grouped by partition (kept by id), the fold's rows first, then one RocksDB "
            "multi-get per partition for the rest (kept as for single reads), and the ids "
            "checked against the ones seen lately, against the bare handler's dict lookups. "
            "Fixed-rate "
            f"latencies count from each request's scheduled time ({_rate_seconds(cfg):.0f}s per "
            "rate); wrk2 is not packaged for Debian, hence the aiohttp generator"
        ),
    )
    result.target("ratio to bare aiohttp", result.ratio, ">=", 0.8)
    batch_ratio = got["batch_counts_per_s"] / max(base["batch_counts_per_s"], 1)
    result.notes.append(
        f"batch reads: {got['batch_counts_per_s']:,.0f} counts/s against the bare "
        f"handler's {base['batch_counts_per_s']:,.0f} ({batch_ratio:.2f}x)"
    )
    cpu, bare_cpu = got["cpu_us_per_req"], base["cpu_us_per_req"]
    result.notes.append(
        f"CPU per answer at maximum rate: {cpu:,.0f} us for the worker, {bare_cpu:,.0f} us "
        f"for the bare handler ({bare_cpu / max(cpu, 1):.2f}x; the rates' ratio follows it "
        f"when each server has a core to itself); batches: {got['batch_cpu_us_per_req']:,.0f}"
        f" us and {base['batch_cpu_us_per_req']:,.0f} us"
    )
    for rate in cfg.rates:
        worker, bare = got[f"at_{rate}_per_s"], base[f"at_{rate}_per_s"]
        if min(worker, bare) < 0.95 * rate:
            result.notes.append(
                f"{rate:,} req/s not held: {worker:,.0f}/s answered by the worker, "
                f"{bare:,.0f}/s by the bare handler (both short: the generator's limit)"
            )
    if got.get("errors"):
        result.notes.append(f"{got['errors']:,.0f} non-200 answers from the worker")
    if got.get("unanswered") or base.get("unanswered"):
        result.notes.append(
            f"unanswered {DRAIN_SECONDS:.0f}s after a fixed-rate run: "
            f"{got['unanswered']:,.0f} (worker), {base['unanswered']:,.0f} (bare); they count "
            "as late as they were then, so those percentiles are lower bounds"
        )
    return result
