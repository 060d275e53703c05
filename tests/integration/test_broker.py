"""The embedded broker's commands against the session's running broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from likestream.devtools._broker import Broker

pytestmark = pytest.mark.integration


def test_start_when_running_is_a_no_op(broker: Broker) -> None:
    pid = broker.pid()
    assert pid is not None
    assert broker.start() is False
    assert broker.pid() == pid
    assert broker.status() == f"up at {broker.bootstrap} (pid {pid}, log {broker.log_file})"


def test_stop_only_ends_its_own_process(broker: Broker, tmp_path: Path) -> None:
    other = Broker(broker.cache_dir, tmp_path / "never-started", broker.port)
    assert other.pid() is None
    assert other.stop() is False
    assert other.status().startswith("down")
    assert broker.pid() is not None
