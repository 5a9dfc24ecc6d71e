"""Logging redaction and the health/metrics server (real HTTP on an ephemeral port)."""

from __future__ import annotations

import io
import json
import logging
import urllib.error
import urllib.request

import pytest
import structlog

from worker.domain.secrets import Secret
from worker.observability.health import HealthServer, HealthState
from worker.observability.logging import configure_logging, request_context
from worker.observability.metrics import Metrics


@pytest.fixture
def log_stream():
    stream = io.StringIO()
    configure_logging("DEBUG", stream)
    yield stream
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_every_value_is_redacted_and_json(log_stream: io.StringIO) -> None:
    log = structlog.get_logger("t")
    url = "https://acct.blob.core.windows.net/c/x.tif?sv=2024&sig=SECRETSIG&se=2030"
    with structlog.contextvars.bound_contextvars(message_id="m-1", correlation_id="c-1", attempt=2):
        log.info(
            "hello",
            href=url,
            nested={"list": [url, 3], "token": "plain-secret-value"},
            auth=Secret("hidden-bearer"),
            header="Bearer abc.def-ghi",
            conn="Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=KEYVALUE",
        )
    out = log_stream.getvalue()
    for secret in ("SECRETSIG", "plain-secret-value", "hidden-bearer", "abc.def-ghi", "KEYVALUE"):
        assert secret not in out
    event = lines(log_stream)[-1]
    assert event["event"] == "hello" and event["message_id"] == "m-1" and event["attempt"] == 2
    assert event["level"] == "info" and "timestamp" in event
    assert event["href"].startswith("https://acct.blob.core.windows.net/c/x.tif?") and "sig=***" in event["href"]


def test_deeply_nested_values_are_redacted_too(log_stream: io.StringIO) -> None:
    # the scrubber stops descending at depth 8; what lies deeper was rendered unredacted
    url = "https://acct.blob.core.windows.net/c/x.tif?sv=2024&sig=DEEPSECRET"
    deep: object = {"href": url, "auth": "Bearer DEEPBEARER", "token": Secret("DEEPTOKEN")}
    for _ in range(12):
        deep = {"k": [deep]}
    structlog.get_logger("t").info("deep", payload=deep)
    out = log_stream.getvalue()
    for secret in ("DEEPSECRET", "DEEPBEARER", "DEEPTOKEN"):
        assert secret not in out
    assert lines(log_stream)[-1]["event"] == "deep"


def test_exceptions_and_stdlib_records_are_redacted(log_stream: io.StringIO) -> None:
    try:
        raise ValueError("failed at https://a.blob.core.windows.net/c/b?sig=EXCSECRET")
    except ValueError:
        structlog.get_logger("t").exception("oops")
    logging.getLogger("azure.servicebus").warning("sas %s", "SharedAccessSignature=STDLIBSECRET")
    out = log_stream.getvalue()
    assert "EXCSECRET" not in out and "STDLIBSECRET" not in out
    events = lines(log_stream)
    assert events[0]["event"] == "oops" and "ValueError" in events[0]["exception"]
    assert events[1]["logger"] == "azure.servicebus"


def test_bad_log_level_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("LOUD", io.StringIO())


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.mark.timeout(30)
def test_health_endpoints_follow_the_state() -> None:
    now = [0.0]
    state = HealthState(liveness_timeout=10, clock=lambda: now[0])
    metrics = Metrics()
    server = HealthServer(state, metrics, host="127.0.0.1", port=0).start()
    try:
        assert get(server.port, "/healthz")[0] == 503  # no loop yet
        assert get(server.port, "/readyz")[0] == 503
        state.beat("r0")
        state.set_connected("r0", True)
        assert get(server.port, "/healthz")[0] == 200
        status, body = get(server.port, "/readyz")
        assert status == 200 and json.loads(body)["connected"] is True
        now[0] = 11.0  # the loop stopped beating
        status, body = get(server.port, "/healthz")
        assert status == 503 and json.loads(body)["stale"] == ["r0"]
        state.beat("r0")
        state.set_draining()
        status, body = get(server.port, "/readyz")
        assert status == 503 and json.loads(body)["draining"] is True
        assert get(server.port, "/healthz")[0] == 200  # draining is not dead
        metrics.received.inc(3)
        status, text = get(server.port, "/metrics")
        assert status == 200 and "gcw_requests_received_total 3.0" in text
        assert get(server.port, "/nope")[0] == 404
    finally:
        server.stop()


def test_request_context_fields_reach_every_line_and_nest(log_stream: io.StringIO) -> None:
    log = structlog.get_logger("t")
    with request_context(message_id="m-2", attempt=1) as context:
        context["collection"] = "col"
        with request_context(action="ingest", attempt=3):
            log.info("inner", attempt=4)
        log.warning("outer")
    log.info("after")
    inner, outer, after = lines(log_stream)[-3:]
    assert inner["message_id"] == "m-2" and inner["collection"] == "col" and inner["action"] == "ingest"
    assert inner["attempt"] == 4  # the call's own key wins
    assert outer["attempt"] == 1 and "action" not in outer and outer["collection"] == "col"
    assert "message_id" not in after and "collection" not in after
