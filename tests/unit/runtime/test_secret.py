"""The secrets: prod refuses missing or weak ones and starts only with an issuer, an
audience and an internal secret of its own; dev shares one generated secret."""

from __future__ import annotations

import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt
import pytest

from likestream.cli import main
from likestream.config._settings import SettingsError, load_settings
from likestream.domain._tokens import Tokens, mint_token
from likestream.runtime._credentials import load_credentials
from likestream.runtime._secret import (
    dev_secret,
    internal_secret,
    previous_secrets,
    signing_secret,
    weakness,
)

STRONG = "S3cure-enough-" + "abcdefghijklmnopqrstuvwxyz"
INTERNAL = "Internal-only-" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# What prod needs besides a token key.
PROD = {
    "env": "prod",
    "kafka_security_protocol": "SSL",
    "internal_secret": INTERNAL,
    "jwt_issuer": "https://idp.example",
    "jwt_audience": "likestream",
}


@pytest.fixture(autouse=True)
def cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("SECRET", "INTERNAL_SECRET", "PREVIOUS_SECRETS", "JWKS_URL", "ENV"):
        monkeypatch.delenv(f"LIKESTREAM_{name}", raising=False)
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
    with pytest.raises(SettingsError, match=r"LIKESTREAM_SECRET: required.*LIKESTREAM_JWKS_URL"):
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
    assert load_credentials(load_settings()).tokens.verify(token) == "alice"
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert abs(exp - (time.time() + 120)) < 30


def test_token_command_sets_issuer_and_audience(capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--secret", STRONG, "--jwt-issuer", "https://idp.example"]
    assert main(["token", "alice", *flags, "--jwt-audience", "likestream"]) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, STRONG, algorithms=["HS256"], audience="likestream")
    assert (claims["iss"], claims["aud"]) == ("https://idp.example", "likestream")
    settings = load_settings(secret=STRONG, **PROD)
    assert load_credentials(settings).tokens.verify(token) == "alice"


def test_token_command_refuses_a_lifetime_the_workers_refuse(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["token", "alice", "--ttl", "2d"]) == 2
    assert "LIKESTREAM_JWT_MAX_LIFETIME_S" in capsys.readouterr().err
    assert main(["token", "alice", "--ttl", "2d", "--jwt-max-lifetime-s", "172800"]) == 0


def test_token_command_refuses_when_tokens_come_from_the_identity_provider(
    capsys: pytest.CaptureFixture[str],
) -> None:
    flags = ["--jwks-url", "https://idp.example/jwks"] + [
        f"--{k.replace('_', '-')}={v}" for k, v in PROD.items()
    ]
    assert main(["token", "alice", *flags]) == 2
    assert "tokens come from the identity provider" in capsys.readouterr().err


def test_prod_takes_tokens_from_an_identity_provider_alone(cache_dir: Path) -> None:
    assert signing_secret(load_settings(jwks_url="https://idp.example/jwks", **PROD)) is None
    assert not (cache_dir / "dev-secret").exists()


@pytest.mark.parametrize(
    ("missing", "variable"),
    [("jwt_issuer", "LIKESTREAM_JWT_ISSUER"), ("jwt_audience", "LIKESTREAM_JWT_AUDIENCE")],
)
def test_prod_requires_an_issuer_and_an_audience(missing: str, variable: str) -> None:
    given = {k: v for k, v in PROD.items() if k != missing}
    with pytest.raises(SettingsError, match=f"{variable}: required"):
        load_credentials(load_settings(secret=STRONG, **given))


def test_prod_requires_a_strong_internal_secret_of_its_own() -> None:
    given = {k: v for k, v in PROD.items() if k != "internal_secret"}
    with pytest.raises(SettingsError, match="LIKESTREAM_INTERNAL_SECRET: required"):
        load_credentials(load_settings(secret=STRONG, **given))
    with pytest.raises(SettingsError, match="LIKESTREAM_INTERNAL_SECRET: too weak"):
        internal_secret(load_settings(secret=STRONG, **{**PROD, "internal_secret": "hunter2"}))
    with pytest.raises(SettingsError, match="LIKESTREAM_INTERNAL_SECRET: must differ"):
        internal_secret(load_settings(secret=STRONG, **{**PROD, "internal_secret": STRONG}))
    settings = load_settings(secret=STRONG, previous_secrets=f"{STRONG}x,{INTERNAL}", **PROD)
    with pytest.raises(SettingsError, match="LIKESTREAM_INTERNAL_SECRET: must differ"):
        internal_secret(settings)
    assert load_credentials(load_settings(secret=STRONG, **PROD)).internal_secret == INTERNAL


def test_dev_derives_the_internal_secret_from_the_signing_secret(cache_dir: Path) -> None:
    derived = internal_secret(load_settings())
    assert derived == internal_secret(load_settings())  # every process of the machine
    assert derived != dev_secret(cache_dir / "dev-secret")  # derived, not the same key
    assert weakness(derived) is None
    shared = internal_secret(load_settings(secret=STRONG))  # machines sharing a secret
    assert shared == internal_secret(load_settings(secret=STRONG)) != derived
    assert internal_secret(load_settings(internal_secret=INTERNAL)) == INTERNAL


def test_previous_secrets_verify_and_must_be_strong_in_prod() -> None:
    settings = load_settings(secret=STRONG, previous_secrets=f" {INTERNAL}x , ,", **PROD)
    assert previous_secrets(settings) == [f"{INTERNAL}x"]
    tokens = load_credentials(settings).tokens
    assert tokens.verify(mint_token(f"{INTERNAL}x", "alice", 60, tokens.policy)) == "alice"
    with pytest.raises(SettingsError, match="LIKESTREAM_PREVIOUS_SECRETS: secret 2 too weak"):
        previous_secrets(load_settings(previous_secrets=f"{INTERNAL}x,weak", **PROD))


def test_prod_requires_https_for_the_key_set() -> None:
    settings = load_settings(jwks_url="http://idp.example/jwks", **PROD)
    with pytest.raises(SettingsError, match="LIKESTREAM_JWKS_URL: must be https"):
        load_credentials(settings)


def test_prod_refuses_to_start_when_the_key_set_cannot_be_read() -> None:
    settings = load_settings(jwks_url="https://127.0.0.1:9/jwks", **PROD)  # nothing listens
    with pytest.raises(SettingsError, match="LIKESTREAM_JWKS_URL: cannot read"):
        load_credentials(settings)


def test_dev_starts_without_the_key_set_and_reads_it_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokens = load_credentials(load_settings(jwks_url="http://127.0.0.1:9/jwks")).tokens
    assert "reading it again later" in caplog.text
    assert isinstance(tokens, Tokens)
    assert tokens.jwks is not None
    assert tokens.can_mint  # the dev secret still signs dev tokens


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
    assert "LIKESTREAM_JWT_ISSUER" in capsys.readouterr().err
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in PROD.items()]
    assert main(["worker", *flags, "--kafka", "localhost:9"]) == 2
    assert "LIKESTREAM_SECRET" in capsys.readouterr().err
    assert time.monotonic() - began < 10
