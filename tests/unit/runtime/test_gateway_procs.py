"""A gateway of several processes without a broker: the setting and its flags, each
child's environment, the port check, the supervisor's exits, and metrics added up over
processes by prometheus-client's multiprocess mode.

The real thing (two gateways on one port against the broker) is
``tests/integration/test_gateway_procs.py``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from likestream.cli import _parser, _settings
from likestream.config._settings import SettingsError, load_settings
from likestream.runtime import _metrics
from likestream.runtime._supervisor import Supervisor, check_port_free, child_env
from likestream.web._views import metrics_registry


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in os.environ:
        if name.startswith("LIKESTREAM_") or name == "PROMETHEUS_MULTIPROC_DIR":
            monkeypatch.delenv(name)
    return monkeypatch


# -- the setting -----------------------------------------------------------------


def test_procs_default_to_one_and_come_from_env_or_flags(clean_env: pytest.MonkeyPatch) -> None:
    assert load_settings().gateway_procs == 1
    clean_env.setenv("LIKESTREAM_GATEWAY_PROCS", "4")
    assert load_settings().gateway_procs == 4
    for flag in ("--procs", "--gateway-procs"):
        args = _parser().parse_args(["gateway", flag, "3"])
        assert _settings(args).gateway_procs == 3
        assert args.supervised_by is None


@pytest.mark.parametrize("value", ["0", "65", "two"])
def test_bad_procs_name_the_variable(clean_env: pytest.MonkeyPatch, value: str) -> None:
    clean_env.setenv("LIKESTREAM_GATEWAY_PROCS", value)
    with pytest.raises(SettingsError, match="LIKESTREAM_GATEWAY_PROCS"):
        load_settings()


def test_settings_survive_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(
        secret="s" * 40, rate="2.5", dev_tokens="false", gateway_procs="3", web_port="7001"
    )
    for name, value in settings.as_env().items():
        clean_env.setenv(name, value)
    assert load_settings() == settings
    assert "LIKESTREAM_INSTANCE_ID" not in settings.as_env()  # unset stays unset


# -- the children's environment ------------------------------------------------------


def test_a_child_gets_the_effective_settings_as_one_process(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(gateway_procs="2", web_port="7002", data_dir="/var/lib/ls")
    inherited = {
        "PATH": "/bin",
        "LIKESTREAM_CACHE_DIR": "/c",  # not a setting: kept
        "LIKESTREAM_WEB_PORT": "6066",  # a flag overrode it: the effective value wins
        "LIKESTREAM_INSTANCE_ID": "stray",  # unset in the effective settings: dropped
        "PROMETHEUS_MULTIPROC_DIR": "/elsewhere",
    }
    env = child_env(settings, 1, inherited, "/tmp/metrics")
    assert env["PATH"] == "/bin"
    assert env["LIKESTREAM_CACHE_DIR"] == "/c"
    assert env["LIKESTREAM_WEB_PORT"] == "7002"
    assert "LIKESTREAM_INSTANCE_ID" not in env
    assert env["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/metrics"
    for name, value in env.items():
        if name.startswith("LIKESTREAM_") and name != "LIKESTREAM_CACHE_DIR":
            clean_env.setenv(name, value)
    child = load_settings()
    assert child.gateway_procs == 1
    assert child.data_dir == Path("/var/lib/ls/gateway-1")
    assert child.model_dump(exclude={"gateway_procs", "data_dir"}) == settings.model_dump(
        exclude={"gateway_procs", "data_dir"}
    )


def test_a_port_in_use_is_refused() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(SettingsError, match="LIKESTREAM_WEB_PORT"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)  # free again


# -- the supervisor ------------------------------------------------------------------

# A child that exits 0 on SIGTERM; child 0 first asks the supervisor to stop (as the
# kubelet would), child 1 exits with code 3 if told to.
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    index = int(os.environ["LIKESTREAM_DATA_DIR"].rsplit("-", 1)[1])
    mode = os.environ["CHILD_MODE"]
    if mode == "stop" and index == 0:
        os.kill(os.getppid(), signal.SIGTERM)
    if mode == "crash" and index == 1:
        sys.exit(3)
    while True:
        time.sleep(1)
    """
)


class Scripted(Supervisor):
    def command(self) -> list[str]:
        return [sys.executable, "-c", CHILD]


def _supervise(tmp_path: Path, mode: str, clean_env: pytest.MonkeyPatch) -> Scripted:
    clean_env.setenv("CHILD_MODE", mode)
    settings = load_settings(gateway_procs="3", data_dir=str(tmp_path))
    supervisor = Scripted(settings, str(tmp_path))
    supervisor.code = supervisor.run()  # type: ignore[attr-defined]
    assert all(proc.poll() is not None for proc in supervisor.children.values())
    return supervisor


def test_a_stop_signal_reaches_every_child_and_exits_0(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    supervisor = _supervise(tmp_path, "stop", clean_env)
    assert supervisor.code == 0  # type: ignore[attr-defined]
    assert supervisor.stopping == signal.SIGTERM
    # 0, or killed by SIGTERM if it came before the child had set its handler up.
    assert {proc.returncode for proc in supervisor.children.values()} <= {0, -signal.SIGTERM}


def test_a_child_that_dies_stops_the_others_and_exits_1(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    supervisor = _supervise(tmp_path, "crash", clean_env)
    assert supervisor.code == 1  # type: ignore[attr-defined]
    codes = {i: proc.returncode for i, proc in supervisor.children.items()}
    assert codes.pop(1) == 3
    assert set(codes.values()) <= {0, -signal.SIGTERM}
    assert len(codes) == 2  # process 2 too had started: stopped, not abandoned


# -- metrics over processes ----------------------------------------------------------


def test_every_gauge_chooses_how_processes_add_up() -> None:
    gauges = {n: g for n, g in vars(_metrics).items() if isinstance(g, Gauge)}
    assert gauges
    # "all" (the default) adds a pid label to each series instead of adding them up.
    unchosen = {n for n, g in gauges.items() if g._multiprocess_mode == "all"}
    assert unchosen == set(), "give these gauges a multiprocess_mode"


# One gateway process: count requests and hold connections, then exit or stay.
PROCESS = textwrap.dedent(
    """
    import sys
    from likestream.runtime import _metrics
    requests, connections = int(sys.argv[1]), int(sys.argv[2])
    _metrics.HTTP_REQUESTS.labels(route="/status", status="200").inc(requests)
    _metrics.WS_CONNECTIONS.inc(connections)
    _metrics.READY.set(1)
    print("counted", flush=True)
    sys.stdin.read()  # until the test closes it
    """
)


def _scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(metrics_registry()).decode())
        for s in family.samples
    }


def test_metrics_add_up_over_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import multiprocess

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS, str(requests), str(connections)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for requests, connections in ((3, 2), (4, 5))
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "counted\n"
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        served = ("likestream_http_requests_total", (("route", "/status"), ("status", "200")))
        scraped = _scrape()
        assert scraped[served] == 7
        assert scraped[("likestream_ws_connections", ())] == 7
        assert scraped[("likestream_ready", ())] == 1
    finally:
        for proc in procs:
            proc.communicate("")
    # A process gone: its connections leave the sum, what it served stays counted.
    multiprocess.mark_process_dead(procs[1].pid, str(tmp_path))  # type: ignore[no-untyped-call]
    scraped = _scrape()
    assert scraped[served] == 7
    assert scraped[("likestream_ws_connections", ())] == 2
