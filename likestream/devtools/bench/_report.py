"""Reporting: the machine, the results table (results.md) and BENCHMARKS.md."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from likestream.devtools._broker import KAFKA_VERSION
from likestream.devtools.bench._common import Result
from likestream.devtools.bench._peers import PEERS, peer_versions

__all__ = [
    "HAND_WRITTEN",
    "SOAK_BEGIN",
    "SOAK_END",
    "hand_written",
    "machine",
    "merge_report",
    "peer_table",
    "report",
    "table",
]

HAND_WRITTEN = "<!-- Hand-written from here on: make bench keeps this line and all below it. -->"
"""Where BENCHMARKS.md's prose begins (runs too long for ``make bench``, profiles' stories):
:func:`report` writes the measured part above it and keeps what follows."""

SOAK_BEGIN = "<!-- soak: begin; written by `likestream bench soak`, kept by `make bench` -->"
SOAK_END = "<!-- soak: end -->"


def hand_written(previous: str) -> str:
    """The hand-written end of a previous report, from :data:`HAND_WRITTEN` on, without
    the soak section (:func:`merge_report` places that); "" if none."""
    rest, _ = _split(previous)
    at = rest.find(HAND_WRITTEN)
    return rest[at:] if at >= 0 else ""


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    versions = {"Python": platform.python_version(), "Kafka": KAFKA_VERSION}
    for dist in ("faust-streaming", "aiokafka", "aiohttp", "rocksdict", "orjson"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "absent"
    wrk = shutil.which("wrk")
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        versions["wrk"] = (out.stdout + out.stderr).split()[1] if out.stdout + out.stderr else "?"
    versions.update(peer_versions())
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return {
        "cores": str(os.cpu_count()),
        "load average at the end (1, 5, 15 min)": load,
        "memory": f"{mem_kb / 2**20:.1f} GiB",
        "cpu": cpu,
        "open files (RLIMIT_NOFILE of the bench and its workers)": str(
            resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        ),
        "os": platform.platform(),
        **versions,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(results: list[Result]) -> str:
    lines = [
        "| scenario | figure | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        figures = ", ".join(f"{k} {_fmt(v)}" for k, v in r.figures.items())
        baseline = ", ".join(f"{k} {_fmt(v)}" for k, v in r.baseline.items()) or "-"
        ratio = _fmt(r.ratio) if r.ratio is not None else "-"
        targets = "<br>".join(f"{t['name']} {t['op']} {_fmt(t['bound'])}" for t in r.targets)
        met = "<br>".join(
            ("met" if t["met"] else "not met") if t["met"] is not None else "?" for t in r.targets
        )
        lines.append(f"| {r.scenario} | {figures} | {baseline} | {ratio} | {targets} | {met} |")
    return "\n".join(lines) + "\n"


def peer_table(results: list[Result]) -> str:
    """ingest's systems side by side: events/s, likestream's ratio to each, counts checked.

    Empty when no ingest result has a peer figure.
    """
    ingest = next((r for r in results if r.scenario == "ingest" and r.figures), None)
    if ingest is None or not any(f"{name}_events_per_s" in ingest.figures for name in PEERS):
        return ""
    f = ingest.figures

    def match(key: str) -> str:
        return "-" if key not in f else ("yes" if f[key] else "no")

    rate = f.get("events_per_s", float("nan"))
    lines = [
        "| system | events/s | likestream's ratio to it | final counts match a plain fold |",
        "|---|---|---|---|",
        f"| likestream (one worker) | {_fmt(rate)} | 1 | {match('counts_match')} |",
    ]
    if "events_per_s" in ingest.baseline:
        bare = ingest.baseline["events_per_s"]
        lines.append(
            f"| bare aiokafka consumer (no state, no output) | {_fmt(bare)} | "
            f"{_fmt(ingest.ratio) if ingest.ratio is not None else '-'} | - |"
        )
    for name, label in PEERS.items():
        key = f"{name}_events_per_s"
        if key in f:
            ratio = f.get(f"ratio_to_{name}")
            lines.append(
                f"| {label} | {_fmt(f[key])} | {_fmt(ratio) if ratio is not None else '-'} | "
                f"{match(f'{name}_counts_match')} |"
            )
    return "\n".join(lines) + "\n"


def report(
    results: list[Result], info: dict[str, str], invocation: str, took: float, kept: str = ""
) -> str:
    """BENCHMARKS.md: the results, then ``kept`` (:func:`hand_written` of the previous one)."""
    parts = [
        "# Benchmarks",
        "",
        f"Written by `{invocation}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"in {took / 60:.1f} minutes. `make bench` runs the standard set and rewrites this "
        "file but for its soak section, which `likestream bench soak` writes; every "
        "scenario starts its own broker-side topics and worker processes on a "
        "broker of its own, on the same machine as the load. Each figure sits beside a "
        "baseline measured in the same run, since these machines are shared and noisy: "
        "the ratio is the figure to compare across runs. 'What limits it' comes from a "
        "py-spy profile of the worker for ingest, and is reasoned from the code path and "
        "the machine for the others.",
        "",
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in info.items()),
        "",
        "## Results",
        "",
        table(results),
        *(["## Ingest beside its peers", "", peers] if (peers := peer_table(results)) else []),
        "## Commands and limits",
        "",
    ]
    for r in results:
        parts += [f"### {r.scenario}", "", f"    {r.command}", "", f"What limits it: {r.limits}."]
        parts += [f"- {note}" for note in r.notes]
        parts.append("")
    if kept:
        parts.append(kept.rstrip("\n") + "\n")
    return "\n".join(parts)


def _split(text: str) -> tuple[str, str]:
    """``text`` without its soak section, and that section (markers included; "" if none)."""
    begin = text.find(SOAK_BEGIN)
    end = text.find(SOAK_END, begin)
    if begin < 0 or end < 0:
        return text, ""
    end += len(SOAK_END)
    return text[:begin].rstrip() + "\n" + text[end:].lstrip("\n"), text[begin:end]


def merge_report(old: str, main: str | None, soak: str | None) -> str:
    """BENCHMARKS.md from its ``old`` text: ``main`` (the standard scenarios' report) or
    else what ``old`` has apart from its soak section, then ``soak`` (the section's body)
    or else ``old``'s soak section: each command rewrites only its own part."""
    rest, kept = _split(old)
    body = (main if main is not None else rest).rstrip() + "\n"
    block = f"{SOAK_BEGIN}\n{soak.strip()}\n{SOAK_END}" if soak is not None else kept
    return body + (f"\n{block}\n" if block else "")
