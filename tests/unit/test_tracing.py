"""worker.tracing: what the OTEL_* environment turns on, the off path, context hand-over and log correlation."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from worker import tracing
from worker.observability.logging import configure_logging

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def no_global_provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """configure_tracing() sets the process-wide provider once; record it instead, and turn tracing off after."""
    installed: list[object] = []
    monkeypatch.setattr(trace, "set_tracer_provider", installed.append)
    yield installed
    tracing.shutdown()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, ()),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ("otlp", "console")),
        ({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"}, ("azure_monitor",)),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"},
            ("otlp", "azure_monitor"),
        ),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, ()),
    ],
)
def test_the_environment_decides_the_exporters(environ: dict[str, str], expected: tuple[str, ...]) -> None:
    assert tracing.wanted_exporters(environ) == expected


def test_tracing_is_off_by_default_and_every_hook_is_the_shared_noop() -> None:
    assert tracing.configure_tracing({}) == ()
    assert not tracing.enabled()
    assert (
        tracing.message_received({"traceparent": TP}, entity="q", message_id="m", delivery_count=1, attempt=1) is None
    )
    assert tracing.process_span(None) is tracing.http_span("GET", "/r", "http://h/r", 1)
    assert tracing.settle_span(None, "complete") is tracing.batch_span("c", "upsert", [None])
    assert tracing.current_context() is None
    fn = lambda: 1  # noqa: E731
    assert tracing.carry_context(fn) is fn
    assert dict(tracing.http_span("GET", "/r", "http://h/r", 1).headers) == {}


def test_off_the_result_carries_the_request_context_and_nothing_when_it_had_none() -> None:
    props = tracing.reply_span(None, "replies", {"traceparent": TP, "tracestate": "a=b"}).properties
    assert props == {"traceparent": TP, "Diagnostic-Id": TP, "tracestate": "a=b"}
    assert tracing.reply_span(None, "replies", {"Diagnostic-Id": TP}).properties["traceparent"] == TP
    assert tracing.reply_span(None, "replies", {}).properties == {}
    # not W3C (an old hierarchical Request-Id): nothing to pass on
    assert tracing.reply_span(None, "replies", {"Diagnostic-Id": "|abc.1."}).properties == {}


def test_the_otlp_exporter_is_configured_from_the_environment(no_global_provider: list[object]) -> None:
    assert tracing.configure_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}) == ("otlp",)
    assert tracing.enabled()
    [provider] = no_global_provider
    assert isinstance(provider, TracerProvider)
    assert provider.resource.attributes["service.name"] == "geocatalog-worker"
    assert provider.resource.attributes["service.version"]


def test_azure_monitor_is_configured_from_the_connection_string(
    no_global_provider: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", "true")
    monkeypatch.setenv(
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:1/",
    )
    monkeypatch.setenv("OTEL_SERVICE_NAME", "my-worker")
    import os

    assert tracing.configure_tracing(os.environ) == ("azure_monitor",)
    [provider] = no_global_provider
    assert isinstance(provider, TracerProvider)
    assert provider.resource.attributes["service.name"] == "my-worker"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER names 'zipkin'"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL='http/json'",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "opentelemetry-exporter-otlp-proto-grpc",
        ),
        (
            {"APPLICATIONINSIGHTS_CONNECTION_STRING": "not-a-connection-string-SharedAccessKey=c2VjcmV0"},
            "trace exporter 'azure_monitor' could not be built",
        ),
    ],
)
def test_a_configuration_that_cannot_be_honoured_names_the_variable_or_package(
    environ: dict[str, str], message: str, no_global_provider: list[object]
) -> None:
    with pytest.raises(tracing.TracingError) as info:
        tracing.configure_tracing(environ)
    assert message in str(info.value)
    assert "c2VjcmV0" not in str(info.value)
    assert not tracing.enabled()


def test_spans_of_a_message_share_the_producer_trace_and_threads_carry_the_context(
    spans: InMemorySpanExporter,
) -> None:
    message = tracing.message_received(
        {"traceparent": TP, "tracestate": "a=b"}, entity="requests", message_id="m1", delivery_count=1, attempt=1
    )
    assert message is not None
    seen: list[object] = []
    with tracing.process_span(message):
        ctx = tracing.current_context()
        worker = threading.Thread(target=tracing.carry_context(lambda: seen.append(trace.get_current_span())))
        worker.start()
        worker.join()
        with (
            tracing.batch_span("c1", "upsert", [ctx, ctx, None]) as batch,
            tracing.http_span(
                "POST", "/stac/collections/{collectionId}/items", "http://h:81/stac/collections/c1/items?x=1", 2
            ) as call,
        ):
            assert call.headers["traceparent"].split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736"
            call.response(202, lambda: {"client_request_id": "cr-1", "x_request_id": "sr-1"})
        assert len(batch.span.links) == 1
    send = tracing.reply_span(message, "replies", {})
    assert send.properties["Diagnostic-Id"] == send.properties["traceparent"]
    assert send.properties["tracestate"] == "a=b"
    send.end()
    with tracing.settle_span(message, "complete"):
        pass
    tracing.message_finished(message, "succeeded")
    tracing.message_finished(message, "succeeded")  # once only
    finished = spans.get_finished_spans()
    assert [s.name for s in finished] == [
        "POST /stac/collections/{collectionId}/items",
        "ingest c1",
        "process requests",
        "send replies",
        "settle requests",
        "receive requests",
    ]
    assert {format(s.context.trace_id, "032x") for s in finished} == {"4bf92f3577b34da6a3ce929d0e0e4736"}
    post = finished[0]
    assert post.attributes["url.full"] == "http://h:81/stac/collections/c1/items"
    assert post.attributes["http.request.resend_count"] == 1
    assert post.attributes["az.client_request_id"] == "cr-1"
    assert post.attributes["az.service_request_id.x_request_id"] == "sr-1"
    process = finished[2]
    assert seen[0].get_span_context().span_id == process.context.span_id  # the other thread saw the process span


def test_a_failed_call_marks_its_span_with_the_error_and_no_secret(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ConnectionError), tracing.http_span("GET", "/r", "http://h/r", 1):
        raise ConnectionError("refused for https://a.blob.core.windows.net/c/x?sig=c2VjcmV0&se=2030")
    with tracing.http_span("GET", "/r", "http://h/r", 1) as call:
        call.response(503)
    failed, unavailable = spans.get_finished_spans()
    assert failed.attributes["error.type"] == "ConnectionError"
    assert failed.status.description and "c2VjcmV0" not in failed.status.description
    assert unavailable.attributes["error.type"] == "503"


def test_log_lines_carry_the_current_trace_and_span_ids(spans: InMemorySpanExporter, restore_logging) -> None:  # type: ignore[no-untyped-def]
    import structlog

    stream = io.StringIO()
    configure_logging("INFO", stream)
    log = structlog.get_logger("test.tracing")
    message = tracing.message_received({"traceparent": TP}, entity="q", message_id="m", delivery_count=1, attempt=1)
    log.info("outside")
    with tracing.process_span(message):
        log.info("inside")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "trace_id" not in first
    assert second["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert len(second["span_id"]) == 16 and second["span_id"] != "00f067aa0ba902b7"
