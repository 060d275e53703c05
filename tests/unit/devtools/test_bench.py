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
from likestream.devtools.bench import _reads_bench as _reads
from likestream.devtools.bench._audience import Audience, Client, Delays, source_address, subscribe
from likestream.devtools.bench._cli import _numbers, add_parser, config_from
from likestream.devtools.bench._common import BenchConfig, Result, command, percentile
from likestream.devtools.bench._fanout import fd_reason
from likestream.devtools.bench._idle import IdleStep, _idle_result
from likestream.devtools.bench._reads_bench import LATE_START, blame, open_loop, wrk_ms
from likestream.devtools.bench._report import HAND_WRITTEN, hand_written, machine, report, table
from likestream.devtools.bench._state_bench import restore_line
from likestream.devtools.bench._wsclient import (
    CLOSE,
    PING,
    PONG,
    TEXT,
    FrameParser,
    accept_key,
    encode_frame,
    likes_of,
    mask,
    open_socket,
)


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
        # Returns once both clients have the change: the wait is a deadline for a hang.
        delays, closed, dropped = await audience.collect({"item:1": (1, [produced])}, wait=60)
        audience.close()
    assert (delays.total, delays.missing, closed, dropped) == (2, 0, 0, 0)
    assert delays.max() >= 0  # measured from when it was produced, never before


async def test_open_loop_never_exceeds_its_rate() -> None:
    # What the pacing controls is an upper bound: request n is sent at n / rate at the
    # earliest, so a run sends at most rate x duration. How many a slow machine gets
    # through it does not control, so there is no lower bound beyond "some".
    received = 0

    async def likes(request: web.Request) -> web.Response:
        nonlocal received
        received += 1
        return web.json_response({"likes": 0})

    app = web.Application()
    app.router.add_get("/items/{item_id}/likes", likes)
    rate, duration = 200, 1.0
    async with TestServer(app) as server:
        url = str(server.make_url("")).rstrip("/")
        got = await open_loop(url, 10, rate=rate, duration=duration, connections=4)
    assert (got["errors"], got["unanswered"]) == (0, 0)
    assert 0 < received <= rate * duration
    # Answered over a span of at least ``duration``: never above the rate on average.
    assert 0 < got["requests_per_s"] <= rate
    assert got["p50_ms"] <= got["p99_ms"]


async def test_open_loop_cuts_the_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    never = asyncio.Event()

    async def stuck(request: web.Request) -> web.Response:
        await never.wait()  # never answers: only the cut can end the run
        return web.json_response({"likes": 0})

    monkeypatch.setattr(_reads, "DRAIN_SECONDS", 0.2)
    app = web.Application()
    app.router.add_get("/items/{item_id}/likes", stuck)
    async with TestServer(app) as server:
        url = str(server.make_url("")).rstrip("/")
        async with asyncio.timeout(60):  # a deadline for a hang, not a measurement
            got = await _reads.open_loop(url, 10, rate=50, duration=0.3, connections=4)
    assert got["unanswered"] >= 10
    assert got["unanswered_generator"] + got["unanswered_server"] == got["unanswered"]
    assert got["requests_per_s"] == 0
    assert got["p50_ms"] >= 200  # at least as late as they were at the cut


def test_unanswered_reads_blamed_on_the_generator_when_it_started_them_late() -> None:
    started = {0: 0.001, 1: LATE_START + 0.5, 2: 0.2}  # 3: never started at all
    assert blame([0, 1, 2, 3], started) == (2, 2)
    assert blame([], started) == (0, 0)


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


def test_report_keeps_the_hand_written_end_of_the_previous_one() -> None:
    result = Result("state", "likestream bench state", {"rss_mib": 90.0})
    prose = f"{HAND_WRITTEN}\n\n## State at 10,000,000 memberships\n\nWritten by hand.\n"
    previous = report([result], {"cores": "2"}, "x", 1.0, prose)
    assert hand_written(previous) == prose
    again = report([Result("state", "y", {"rss_mib": 80.0})], {"cores": "2"}, "y", 2.0, prose)
    assert again.endswith(prose)
    assert "rss_mib 80" in again
    assert "rss_mib 90" not in again
    assert hand_written("# Benchmarks\n\nno prose\n") == ""


def test_state_reads_the_restores_own_line() -> None:
    log = (
        "x INFO likestream.tables._restore: restored state: 10 records in 0.50s (20 records/s)\n"
        "x INFO likestream.tables._restore: restored state: 1236813 records in 7.25s (170595 "
        "records/s)\n"
    )
    assert restore_line(log) == (1236813, 7.25)
    assert restore_line("no restore\n") is None


def test_cli_rejects_unknown_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "nope"]) == 2
    assert "unknown scenario" in capsys.readouterr().err


# -- the lean WebSocket client ------------------------------------------------------------


def test_mask_is_rfc6455s_example_and_its_own_inverse() -> None:
    key = bytes.fromhex("37fa213d")
    assert mask(b"Hello", key) == bytes.fromhex("7f9f4d5158")  # RFC 6455, section 5.7
    assert mask(mask(b"x" * 1001, key), key) == b"x" * 1001
    assert mask(b"", key) == b""


def test_accept_key_is_rfc6455s_example() -> None:
    assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    ("size", "header"),
    [(5, 2), (125, 2), (126, 4), (65535, 4), (65536, 10), (70_000, 10)],
)
def test_frames_of_7_16_and_64_bit_lengths_round_trip(size: int, header: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    plain = encode_frame(TEXT, payload)
    assert len(plain) == header + size
    assert plain[0] == 0x80 | TEXT
    assert not plain[1] & 0x80
    masked = encode_frame(TEXT, payload, b"\x01\x02\x03\x04")
    assert len(masked) == header + 4 + size
    assert masked[1] & 0x80  # the mask bit: client frames are masked
    assert masked[header + 4 :] == mask(payload, b"\x01\x02\x03\x04")
    parser = FrameParser()
    assert parser.feed(plain + masked) == [(TEXT, payload), (TEXT, payload)]


def test_parser_takes_frames_split_anywhere() -> None:
    stream = (
        encode_frame(TEXT, b"a" * 300)
        + encode_frame(PING, b"hi")
        + encode_frame(TEXT, b"b" * 70_000)
        + encode_frame(CLOSE, b"\x03\xf5")
    )
    parser = FrameParser()
    got = []
    for i in range(0, len(stream), 7):  # 7-byte chunks split every header and length
        got += parser.feed(stream[i : i + 7])
    assert got == [(TEXT, b"a" * 300), (PING, b"hi"), (TEXT, b"b" * 70_000), (CLOSE, b"\x03\xf5")]
    assert parser.feed(b"") == []


def test_parser_joins_fragments_around_a_control_frame() -> None:
    first = bytes([TEXT]) + bytes([3]) + b"abc"  # not final
    ping = encode_frame(PING, b"")
    last = bytes([0x80]) + bytes([2]) + b"de"  # final continuation
    assert FrameParser().feed(first + ping + last) == [(PING, b""), (TEXT, b"abcde")]


def test_likes_frames_are_read_without_json_and_others_ignored() -> None:
    compact = b'{"type":"likes","item_id":"item:hot","likes":123}'
    assert likes_of(compact) == ("item:hot", 123)
    assert likes_of(b'{"type": "likes", "item_id": "a.b@c", "likes": 7}') == ("a.b@c", 7)
    assert likes_of(b'{"type":"error","code":"rate_limited","message":"likes"}') is None
    assert likes_of(b'{"type":"trending","window":"1h","items":[]}') is None
    assert likes_of(b"not json, likes") is None


def test_client_keeps_only_frames_that_show_a_newer_count() -> None:
    client = Client(["a"])
    for at, likes in [(1.0, 1), (1.1, 1), (1.2, 3), (1.3, 2)]:
        client.note(at, "a", likes)
    assert client.frames == [(1.0, "a", 1), (1.2, "a", 3)]
    assert (client.received, client.latest) == (4, {"a": 3})


def test_source_addresses_spread_over_loopback() -> None:
    sources = {source_address(n) for n in range(1000)}
    assert "127.0.0.1" in sources
    assert len(sources) > 1
    assert all(s.startswith("127.0.0.") for s in sources)


async def test_lean_client_handshake_and_masked_frames_on_the_wire() -> None:
    """A raw server: the upgrade request as RFC 6455 asks, masked client frames, pings
    answered with the same payload, and the server's close code noted."""
    seen: dict[str, object] = {}
    got: list[tuple[int, bytes]] = []
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        lines = head.split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        seen["request"] = lines[0]
        seen["extensions"] = headers.get("sec-websocket-extensions")
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
            + accept_key(headers["sec-websocket-key"].encode())
            + b"\r\n\r\n"
            + encode_frame(TEXT, b'{"type":"likes","item_id":"x","likes":4}')
            + encode_frame(PING, b"are you there")
        )
        parser = FrameParser()
        frames: list[tuple[int, bytes]] = []
        raw = b""
        while len(frames) < 2:
            chunk = await reader.read(4096)
            raw += chunk
            frames += parser.feed(chunk)
        seen["masked"] = bool(raw[1] & 0x80)
        got.extend(frames)
        writer.write(encode_frame(CLOSE, (1013).to_bytes(2, "big") + b"too slow"))
        await reader.read()  # the client answers the close and ends the connection
        writer.close()
        done.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        client = Client(["x"])
        sock = await open_socket(f"http://127.0.0.1:{port}", client.note, "127.0.0.3")
        sock.on_lost = client.lost
        sock.send_json({"op": "subscribe", "items": ["x"]})
        await client.reach("x", 4)
        await done.wait()
        await client.ended()
    assert seen["request"] == "GET /ws HTTP/1.1"
    assert seen["extensions"] is None  # no compression asked for
    assert seen["masked"] is True
    # The pong may go before the subscribe: the ping came with the upgrade.
    assert sorted(got) == [(TEXT, b'{"op":"subscribe","items":["x"]}'), (PONG, b"are you there")]
    assert client.latest == {"x": 4}
    assert (client.closed, client.close_code, client.dropped) == (True, 1013, True)


async def test_subscribe_fails_on_an_error_frame() -> None:
    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for _ in sock:
            await sock.send_str('{"type":"error","code":"too_many_items","message":"no"}')
        return sock

    app = web.Application()
    app.router.add_get("/ws", ws)
    async with TestServer(app) as server:
        url = str(server.make_url("")).rstrip("/")
        with pytest.raises(RuntimeError, match="too_many_items"):
            await subscribe(url, Client(["a"]))


def test_steps_past_the_descriptor_limit_say_so() -> None:
    assert fd_reason(10_000, 1, 20_000) == ""
    reason = fd_reason(20_000, 2, 20_000)  # the server holds all 20,000 whatever the helpers
    assert reason.startswith("20,000 clients not tried: RLIMIT_NOFILE is 20,000")
    assert "CAP_SYS_RESOURCE" in reason
    assert fd_reason(30_000, 1, 30_500) != ""  # the one helper needs its spare too


def test_idle_figures_per_connection() -> None:
    mib = 1 << 20
    steps = [IdleStep(10_000, 100 * mib + 10_000 * 30 * 1024, 1.0), IdleStep(40_000, 2 << 30, 4.0)]
    result = _idle_result(BenchConfig(idle=(10_000, 40_000)), steps, 100 * mib, [])
    assert result.figures["connections"] == 10_000  # the largest step under 1 GiB
    assert result.figures["kib_per_connection"] == pytest.approx(30.0)
    assert [t["met"] for t in result.targets] == [False]
    assert "30.0 KiB per connection" in result.notes[0]


def test_new_scenario_flags() -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["bench", "idle", "ingest-live", "--idle", "100,200", "--live-clients", "50"]
    )
    cfg = config_from(args)
    assert (cfg.idle, cfg.live_clients, cfg.live_events) == ((100, 200), 50, 100_000)
