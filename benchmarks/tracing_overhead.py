"""CPU of worker.tracing's hooks for one single-item request, tracing off and on (docs/benchmarks.md "Tracing").

    python -m benchmarks.tracing_overhead

Runs the hooks one request passes through (receive, process, the submission's context, the batch, a POST and a
poll, the result's send span, the settlement, and ten log lines' trace-id processor) in a loop, without the work
around them, so that the figure is the hooks' own cost: while off, what every request pays for tracing existing.
"On" uses an SDK provider whose spans go nowhere (no exporter), so it is the spans' cost without the export.
"""

from __future__ import annotations

import time

from worker import tracing

TP = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
URL = "https://x.westeurope.geocatalog.spatio.azure.com/stac/collections/c1/items"


def one_request() -> None:
    message = tracing.message_received(TP, entity="requests", message_id="m", delivery_count=1, attempt=1)
    with tracing.process_span(message):
        ctx = tracing.current_context()
        with tracing.batch_span("c1", "upsert", [ctx]):
            for route in ("/stac/collections/{collectionId}/items", "/inma/operations/{operationId}"):
                with tracing.http_span("POST", route, URL, 1) as call:
                    call.response(202, lambda: {"client_request_id": "x"})
        for _ in range(10):
            tracing.add_trace_ids(None, "info", {})
    send = tracing.reply_span(message, "replies", TP)
    send.end()
    with tracing.settle_span(message, "complete"):
        pass
    tracing.message_finished(message, "succeeded")


def per_request_us(n: int) -> float:
    one_request()
    t0 = time.process_time()
    for _ in range(n):
        one_request()
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    tracing.uninstall()
    off = per_request_us(100_000)
    from opentelemetry.sdk.trace import TracerProvider

    tracing.install(TracerProvider())
    on = per_request_us(5_000)
    tracing.uninstall()
    print(f"tracing off: {off:.2f} µs CPU per request; on (no exporter): {on:.0f} µs CPU per request")


if __name__ == "__main__":
    main()
