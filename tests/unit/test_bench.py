"""The bench's parsing and reporting, without a broker."""

from __future__ import annotations

import math

import pytest

from likestream import cli
from likestream._bench import Result, _percentile, _wrk_ms, machine, report, table


def test_wrk_units() -> None:
    assert _wrk_ms("850.00us") == pytest.approx(0.85)
    assert _wrk_ms("1.50ms") == pytest.approx(1.5)
    assert _wrk_ms("2.00s") == pytest.approx(2000)
    assert math.isnan(_wrk_ms("n/a"))


def test_percentile() -> None:
    values = [float(v) for v in range(1, 101)]
    assert _percentile(values, 50) == pytest.approx(50, abs=1)
    assert _percentile(values, 99) == pytest.approx(99, abs=1)
    assert math.isnan(_percentile([], 50))


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
