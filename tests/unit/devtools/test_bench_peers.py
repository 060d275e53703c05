"""The ingest peers' pure logic: the reference fold, progress lines, the Quix fold, the
report's peer table, without a broker, Maven or quixstreams."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from likestream.config._settings import load_settings
from likestream.devtools._broker import KAFKA_VERSION
from likestream.devtools.bench import _peers
from likestream.devtools.bench._cli import _peers as peer_names
from likestream.devtools.bench._cli import add_parser, config_from
from likestream.devtools.bench._common import BenchConfig, Result, command
from likestream.devtools.bench._ingest import peer_targets
from likestream.devtools.bench._peers import (
    PeerProgress,
    PeerRun,
    counts_note,
    expected_counts,
    last_values,
    source_hash,
)
from likestream.devtools.bench._report import peer_table, report
from likestream.devtools.bench.peers import quix_peer
from likestream.domain._schema import InvalidEvent, LikeEvent, parse_event


def ev(user: str, item: str, action: str) -> LikeEvent:
    return LikeEvent(user, item, "like" if action == "like" else "unlike")


def test_expected_counts_follow_the_membership_semantics() -> None:
    events = [
        ev("u1", "a", "like"),
        ev("u1", "a", "like"),  # already a member: no-op
        ev("u2", "a", "like"),
        ev("u3", "b", "unlike"),  # not a member: no-op, b never changes
        ev("u1", "a", "unlike"),
        ev("u4", "c", "like"),
        ev("u4", "c", "unlike"),  # back to 0: still an output record
        ev("u4", "c", "unlike"),
    ]
    assert expected_counts(events) == {"a": 1, "c": 0}


def test_last_values_keep_the_last_count_per_key() -> None:
    records = [
        (b"a", b'{"item_id":"a","likes":1}'),
        (b"b", b'{"item_id":"b","likes":1}'),
        (None, b'{"likes":9}'),
        (b"a", b'{"item_id":"a","likes":2}'),
        (b"b", None),
    ]
    assert last_values(records) == {"a": 2, "b": 1}


def test_counts_note_says_how_counts_differ() -> None:
    assert counts_note("x", {"a": 1}, {"a": 1}) is None
    note = counts_note("x", {"a": 2, "z": 1}, {"a": 1, "b": 1})
    assert note is not None
    assert "1 items missing, 1 unexpected, 1 with another count" in note


def test_progress_lines_and_rate() -> None:
    line = json.dumps(
        {
            "peer": "kstreams",
            "state": "RUNNING",
            "processed": 1000,
            "invalid": 2,
            "changes": 700,
            "expected": 1000,
            "first": 100.0,
            "last": 102.0,
            "error": None,
        }
    )
    progress = PeerProgress.parse(line)
    assert progress is not None
    assert (progress.state, progress.processed, progress.invalid) == ("RUNNING", 1000, 2)
    assert progress.rate == pytest.approx(500)
    assert PeerProgress.parse("[main] WARN something") is None
    assert PeerProgress.parse('{"other": 1}') is None
    assert math.isnan(PeerProgress().rate)
    # Java's error text may hold a raw control character: still one progress line.
    assert PeerProgress.parse('{"processed": 1, "error": "a\tb"}') is not None


def test_peer_run_figures() -> None:
    progress = PeerProgress("closed", 200, 0, 150, 10.0, 12.0)
    run = PeerRun("quix", progress, cold_start_s=3.456, capped=False, committed_s=4.0)
    run.counts_match = True
    assert run.figures(200) == {
        "quix_events_per_s": 100,
        "quix_events_processed": 200,
        "quix_cold_start_to_first_s": 3.46,
        "quix_committed_events_per_s": 50,
        "quix_counts_match": 1,
    }


def test_source_hash_changes_with_a_source_but_not_with_target(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "A.java").write_text("class A {}")
    first = source_hash(tmp_path)
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "A.class").write_bytes(b"\xca\xfe")
    assert source_hash(tmp_path) == first
    (tmp_path / "src" / "A.java").write_text("class A { int x; }")
    assert source_hash(tmp_path) != first


def test_the_peers_pin_what_the_bench_runs() -> None:
    # The Kafka Streams peer talks to the bench's broker: the same Kafka release.
    assert _peers.kstreams_version() == KAFKA_VERSION
    # The bench extra of pyproject.toml is where the Quix venv's requirement comes from.
    assert _peers.quix_requirement() == "quixstreams==3.28.0"
    assert (_peers.KSTREAMS_SOURCES / "src" / "main" / "java").is_dir()
    assert _peers.QUIX_APP.is_file()


def test_prepare_reports_an_unknown_peer_instead_of_raising(tmp_path: Path) -> None:
    assert _peers.prepare(["nope"], tmp_path) == {"nope": "unknown peer 'nope'"}


RECORDS: list[tuple[bytes | None, bytes | None]] = [
    (b"item:1", b'{"user_id":"u1","item_id":"item:1","action":"like"}'),
    (b"item:1", b'{"user_id":"u1","item_id":"item:1","action":"unlike","ts":5,"event_id":"e"}'),
    (b"item:1", b'{"user_id":"u1","item_id":"item:1","action":"like","extra":[1,{"a":2}]}'),
    (b"item:2", b'{"user_id":"u1","item_id":"item:1","action":"like"}'),  # key differs
    (None, b'{"user_id":"u1","item_id":"item:1","action":"like"}'),
    (b"item:1", None),
    (b"item:1", b'{"user_id":"u 1","item_id":"item:1","action":"like"}'),
    (b"item:1", b'{"user_id":"u1","item_id":"item:1","action":"love"}'),
    (b"item:1", b'{"user_id":"u1","item_id":"item:1","action":"like","ts":-1}'),
    (b"item:1", b'{"user_id":"u1","item_id":"item:1","action":"like","ts":true}'),
    (
        b"item:1",
        b'{"user_id":"u1","item_id":"item:1","action":"like","event_id":"' + b"e" * 65 + b'"}',
    ),
    (b"item:1", b'{"user_id":"u1","item_id":"item:1","action":"like","event_id":7}'),
    (b"item:1", b"not json"),
    (b"item:1", b"[1, 2]"),
    (
        b"item:1",
        b'{"user_id":"u1","item_id":"item:1","action":"like","pad":"' + b"x" * 1000 + b'"}',
    ),
    (b"item:1", b'{"user_id":"' + b"u" * 129 + b'","item_id":"item:1","action":"like"}'),
]


@pytest.mark.parametrize(("key", "value"), RECORDS)
def test_quix_peer_validates_as_likestream_does(key: bytes | None, value: bytes | None) -> None:
    try:
        event = parse_event(key, value)
        want: tuple[str, str, bool] | None = (event.item_id, event.user_id, event.liked)
    except InvalidEvent:
        want = None
    assert quix_peer.parse(key, value) == want


class DictState:
    """Quix's per-key state, for one item."""

    def __init__(self) -> None:
        self.rows: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.rows.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.rows[key] = value


def record(user: str, action: str) -> bytes:
    return orjson.dumps({"user_id": user, "item_id": "a", "action": action})


def test_quix_fold_semantics_and_progress() -> None:
    progress = quix_peer.Progress(expected=6)
    state = DictState()
    outs = [
        quix_peer.fold(progress, b"a", record("u1", "like"), state),
        quix_peer.fold(progress, b"a", record("u1", "like"), state),
        quix_peer.fold(progress, b"a", record("u2", "unlike"), state),
        quix_peer.fold(progress, b"a", record("u2", "like"), state),
        quix_peer.fold(progress, b"a", record("u1", "unlike"), state),
        quix_peer.fold(progress, b"a", b"junk", state),
    ]
    assert outs == [
        {"item_id": "a", "likes": 1},
        None,
        None,
        {"item_id": "a", "likes": 2},
        {"item_id": "a", "likes": 1},
        None,
    ]
    assert state.rows == {quix_peer.COUNT_KEY: 1, "u1": False, "u2": True}
    assert (progress.processed, progress.invalid, progress.changes) == (6, 1, 3)
    assert 0 < progress.first <= progress.last
    parsed = PeerProgress.parse(progress.line("running"))
    assert parsed is not None
    assert (parsed.processed, parsed.changes) == (6, 3)


def test_peers_flag_and_command() -> None:
    assert peer_names("none") == ()
    assert peer_names("quix, kstreams,quix") == ("quix", "kstreams")
    with pytest.raises(argparse.ArgumentTypeError):
        peer_names("flink")
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    cfg = config_from(parser.parse_args(["bench", "ingest", "--peers", "none"]))
    assert cfg.peers == ()
    assert command("ingest", cfg, "peers") == "likestream bench ingest --peers none"
    assert BenchConfig().peers == ("kstreams", "quix")
    assert [t[0] for t in peer_targets(("quix",))] == ["quix"]


def test_peer_table_in_the_report() -> None:
    result = Result(
        "ingest",
        "likestream bench ingest",
        {
            "events_per_s": 2000,
            "counts_match": 1,
            "kstreams_events_per_s": 20000,
            "kstreams_counts_match": 1,
            "ratio_to_kstreams": 0.1,
            "quix_events_per_s": 8000,
            "quix_counts_match": 0,
            "ratio_to_quix": 0.25,
        },
        {"events_per_s": 150000},
        ratio=0.0133,
    )
    text = peer_table([result])
    assert "| likestream (one worker) | 2,000 | 1 | yes |" in text
    assert "| Kafka Streams | 20,000 | 0.1 | yes |" in text
    assert "| Quix Streams | 8,000 | 0.25 | no |" in text
    assert "| bare aiokafka consumer" in text
    assert "## Ingest beside its peers" in report([result], {"cores": "2"}, "x", 1.0)
    alone = Result("ingest", "likestream bench ingest", {"events_per_s": 2000})
    assert peer_table([alone]) == ""
    assert "## Ingest beside its peers" not in report([alone], {"cores": "2"}, "x", 1.0)


def test_tuning_args() -> None:
    assert _peers.tuning_args("kstreams") == ["commit.interval.ms=100", "num.stream.threads=1"]
    assert _peers.tuning_args("quix") == ["5"]


def test_no_maven_is_a_reason_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_peers.shutil, "which", lambda _name: None)
    ready = _peers.prepare(["kstreams"], tmp_path)
    assert isinstance(ready["kstreams"], str)
    assert "needs java and mvn" in ready["kstreams"]


def fake_peer(body: str) -> list[str]:
    """A stand-in peer program: ``body`` runs after ``import json, sys, time``."""
    return [sys.executable, "-c", "import json, sys, time\n" + body]


async def test_a_crashing_peer_is_reported_with_its_log(tmp_path: Path) -> None:
    argv = fake_peer("print(json.dumps({'processed': 3}), flush=True)\nsys.exit(3)")
    settings = load_settings(kafka="localhost:1", data_dir=tmp_path)
    with pytest.raises(_peers.PeerUnavailable, match="exited with 3 at 3/10"):
        await _peers.run_peer("quix", argv, settings, "g", 10, 60.0, tmp_path / "peer.log")


async def test_a_peer_past_the_cap_is_stopped_and_marked_capped(tmp_path: Path) -> None:
    # Its first record was 100 s ago: past a 10 s cap at once; it then waits for SIGTERM.
    body = (
        "import signal\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "now = time.time()\n"
        "line = {'state': 'RUNNING', 'processed': 500, 'first': now - 100, 'last': now}\n"
        "print(json.dumps(line), flush=True)\n"
        "time.sleep(60)\n"
    )
    settings = load_settings(kafka="localhost:1", data_dir=tmp_path)
    run = await _peers.run_peer(
        "kstreams", fake_peer(body), settings, "g", 1000, 10.0, tmp_path / "peer.log"
    )
    assert run.capped
    assert run.progress.processed == 500
    assert run.progress.rate == pytest.approx(5, rel=0.01)
    assert run.committed_s is None


def test_a_failed_build_is_not_retried_by_the_bench(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_peers.shutil, "which", lambda _name: None)
    first = _peers.prepare(["kstreams"], tmp_path, retry=True)["kstreams"]
    assert isinstance(first, str)
    # Now Maven would be there, but the bench (retry=False) reports the recorded failure.
    monkeypatch.setattr(_peers.shutil, "which", lambda name: f"/usr/bin/{name}")
    again = _peers.prepare(["kstreams"], tmp_path, retry=False)["kstreams"]
    assert isinstance(again, str)
    assert "needs java and mvn" in again
    assert "make peers" in again
