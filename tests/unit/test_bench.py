"""The bench's parsing, delay accounting and reporting, without a broker."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time

import orjson
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from likestream import cli
from likestream._bench import _reads
from likestream._bench._audience import Audience, Client, Delays
from likestream._bench._cli import _numbers, add_parser, config_from
from likestream._bench._common import BenchConfig, Result, command, percentile
from likestream._bench._reads import open_loop, wrk_ms
from likestream._bench._report import machine, report, table


def test_wrk_units() -> None:
    assert wrk_ms("850.00us") == pytest.approx(0.85)
    assert wrk_ms("1.50ms") == pytest.approx(1.5)
    assert wrk_ms("2.00s") == pytest.approx(2000)
    assert math.isnan(wrk_ms("n/a"))


def test_percentile() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50, abs=1)
    assert percentile(values, 99) == pytest.approx(99, abs=1)
    assert math.isnan(percentile([], 50))


def test_delays_histogram_merges_and_counts_missing_as_late() -> None:
    one, two = Delays(), Delays()
    for ms in range(1, 51):
        one.add(float(ms))
    for ms in range(51, 100):
        two.add(float(ms))
    two.missing = 1
    one.merge(Delays.from_json(json.loads(json.dumps(two.to_json()))))  # as the helper sends it
    assert one.total == 100
    assert one.percentile(50) == pytest.approx(50, abs=1)
    assert one.percentile(98) == pytest.approx(98, abs=1)
    assert one.percentile(100) == math.inf
    assert one.max() == math.inf
    assert math.isnan(Delays().percentile(99))


def test_a_coalesced_frame_delivers_every_change_up_to_its_count() -> None:
    client = Client(["a", "b"])
    client.note(0.0, "a", 2)  # the count at subscription
    client.mark()
    # Changes 3, 4, 5 of "a" produced at 1.0, 1.1, 1.2; 1 and 2 of "b" at 1.0, 1.5.
    sent = {"a": (3, [1.0, 1.1, 1.2]), "b": (1, [1.0, 1.5])}
    client.note(1.3, "a", 4)  # delivers 3 and 4
    client.note(1.35, "b", 1)
    client.note(1.4, "a", 5)
    delays = Delays()
    client.delays(sent, delays)
    got = sorted(k / 10 for k, n in delays.buckets.items() for _ in range(n))
    assert got == pytest.approx([200, 200, 300, 350], abs=0.2)
    assert delays.missing == 1  # change 2 of "b" never arrived


def test_caught_up_and_closed() -> None:
    client = Client(["a"])
    assert not client.caught_up({"a": 1})
    client.note(1.0, "a", 1)
    assert client.caught_up({"a": 1, "other": 9})
    client.closed = True
    assert client.caught_up({"a": 5})


async def test_audience_against_a_push_server() -> None:
    sockets: list[web.WebSocketResponse] = []

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == WSMsgType.TEXT and orjson.loads(msg.data)["op"] == "subscribe":
                sockets.append(sock)
        return sock

    app = web.Application()
    app.router.add_get("/ws", ws)
    async with TestServer(app) as server:
        audience = Audience()
        url = str(server.make_url("")).rstrip("/")
        assert await audience.open(url, [["item:1"], ["item:1"]]) == (0, "")
        assert len(sockets) == 2  # subscribed before open() returned
        audience.mark()
        produced = time.monotonic()
        for sock in sockets:
            await sock.send_str('{"type": "likes", "item_id": "item:1", "likes": 1}')
        delays, closed = await audience.collect({"item:1": (1, [produced])}, wait=5)
        await audience.close()
    assert (delays.total, delays.missing, closed) == (2, 0, 0)
    assert 0 <= delays.max() < 5000


async def test_open_loop_holds_its_rate() -> None:
    async def likes(request: web.Request) -> web.Response:
        return web.json_response({"likes": 0})

    app = web.Application()
    app.router.add_get("/items/{item_id}/likes", likes)
    async with TestServer(app) as server:
        url = str(server.make_url("")).rstrip("/")
        got = await open_loop(url, 10, rate=200, duration=1.0, connections=4)
    assert (got["errors"], got["unanswered"]) == (0, 0)
    assert 150 <= got["requests_per_s"] <= 210
    assert got["p50_ms"] <= got["p99_ms"]


async def test_open_loop_cuts_the_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    async def stuck(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.json_response({"likes": 0})

    monkeypatch.setattr(_reads, "DRAIN_SECONDS", 0.2)
    app = web.Application()
    app.router.add_get("/items/{item_id}/likes", stuck)
    async with TestServer(app) as server:
        url = str(server.make_url("")).rstrip("/")
        began = time.monotonic()
        got = await _reads.open_loop(url, 10, rate=50, duration=0.3, connections=4)
    assert time.monotonic() - began < 5
    assert got["unanswered"] >= 10
    assert got["requests_per_s"] == 0
    assert got["p50_ms"] >= 200  # at least as late as they were at the cut


def test_number_lists_and_config() -> None:
    assert _numbers("500,1000") == (500, 1000)
    with pytest.raises(argparse.ArgumentTypeError):
        _numbers("500,x")
    with pytest.raises(argparse.ArgumentTypeError):
        _numbers("0")
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "fanout", "--fanout", "10,20", "--ws-procs", "2"])
    cfg = config_from(args)
    assert (cfg.fanout, cfg.ws_procs, cfg.rates) == ((10, 20), 2, BenchConfig().rates)


def test_command_spells_flags_as_typed() -> None:
    cfg = BenchConfig(fanout=(10, 20), ws_procs=2)
    assert command("fanout", cfg, "fanout", "ws_procs") == (
        "likestream bench fanout --fanout 10,20 --ws-procs 2"
    )


def test_targets_and_table() -> None:
    result = Result("ingest", "likestream bench ingest", {"events_per_s": 1000}, ratio=0.25)
    result.target("ratio to bare consumer", 0.25, ">=", 0.5)
    result.target("RSS MiB", 100.0, "<", 1024)
    result.target("unknown", None, ">=", 1)
    assert [t["met"] for t in result.targets] == [False, True, None]
    text = table([result])
    assert "| ingest |" in text
    assert "not met<br>met<br>?" in text


def test_report_names_machine_and_command() -> None:
    result = Result("state", "likestream bench state --memberships 10", {"rss_mib": 90.0})
    result.limits = "RocksDB"
    info = machine()
    text = report([result], info, "likestream bench state", 60.0)
    assert info["cpu"] in text
    assert "    likestream bench state --memberships 10" in text
    assert "What limits it: RocksDB." in text


def test_cli_rejects_unknown_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "nope"]) == 2
    assert "unknown scenario" in capsys.readouterr().err
