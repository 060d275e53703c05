"""The signing secret: prod refuses a missing or weak one; dev shares one generated secret."""

from __future__ import annotations

import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt
import pytest

from likestream._secret import dev_secret, signing_secret, weakness
from likestream._settings import SettingsError, load_settings
from likestream._tokens import verify_token
from likestream.cli import main

STRONG = "S3cure-enough-" + "abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(autouse=True)
def cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("LIKESTREAM_SECRET", raising=False)
    monkeypatch.setenv("LIKESTREAM_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(
    ("secret", "weak"),
    [
        ("short", True),
        ("x" * 31, True),
        ("ab" * 40, True),  # long but only two characters
        (STRONG, False),
        ("é" * 8 + "abcdefgh" * 3, False),  # 40 bytes of UTF-8, 9 characters
    ],
)
def test_weakness(secret: str, weak: bool) -> None:
    assert (weakness(secret) is not None) == weak


@pytest.mark.parametrize("secret", [None, ""])
def test_prod_refuses_a_missing_secret(cache_dir: Path, secret: str | None) -> None:
    with pytest.raises(SettingsError, match="LIKESTREAM_SECRET: required"):
        signing_secret(load_settings(env="prod", kafka_security_protocol="SSL", secret=secret))
    assert not (cache_dir / "dev-secret").exists()


def test_prod_refuses_a_weak_secret() -> None:
    with pytest.raises(SettingsError, match="LIKESTREAM_SECRET: too weak"):
        signing_secret(load_settings(env="prod", kafka_security_protocol="SSL", secret="hunter2"))


def test_prod_takes_a_strong_secret() -> None:
    assert (
        signing_secret(load_settings(env="prod", kafka_security_protocol="SSL", secret=STRONG))
        == STRONG
    )


def test_dev_accepts_a_weak_secret_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert signing_secret(load_settings(secret="hunter2")) == "hunter2"
    assert "LIKESTREAM_SECRET is weak" in caplog.text


def test_dev_generates_one_private_secret_and_reuses_it(
    cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = signing_secret(load_settings())
    assert "LIKESTREAM_SECRET is not set" in caplog.text
    assert weakness(first) is None
    path = cache_dir / "dev-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert signing_secret(load_settings()) == first
    assert [p.name for p in cache_dir.iterdir()] == ["dev-secret"]


def test_processes_starting_together_agree_on_the_dev_secret(cache_dir: Path) -> None:
    path = cache_dir / "sub" / "dev-secret"
    with ThreadPoolExecutor(8) as pool:
        seen = set(pool.map(lambda _: dev_secret(path), range(32)))
    assert len(seen) == 1


def test_token_command_signs_with_the_workers_secret(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "alice", "--ttl", "2m"]) == 0
    token = capsys.readouterr().out.strip()
    assert verify_token(signing_secret(load_settings()), token) == "alice"
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert abs(exp - (time.time() + 120)) < 30


def test_token_command_refuses_a_bad_user(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "not valid"]) == 2
    assert "USER must be" in capsys.readouterr().err


def test_prod_worker_stops_before_touching_kafka(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens on port 9; reaching Kafka first would fail differently, and slowly.
    monkeypatch.setenv("LIKESTREAM_KAFKA_SECURITY_PROTOCOL", "SSL")
    began = time.monotonic()
    assert main(["worker", "--env", "prod", "--kafka", "localhost:9"]) == 2
    assert "LIKESTREAM_SECRET" in capsys.readouterr().err
    assert time.monotonic() - began < 10
