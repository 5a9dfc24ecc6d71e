"""Tracing end to end: a request sent with a ``traceparent`` is followed through the worker into its result.

Both emulators run over real sockets. The first tests run the consumer and the real processor in process with an
in-memory span exporter; the last runs ``geocatalog-worker run`` as a subprocess configured only by the standard
``OTEL_*`` variables, exporting OTLP/HTTP to a receiver in the test, and reads its JSON log lines.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from gcw_emulators.servicebus import QueueConfig
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.integration.test_runtime_integration import Running
from tests.support.harness import Harness, delete_request, ingest_request, stac_item, wait_until
from worker import tracing
from worker.domain.secrets import Secret
from worker.observability.health import HealthState
from worker.observability.metrics import Metrics
from worker.servicebus.config import RunConfig
from worker.servicebus.service import Consumer
from worker.servicebus.settings import ConsumerSettings
from worker.servicebus.wiring import build_limits, build_processor

pytestmark = pytest.mark.timeout(120)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"


def traceparent(trace_id: str = TRACE_ID, span_id: str = PARENT_SPAN_ID) -> str:
    return f"00-{trace_id}-{span_id}-01"


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def run_requests(sb_emulator, gc_emulator, messages: list[ServiceBusMessage]) -> list[Any]:  # type: ignore[no-untyped-def]
    """Send ``messages`` to a worker in process (real processor, both emulators); return the result messages."""
    sb = sb_emulator(queues=[QueueConfig("requests", lock_duration=10), QueueConfig("replies")])
    gc = gc_emulator(collections=["c1"], operation_seconds=0.1)
    cfg = RunConfig(
        geocatalog_url=gc.url,
        geocatalog_token=Secret(gc.token),
        reply_queue="replies",
        request_queue="requests",
        concurrency=8,
        operation_timeout_seconds=30,
    )
    metrics = Metrics()
    limits = build_limits(cfg)
    processor = build_processor(cfg, metrics, limits)
    got: list[Any] = []
    with ServiceBusClient.from_connection_string(sb.connection_string) as client:
        settings = ConsumerSettings(reply_queue="replies", request_queue="requests", concurrency=8)
        consumer = Consumer(client, settings, processor, limits=limits, metrics=metrics, health=HealthState())
        with client.get_queue_sender("requests") as sender:
            sender.send_messages(messages)
        try:
            with Running(consumer), client.get_queue_receiver("replies", max_wait_time=1) as receiver:
                deadline = time.monotonic() + 60
                while len(got) < len(messages) and time.monotonic() < deadline:
                    for m in receiver.receive_messages(max_message_count=10, max_wait_time=1):
                        got.append(m)
                        receiver.complete_message(m)
        finally:
            processor.batcher.close()
    assert len(got) == len(messages), f"{len(got)} of {len(messages)} results"
    return got


def by_trace(exporter: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]


def request_message(body: dict[str, Any], message_id: str, **props: str) -> ServiceBusMessage:
    return ServiceBusMessage(
        json.dumps(body).encode(), message_id=message_id, content_type="application/json", application_properties=props
    )


def test_a_traced_request_yields_one_trace_from_receive_through_geocatalog_to_the_result(
    sb_emulator, gc_emulator, spans
) -> None:  # type: ignore[no-untyped-def]
    sent = request_message(
        ingest_request("c1", [stac_item("a", "c1"), stac_item("b", "c1")]),
        "traced-1",
        traceparent=traceparent(),
        tracestate="vendor=abc",
    )
    [reply] = run_requests(sb_emulator, gc_emulator, [sent])
    assert json.loads(b"".join(reply.body))["status"] == "succeeded"

    assert wait_until(lambda: any(s.name.startswith("receive ") for s in by_trace(spans, TRACE_ID)), 10), [
        (s.name, format(s.context.trace_id, "032x"), s.parent) for s in spans.get_finished_spans()
    ]
    trace = by_trace(spans, TRACE_ID)
    names = [s.name for s in trace]
    by_name = {s.name: s for s in trace}
    receive = by_name["receive requests"]
    process = by_name["process requests"]
    send = by_name["send replies"]
    settle = by_name["settle requests"]
    post = by_name["POST /stac/collections/{collectionId}/items"]
    # the operation is read by the watcher's list read (one for every batch waiting on c1), in a watch span
    # parented on the waiting batch and linking it
    polls = [s for s in trace if s.name in ("GET /inma/operations", "GET /inma/operations/{operationId}")]
    batch = by_name["ingest c1"]
    watch = by_name["watch c1"]
    assert polls, names
    assert watch.parent is not None and watch.parent.span_id == batch.context.span_id
    assert [link.context.span_id for link in watch.links] == [batch.context.span_id]
    # the receive span continues the producer's span; everything else hangs under it
    assert receive.kind is SpanKind.CONSUMER and receive.parent is not None
    assert format(receive.parent.span_id, "016x") == PARENT_SPAN_ID
    assert receive.parent.is_remote
    assert process.parent is not None and process.parent.span_id == receive.context.span_id
    assert batch.parent is not None and batch.parent.span_id == process.context.span_id
    assert [link.context.span_id for link in batch.links] == [process.context.span_id]
    for call, parent in [(post, batch), *((poll, watch) for poll in polls)]:
        assert call.kind is SpanKind.CLIENT
        assert call.parent is not None and call.parent.span_id == parent.context.span_id
        assert call.attributes["http.response.status_code"] in (200, 202)
        assert call.attributes["az.client_request_id"]
    assert post.attributes["az.service_request_id.x_request_id"]
    assert send.kind is SpanKind.PRODUCER and send.parent.span_id == receive.context.span_id
    assert settle.attributes["messaging.operation.name"] == "complete"
    assert settle.parent.span_id == receive.context.span_id
    assert receive.attributes["gcw.outcome"] == "succeeded"
    assert process.attributes["gcw.status"] == "succeeded"
    assert receive.end_time >= settle.end_time
    # the result message carries the send span's context, so the producer's trace continues in its reader
    props = {_text(k): _text(v) for k, v in reply.application_properties.items()}
    expected = f"00-{TRACE_ID}-{format(send.context.span_id, '016x')}-01"
    assert props["traceparent"] == expected
    assert props["Diagnostic-Id"] == expected
    assert props["tracestate"] == "vendor=abc"


def test_diagnostic_id_alone_parents_the_trace_and_requests_keep_their_own_traces(
    sb_emulator, gc_emulator, spans
) -> None:  # type: ignore[no-untyped-def]
    other, deleted = uuid.uuid4().hex, uuid.uuid4().hex
    messages = [
        request_message(ingest_request("c1", [stac_item("x", "c1")]), "diag-1", **{"Diagnostic-Id": traceparent()}),
        request_message(ingest_request("c1", [stac_item("y", "c1")]), "tp-2", traceparent=traceparent(other)),
        request_message(ingest_request("c1", [stac_item("z", "c1")]), "untraced-3"),
        request_message(delete_request("c1", ["gone-1", "gone-2"]), "delete-4", traceparent=traceparent(deleted)),
    ]
    replies = run_requests(sb_emulator, gc_emulator, messages)
    assert wait_until(lambda: len([s for s in spans.get_finished_spans() if s.name.startswith("receive ")]) == 4, 10)
    receives = {
        s.attributes["messaging.message.id"]: s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER
    }
    assert format(receives["diag-1"].context.trace_id, "032x") == TRACE_ID
    assert format(receives["tp-2"].context.trace_id, "032x") == other
    assert receives["untraced-3"].parent is None  # a new trace of its own
    trace_ids = {format(s.context.trace_id, "032x") for s in receives.values()}
    assert len(trace_ids) == 4
    # the deletes run on a pool of their own: their calls are still in the request's trace, under its process span
    deletes = [
        s for s in by_trace(spans, deleted) if s.name == "DELETE /stac/collections/{collectionId}/items/{itemId}"
    ]
    [process] = [s for s in by_trace(spans, deleted) if s.name == "process requests"]
    assert len(deletes) == 2 and {d.parent.span_id for d in deletes} == {process.context.span_id}
    for reply in replies:
        props = {_text(k): _text(v) for k, v in reply.application_properties.items()}
        receive = receives[props["gcw-request-id"]]
        assert props["traceparent"].split("-")[1] == format(receive.context.trace_id, "032x")


def test_without_tracing_the_result_carries_the_request_context_unchanged(sb_emulator, gc_emulator) -> None:  # type: ignore[no-untyped-def]
    assert not tracing.enabled()
    messages = [
        request_message(ingest_request("c1", [stac_item("p", "c1")]), "off-1", traceparent=traceparent()),
        request_message(ingest_request("c1", [stac_item("q", "c1")]), "off-2"),
    ]
    replies = {
        _text(r.application_properties[b"gcw-request-id"]): r for r in run_requests(sb_emulator, gc_emulator, messages)
    }
    first = {_text(k): _text(v) for k, v in replies["off-1"].application_properties.items()}
    assert first["traceparent"] == first["Diagnostic-Id"] == traceparent()
    second = {_text(k) for k in replies["off-2"].application_properties}
    assert "traceparent" not in second and "Diagnostic-Id" not in second


# ---- the real command, configured by OTEL_* only -------------------------------------------------------------


class _OtlpReceiver(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver: decodes each ExportTraceServiceRequest (protobuf) into span dicts."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _OtlpHandler)
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()


class _OtlpHandler(BaseHTTPRequestHandler):
    server: _OtlpReceiver

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        found = []
        for resource_spans in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}.get("service.name")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        {
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "service": service,
                            "path": self.path,
                        }
                    )
        with self.server.lock:
            self.server.spans.extend(found)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.mark.slow
def test_the_worker_exports_otlp_from_the_otel_environment_and_logs_trace_ids() -> None:
    receiver = _OtlpReceiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        with Harness(collections=["c1"], operation_seconds=0.1) as h:
            env = {
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}",
                "OTEL_SERVICE_NAME": "gcw-e2e",
                "OTEL_BSP_SCHEDULE_DELAY": "100",
            }
            w = h.start_worker(env=env, concurrency=4)
            h.wait_ready(w)
            with h.client.get_queue_sender("requests") as sender:
                sender.send_messages(
                    request_message(ingest_request("c1", [stac_item("a", "c1")]), "otlp-1", traceparent=traceparent())
                )
            [reply] = h.collect_replies(1, timeout=30)
            assert _text(reply.application_properties["traceparent"]).split("-")[1] == TRACE_ID

            def exported() -> bool:
                with receiver.lock:
                    names = {s["name"] for s in receiver.spans if s["trace_id"] == TRACE_ID}
                return {"receive requests", "process requests", "send replies", "settle requests"} <= names

            assert wait_until(exported, 20), receiver.spans
            with receiver.lock:
                mine = [s for s in receiver.spans if s["trace_id"] == TRACE_ID]
            assert {s["service"] for s in mine} == {"gcw-e2e"}
            assert {s["path"] for s in mine} == {"/v1/traces"}
            assert any(s["name"].startswith("POST /stac/collections") for s in mine)
            [configured] = w.events("worker_configured")
            assert configured["tracing"] == ["otlp"]
            # every log line about this request carries its trace id
            lines = [e for e in w.events() if e.get("message_id") == "otlp-1"]
            assert {e["event"] for e in lines} >= {"request_processed", "request_completed"}
            assert all(e.get("trace_id") == TRACE_ID for e in lines), lines
            assert all(len(e["span_id"]) == 16 for e in lines)
            h.terminate(w)
    finally:
        receiver.shutdown()
        receiver.server_close()
