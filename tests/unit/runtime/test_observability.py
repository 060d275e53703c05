"""Observability without a broker: alert rules and dashboard against the app's metrics,
log formats, request ids, the write API's metrics, the status summary.

The integration side (every metric moves on a real worker, JSON logs of a real worker,
``/status`` and ``likestream status``) is ``tests/integration/test_observability.py``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import tools
import yaml
from aiohttp.test_utils import TestClient, TestServer
from fakes import Publisher, Reads, web_app, writes_of
from manifests import K8S, rendered
from prometheus_client import REGISTRY

from likestream.config._settings import SettingsError, load_settings
from likestream.domain._tokens import Tokens, mint_token
from likestream.runtime import _metrics
from likestream.runtime._logging import (
    REQUEST_ID,
    JsonFormatter,
    PlainFormatter,
    RequestIdFilter,
    StepFlushingHandler,
)
from likestream.runtime._status_report import format_status
from likestream.web import Auth, RateLimiter, _access

DASHBOARD = K8S / "observability" / "likestream-dashboard.json"
RULES = K8S / "base" / "prometheusrule.yaml"
METRIC_RE = re.compile(r"\blikestream_[a-z0-9_]+\b")
SECRET = "observability-unit-secret-" + "0123456789abcdef" * 2
AUTH = Auth(Tokens(SECRET))


def exposed_samples() -> set[str]:
    """Sample names a scrape of any likestream process can contain."""
    assert _metrics.EVENTS  # its module registered every family in the default registry
    names = set()
    for family in REGISTRY.collect():
        if not family.name.startswith("likestream_"):
            continue
        suffixes = {
            "counter": ["_total"],
            "gauge": [""],
            "histogram": ["_bucket", "_count", "_sum"],
        }[family.type]
        names |= {family.name + s for s in suffixes}
    return names


def test_metric_names_follow_prometheus_conventions() -> None:
    names = exposed_samples()
    required = {
        "likestream_events_total",
        "likestream_event_latency_seconds_bucket",
        "likestream_consumer_lag_records",
        "likestream_table_rows",
        "likestream_recovery_in_progress",
        "likestream_recovery_remaining_records",
        "likestream_http_requests_total",
        "likestream_http_request_duration_seconds_bucket",
        "likestream_ws_connections",
        "likestream_sse_connections",
        "likestream_subscriptions",
        "likestream_pushes_total",
        "likestream_dropped_clients_total",
        "likestream_producer_errors_total",
        "likestream_rate_limited_total",
        "likestream_dlq_records_total",
    }
    assert required <= names
    for family in REGISTRY.collect():
        if family.type == "histogram" and family.name.startswith("likestream_"):
            assert family.name.endswith("_seconds"), family.name


# -- alert rules ----------------------------------------------------------------------


def _rule_doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return doc


def _alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in _rule_doc()["spec"]["groups"] for r in g["rules"]}


def test_alert_rules_use_only_exposed_metrics() -> None:
    exposed = exposed_samples()
    used: set[str] = set()
    for name, rule in _alerts().items():
        found = set(METRIC_RE.findall(str(rule["expr"])))
        # Or Prometheus' own `up` of the likestream jobs (targets down or missing).
        assert found or re.search(r'\bup\{job=~?"likestream-', str(rule["expr"])), name
        assert found <= exposed, f"{name}: unknown metrics {found - exposed}"
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        used |= found
    # lag growing, DLQ rate, recovery stuck, 5xx error rate, dropped clients
    assert {
        "likestream_consumer_lag_records",
        "likestream_dlq_records_total",
        "likestream_recovery_in_progress",
        "likestream_recovery_remaining_records",
        "likestream_http_requests_total",
        "likestream_dropped_clients_total",
    } <= used


def test_alert_rules_are_in_prod_and_not_in_dev() -> None:
    assert rendered("prod").find("PrometheusRule", "likestream") is not None
    assert rendered("dev").find("PrometheusRule", "likestream") is None


@pytest.fixture
def promtool() -> str:
    return tools.promtool()


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(_rule_doc()["spec"]))
    return path


def test_alert_rules_pass_promtool_check(promtool: str, rules_file: Path) -> None:
    done = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


# Series over time for `promtool test rules`: each alert fires on its symptom and
# stays quiet on healthy series.
RULE_TESTS: dict[str, Any] = {
    "evaluation_interval": "1m",
    "tests": [
        {
            "interval": "1m",
            "input_series": [
                {
                    "series": 'likestream_consumer_lag_records{namespace="ls",topic="likes",'
                    'partition="0",pod="w-0"}',
                    "values": "0+500x40",  # grows by 500 a minute
                },
                {
                    "series": 'likestream_consumer_lag_records{namespace="ls",topic="likes",'
                    'partition="1",pod="w-0"}',
                    "values": "5000x40",  # behind but steady: not growing
                },
                {
                    "series": 'likestream_dlq_records_total{namespace="ls",pod="w-0"}',
                    "values": "0+600x40",  # 10/s
                },
                {
                    "series": 'likestream_recovery_in_progress{namespace="ls",pod="w-1"}',
                    "values": "1x40",
                },
                {
                    "series": 'likestream_recovery_remaining_records{namespace="ls",pod="w-1"}',
                    "values": "9000x40",  # no progress
                },
                {
                    "series": 'likestream_recovery_in_progress{namespace="ls",pod="w-2"}',
                    "values": "1x40",
                },
                {
                    "series": 'likestream_recovery_remaining_records{namespace="ls",pod="w-2"}',
                    "values": "400000-1000x40",  # progressing
                },
                {
                    "series": 'likestream_http_requests_total{namespace="ls",route="/x",'
                    'status="200",pod="g-0"}',
                    "values": "0+600x40",
                },
                {
                    "series": 'likestream_http_requests_total{namespace="ls",route="/x",'
                    'status="503",pod="g-0"}',
                    "values": "0+120x40",  # 1/6 of answers
                },
                {
                    "series": 'likestream_dropped_clients_total{namespace="ls",pod="g-0"}',
                    "values": "0+60x40",  # 1/s
                },
                {
                    "series": 'up{job="likestream-worker",namespace="ls",pod="w-0"}',
                    "values": "1x40",
                },
                {
                    "series": 'up{job="likestream-gateway",namespace="ls",pod="g-0"}',
                    "values": "1x40",
                },
                {
                    "series": 'up{job="likestream-gateway",namespace="ls",pod="g-1"}',
                    "values": "1x10 0x30",  # unscrapable from minute 11
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "30m",
                    "alertname": "LikestreamLagGrowing",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "warning",
                                "namespace": "ls",
                                "topic": "likes",
                            }
                        }
                    ],
                },
                {
                    "eval_time": "30m",
                    "alertname": "LikestreamDeadLetters",
                    "exp_alerts": [{"exp_labels": {"severity": "warning", "namespace": "ls"}}],
                },
                {
                    "eval_time": "30m",
                    "alertname": "LikestreamRecoveryStuck",
                    "exp_alerts": [
                        {"exp_labels": {"severity": "critical", "namespace": "ls", "pod": "w-1"}}
                    ],
                },
                {
                    "eval_time": "30m",
                    "alertname": "LikestreamHttpErrors",
                    "exp_alerts": [{"exp_labels": {"severity": "critical", "namespace": "ls"}}],
                },
                {
                    "eval_time": "30m",
                    "alertname": "LikestreamDroppedClients",
                    "exp_alerts": [{"exp_labels": {"severity": "warning", "namespace": "ls"}}],
                },
                {"eval_time": "30m", "alertname": "LikestreamProducerErrors", "exp_alerts": []},
                {"eval_time": "5m", "alertname": "LikestreamLagGrowing", "exp_alerts": []},
                {
                    "eval_time": "30m",
                    "alertname": "LikestreamTargetDown",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "warning",
                                "namespace": "ls",
                                "job": "likestream-gateway",
                                "pod": "g-1",
                            }
                        }
                    ],
                },
                {"eval_time": "12m", "alertname": "LikestreamTargetDown", "exp_alerts": []},
                {"eval_time": "30m", "alertname": "LikestreamTargetsMissing", "exp_alerts": []},
            ],
        },
        {
            # Workers scraped, no gateway target at all.
            "interval": "1m",
            "input_series": [
                {
                    "series": 'up{job="likestream-worker",namespace="ls",pod="w-0"}',
                    "values": "1x40",
                },
            ],
            "alert_rule_test": [
                {
                    "eval_time": "30m",
                    "alertname": "LikestreamTargetsMissing",
                    "exp_alerts": [
                        {"exp_labels": {"severity": "critical", "job": "likestream-gateway"}}
                    ],
                },
                {"eval_time": "5m", "alertname": "LikestreamTargetsMissing", "exp_alerts": []},
                {"eval_time": "30m", "alertname": "LikestreamTargetDown", "exp_alerts": []},
            ],
        },
    ],
}


def test_alerts_fire_on_their_symptoms(promtool: str, tmp_path: Path) -> None:
    spec = _rule_doc()["spec"]
    for group in spec["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")  # promtool compares them too; checked by `check rules`
    (tmp_path / "bare.yaml").write_text(yaml.safe_dump(spec))
    tests = tmp_path / "tests.yaml"
    tests.write_text(yaml.safe_dump({"rule_files": ["bare.yaml"], **RULE_TESTS}))
    done = subprocess.run(
        [promtool, "test", "rules", str(tests)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- dashboard ------------------------------------------------------------------------


def _panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in doc["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_dashboard_queries_only_exposed_metrics_and_shows_them_all() -> None:
    doc = json.loads(DASHBOARD.read_text())
    exposed = exposed_samples()
    used: set[str] = set()
    ids = [p["id"] for p in _panels(doc)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in _panels(doc):
        for target in panel.get("targets", []):
            found = set(METRIC_RE.findall(target["expr"]))
            assert found, f"{panel['title']}: {target['expr']}"
            assert found <= exposed, f"{panel['title']}: unknown {found - exposed}"
            used |= found
    for variable in doc["templating"]["list"]:
        used |= set(METRIC_RE.findall(json.dumps(variable.get("query", ""))))
    assert used <= exposed
    # Every family is on the dashboard (histograms through their buckets).
    families = {re.sub(r"_(bucket|count|sum)$", "", n) for n in exposed}
    shown = {re.sub(r"_(bucket|count|sum)$", "", n) for n in used}
    assert families - shown == set()


# -- logs ------------------------------------------------------------------------------


def _record(msg: str, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("likestream.test", logging.WARNING, __file__, 1, msg, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_lines_carry_the_request_id_and_extras() -> None:
    token = REQUEST_ID.set("req-1")
    try:
        record = _record("hello %s", status=429)
        record.args = ("world",)
        RequestIdFilter().filter(record)
    finally:
        REQUEST_ID.reset(token)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["message"] == "hello world"
    assert doc["request_id"] == "req-1"
    assert doc["level"] == "warning"
    assert doc["status"] == 429
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["ts"])


def test_json_lines_hold_tracebacks_on_one_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        import sys

        record = _record("failed")
        record.exc_info = sys.exc_info()
    RequestIdFilter().filter(record)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert "ValueError: boom" in doc["exc"]
    assert "request_id" not in doc


def test_plain_lines_show_the_request_id() -> None:
    token = REQUEST_ID.set("abc")
    try:
        record = _record("x")
        RequestIdFilter().filter(record)
    finally:
        REQUEST_ID.reset(token)
    assert PlainFormatter().format(record).endswith("WARNING likestream.test [abc]: x")


class Stream(io.StringIO):
    """What reached the stream by the last flush."""

    flushed = ""

    def flush(self) -> None:
        self.flushed = self.getvalue()


async def test_log_lines_of_a_loop_step_are_flushed_together() -> None:
    stream = Stream()
    handler = StepFlushingHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.handle(_record("one", levelno=logging.INFO, levelname="INFO"))
    handler.handle(_record("two", levelno=logging.INFO, levelname="INFO"))
    assert stream.flushed == ""  # written, flushed once this step ends
    await asyncio.sleep(0)
    assert stream.flushed == "INFO one\nINFO two\n"
    handler.handle(_record("bad"))
    assert stream.flushed.endswith("WARNING bad\n")  # at once


def test_log_lines_outside_a_loop_are_flushed_at_once() -> None:
    stream = Stream()
    handler = StepFlushingHandler(stream)
    handler.handle(_record("alone", levelno=logging.INFO))
    assert stream.flushed == "alone\n"


def test_log_format_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIKESTREAM_LOG_FORMAT", "xml")
    with pytest.raises(SettingsError, match="LIKESTREAM_LOG_FORMAT"):
        load_settings()
    monkeypatch.setenv("LIKESTREAM_LOG_FORMAT", "json")
    monkeypatch.setenv("LIKESTREAM_METRICS_INTERVAL_MS", "5")
    with pytest.raises(SettingsError, match="LIKESTREAM_METRICS_INTERVAL_MS"):
        load_settings()


# -- web: request ids, error logs, write metrics -------------------------------------------


class State(Reads):
    def __init__(self) -> None:
        self.broken = False

    def likes(self, item_id: str) -> int:
        if self.broken:
            raise RuntimeError("disk on fire")
        return 1

    def liked(self, item_id: str, user_id: str) -> bool:
        return False

    def ready(self) -> bool:
        return True


@pytest.fixture
def state() -> State:
    return State()


@pytest.fixture
def publisher() -> Publisher:
    return Publisher()


@pytest.fixture
async def client(state: State, publisher: Publisher) -> AsyncIterator[TestClient]:
    writes = writes_of(publisher, RateLimiter(rate=0.001, burst=1), timeout=5)
    async with TestClient(TestServer(web_app(state, writes, auth=AUTH))) as http:
        yield http


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """JSON lines of the likestream loggers, as a worker with LIKESTREAM_LOG_FORMAT=json writes."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("likestream")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield out
    logger.removeHandler(handler)
    logger.setLevel(level)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_request_ids_are_echoed_or_made(client: TestClient, log_lines: io.StringIO) -> None:
    resp = await client.get("/items/a/likes", headers={"X-Request-Id": "given-1"})
    assert resp.headers["X-Request-Id"] == "given-1"
    resp = await client.get("/items/a/likes", headers={"X-Request-Id": "bad id " + "x" * 200})
    made = resp.headers["X-Request-Id"]
    assert re.fullmatch("[0-9a-f]{32}", made)
    resp = await client.get("/nowhere")
    assert resp.status == 404
    assert resp.headers["X-Request-Id"]
    access = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    assert [(d["request_id"], d["status"]) for d in access] == [
        ("given-1", 200),
        (made, 200),
        (resp.headers["X-Request-Id"], 404),
    ]
    assert all(d["logger"] == "likestream.access" for d in access)


async def test_a_sampled_access_log_keeps_every_refused_request(
    state: State, log_lines: io.StringIO
) -> None:
    # A share so small that 20 answered reads all go unlogged (but for 1 chance in 10^10).
    async with TestClient(TestServer(web_app(state, access_sample=1e-12))) as http:
        for _ in range(20):
            assert (await http.get("/items/a/likes")).status == 200
        assert (await http.get("/nowhere")).status == 404
        assert (await http.get("/items/a%20b/likes")).status == 400
    access = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    assert [(d["path"], d["status"]) for d in access] == [
        ("/nowhere", 404),
        ("/items/a b/likes", 400),
    ]


async def test_a_sampled_access_log_keeps_slow_reads_and_everything_but_reads(
    state: State, log_lines: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = "https://page.example"
    app = web_app(state, cors_origins=[origin], access_sample=1e-12)
    async with TestClient(TestServer(app)) as http:
        for _ in range(20):
            assert (await http.get("/items/a/likes")).status == 200
        preflight = {"Origin": origin, "Access-Control-Request-Method": "GET"}
        assert (await http.options("/items/a/likes", headers=preflight)).status == 204
        monkeypatch.setattr(_access, "SLOW_SECONDS", 0.0)  # every read counts as slow
        assert (await http.get("/items/b/likes")).status == 200
    access = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    assert [(d["method"], d["path"], d["status"]) for d in access] == [
        ("OPTIONS", "/items/a/likes", 204),
        ("GET", "/items/b/likes", 200),
    ]


def test_the_access_log_sample_is_a_share(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().access_log_sample == 0.01  # 1 successful read in 100
    monkeypatch.setenv("LIKESTREAM_ACCESS_LOG_SAMPLE", "1")
    assert load_settings().access_log_sample == 1.0  # every line
    monkeypatch.setenv("LIKESTREAM_ACCESS_LOG_SAMPLE", "0")
    with pytest.raises(SettingsError, match="LIKESTREAM_ACCESS_LOG_SAMPLE"):
        load_settings()


async def test_unhandled_errors_are_json_500s_logged_with_the_request_id(
    client: TestClient, state: State, log_lines: io.StringIO
) -> None:
    state.broken = True
    before = _sample("likestream_http_requests_total", route="/items/{item_id}/likes", status="500")
    resp = await client.get("/items/a/likes", headers={"X-Request-Id": "oops-1"})
    assert resp.status == 500
    assert resp.headers["X-Request-Id"] == "oops-1"
    assert (await resp.json())["error"]["code"] == "internal_error"
    docs = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    [error] = [d for d in docs if d["level"] == "error"]
    assert error["request_id"] == "oops-1"
    assert "RuntimeError: disk on fire" in error["exc"]
    after = _sample("likestream_http_requests_total", route="/items/{item_id}/likes", status="500")
    assert after == before + 1


async def test_429s_and_producer_errors_are_counted(
    client: TestClient, publisher: Publisher
) -> None:
    bearer = {"Authorization": f"Bearer {mint_token(SECRET, 'metric-user', 60)}"}
    limited = _sample("likestream_rate_limited_total")
    refused = _sample("likestream_producer_errors_total", producer="http", reason="refused")
    publisher.fail = True
    resp = await client.post("/items/a/like", headers=bearer)
    assert resp.status == 503
    assert _sample("likestream_producer_errors_total", producer="http", reason="refused") == (
        refused + 1
    )
    resp = await client.post("/items/a/like", headers=bearer)
    assert resp.status == 429
    assert _sample("likestream_rate_limited_total") == limited + 1


async def test_step_counts_reach_their_counters_at_the_next_loop_step() -> None:
    steps = _metrics.StepCounts()
    child = _metrics.READS.labels("local")
    before = _sample("likestream_reads_total", source="local")
    steps.inc(child)
    steps.inc(child, 4)
    assert _sample("likestream_reads_total", source="local") == before  # not yet
    await asyncio.sleep(0)
    assert _sample("likestream_reads_total", source="local") == before + 5
    await asyncio.sleep(0)  # nothing left to hand over twice
    assert _sample("likestream_reads_total", source="local") == before + 5


def test_step_counts_without_a_loop_are_counted_at_once() -> None:
    child = _metrics.READS.labels("stale")
    before = _sample("likestream_reads_total", source="stale")
    _metrics.StepCounts().inc(child, 2)
    assert _sample("likestream_reads_total", source="stale") == before + 2


async def test_requests_and_reads_are_counted_by_the_time_the_answer_arrives(
    client: TestClient,
) -> None:
    route = "/items/{item_id}/likes"
    requests = _sample("likestream_http_requests_total", route=route, status="200")
    timed = _sample("likestream_http_request_duration_seconds_count", route=route)
    reads = _sample("likestream_reads_total", source="local")
    for _ in range(3):
        assert (await client.get("/items/a/likes")).status == 200
    assert _sample("likestream_http_requests_total", route=route, status="200") == requests + 3
    assert _sample("likestream_http_request_duration_seconds_count", route=route) == timed + 3
    assert _sample("likestream_reads_total", source="local") == reads + 3


async def test_status_route_without_a_source(client: TestClient) -> None:
    resp = await client.get("/status")
    assert resp.status == 200
    assert await resp.json() == {"owners": {}, "ready": True}


# -- likestream status -----------------------------------------------------------------------


def test_status_summary_for_people() -> None:
    doc = {
        "ready": False,
        "pid": 7,
        "uptime_seconds": 12.0,
        "topic": "likes",
        "partitions": [1, 3],
        "partitions_total": 8,
        "lag": {"total": 12, "by_partition": {"1": 2, "3": 10}},
        "recovery": {"in_progress": True, "remaining_records": 345},
        "table_rows": {"total": 99, "by_partition": {}},
        "connections": {"websocket": 2, "sse": 1, "subscriptions": 5},
        "throughput": {"events_per_second": 250.5, "http_requests_per_second": 3.0},
        "events": {"applied": 10, "noop": 2, "replayed": 0, "invalid": 1},
        "dlq_records": 1,
    }
    text = format_status("http://w:6066", doc)
    assert "ready        NO (recovering or rebalancing)" in text
    assert "partitions   2 of 8 (1,3) of topic likes" in text
    assert "lag          12 records  [p1=2 p3=10]" in text
    assert "recovery     in progress, 345 changelog records to go" in text
    assert "connections  2 websocket, 1 sse, 5 subscriptions" in text
    assert "throughput   250.5 events/s, 3 http requests/s" in text
    assert "events       10 applied, 2 noop, 0 replayed, 1 invalid; 1 to the DLQ" in text


# -- the sampler's per-partition gauges --------------------------------------------------------


def test_partition_gauges_follow_ownership() -> None:
    from prometheus_client import CollectorRegistry, Gauge

    from likestream.runtime._sampler import _publish

    registry = CollectorRegistry()
    gauge = Gauge("lag_records", "test", ["topic", "partition"], registry=registry)
    owned = _publish(gauge, "likes", {0: 5, 1: 3}, set())
    assert owned == {0, 1}
    # Partition 0 moved to another worker: its series goes, not frozen at its last value.
    owned = _publish(gauge, "likes", {1: 2}, owned)
    samples = {s.labels["partition"]: s.value for s in next(iter(registry.collect())).samples}
    assert samples == {"1": 2}
