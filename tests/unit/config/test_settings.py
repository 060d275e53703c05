from pathlib import Path

import pytest

from likestream.config._settings import SettingsError, load_settings


def test_defaults_follow_the_design() -> None:
    s = load_settings()
    assert (s.kafka, s.topic, s.partitions, s.web_port) == ("localhost:9092", "likes", 8, 6066)
    assert (s.data_dir, s.rate, s.burst, s.push_interval_ms, s.env) == (
        Path("data"),
        5.0,
        20,
        100,
        "dev",
    )
    assert s.dlq_topic == "likes.dlq"


def test_environment_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIKESTREAM_PARTITIONS", "12")
    monkeypatch.setenv("LIKESTREAM_WEB_PORT", "7000")
    s = load_settings(web_port="7001")
    assert (s.partitions, s.web_port) == (12, 7001)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PARTITIONS", "zero"),
        ("PARTITIONS", "0"),
        ("WEB_PORT", "70000"),
        ("ENV", "staging"),
        ("KAFKA", "no-port"),
        ("TOPIC", "bad topic"),
        ("RATE", "-1"),
        ("PUBLISH_TIMEOUT_MS", "0"),
        ("CORS_ORIGINS", "app.example"),
        ("CORS_ORIGINS", "https://a.example,javascript:alert(1)"),
        ("STANDBY_REPLICAS", "-1"),
        ("STANDBY_REPLICAS", "many"),
        ("STALE_MAX_MS", "0"),
        ("FORWARD_TIMEOUT_MS", "10"),
        ("ADVERTISED_URL", "http://w-0:6066/some/path"),
        ("JWKS_URL", "ftp://idp.example/jwks"),
        ("JWKS_URL", "idp.example/jwks"),
        ("JWKS_REFRESH_S", "0"),
        ("JWT_ISSUER", ""),
        ("JWT_AUDIENCE", "a\nb"),
        ("JWT_MAX_LIFETIME_S", "10"),
        ("PUBLIC_MEMBERSHIPS", "maybe"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"LIKESTREAM_{name}", value)
    with pytest.raises(SettingsError, match=f"LIKESTREAM_{name}"):
        load_settings()


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SECRET", "PREVIOUS_SECRETS", "INTERNAL_SECRET"):
        monkeypatch.setenv(f"LIKESTREAM_{name}", f"hunter2-{name}")
    shown = load_settings().masked()
    for name in ("SECRET", "PREVIOUS_SECRETS", "INTERNAL_SECRET"):
        assert shown[f"LIKESTREAM_{name}"] == "********"
    assert "hunter2" not in repr(load_settings())


def test_safe_defaults() -> None:
    s = load_settings()
    assert s.web_host == "127.0.0.1"  # not reachable from the network unless asked
    assert s.public_memberships is False
    assert (s.jwt_max_lifetime_s, s.jwks_url, s.jwt_issuer, s.jwt_audience) == (
        86_400,
        None,
        None,
        None,
    )


def test_cors_origins_are_a_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().cors_origin_set == frozenset()
    monkeypatch.setenv("LIKESTREAM_CORS_ORIGINS", " https://a.example, http://localhost:3000 ")
    assert load_settings().cors_origin_set == {"https://a.example", "http://localhost:3000"}
    assert load_settings(cors_origins="*").cors_origin_set == {"*"}


def test_dev_tokens_default_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().dev_tokens is True
    monkeypatch.setenv("LIKESTREAM_ENV", "prod")
    monkeypatch.setenv("LIKESTREAM_KAFKA_SECURITY_PROTOCOL", "SSL")
    assert load_settings().dev_tokens is False
    monkeypatch.setenv("LIKESTREAM_DEV_TOKENS", "true")
    with pytest.raises(SettingsError, match="LIKESTREAM_DEV_TOKENS"):
        load_settings()
    monkeypatch.setenv("LIKESTREAM_ENV", "dev")
    monkeypatch.setenv("LIKESTREAM_DEV_TOKENS", "false")
    assert load_settings().dev_tokens is False


def test_the_advertised_url_defaults_to_the_web_address(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(web_host="127.0.0.1", web_port="7001").url == "http://127.0.0.1:7001"
    monkeypatch.setattr("socket.gethostname", lambda: "box")
    assert load_settings().url == "http://127.0.0.1:6066"  # the default: this machine only
    assert load_settings(web_host="0.0.0.0").url == "http://box:6066"  # wildcard: host name
    monkeypatch.setenv("LIKESTREAM_ADVERTISED_URL", "http://w-0.likestream-worker:6066/")
    assert load_settings().url == "http://w-0.likestream-worker:6066"
