"""OpenTelemetry tracing of the worker: the one module that uses OpenTelemetry (docs/observability.md "Traces").

Off by default. ``configure_tracing()`` (called once by ``geocatalog-worker run``) turns it on from the standard
environment variables: ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``none``; a comma-separated list),
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (on their own they mean ``otlp``) and
``APPLICATIONINSIGHTS_CONNECTION_STRING`` (Azure Monitor); ``OTEL_SDK_DISABLED=true`` keeps it off. Everything
else (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_BSP_*``, ...) is read by the OpenTelemetry SDK and exporters themselves. The SDK and the OTLP exporter
come with the ``otel`` extra, the Azure Monitor exporter with ``azure-monitor``; only the API is a dependency.

While off, every hook below is one test of a module variable and returns a shared no-op object: no span, no
context switch (benchmarks: docs/benchmarks.md "Tracing").

The spans of one request message, all in the trace of the message's ``traceparent`` application property (else
``Diagnostic-Id``, as azure-servicebus writes them; else a new trace):

- ``receive <entity>`` (CONSUMER), from receive to settlement, on the receiver thread; its children:
- ``process <entity>`` (INTERNAL), parse and process on a worker thread; under it every GeoCatalog HTTP call
  (``<METHOD> <route>``, CLIENT, one per attempt, with a ``traceparent`` header) and ``ingest <collection>``
  (INTERNAL) for a merged ItemCollection POST, which is parented on the first request of the batch and links the
  ``process`` span of every request in it;
- ``send <reply queue>`` (PRODUCER): its context is written onto the result message as ``traceparent``
  (``Diagnostic-Id`` too, and ``tracestate``), so the producer's trace continues in whoever reads the result;
- ``settle <entity>`` (CLIENT): complete, dead-letter, abandon or the re-schedule of a retry.

With tracing off the result message carries the request's own trace context unchanged. Log lines written while a
span is current carry ``trace_id`` and ``span_id`` (``add_trace_ids``, a structlog processor).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar
from urllib.parse import urlsplit

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from worker import __version__
from worker.domain.secrets import redact

__all__ = [
    "DIAGNOSTIC_ID",
    "TRACEPARENT",
    "TRACESTATE",
    "MessageTrace",
    "SpanHandle",
    "TraceContext",
    "TracingError",
    "add_trace_ids",
    "batch_span",
    "carry_context",
    "configure_tracing",
    "current_context",
    "enabled",
    "http_span",
    "install",
    "message_finished",
    "message_received",
    "process_span",
    "reply_span",
    "settle_span",
    "shutdown",
    "uninstall",
    "watch_span",
]

log = structlog.get_logger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
DIAGNOSTIC_ID = "Diagnostic-Id"
SERVICE_NAME = "geocatalog-worker"
_TRACER_NAME = "geocatalog_worker"
_PROPAGATOR = TraceContextTextMapPropagator()
# version-traceid-spanid-flags (W3C Trace Context level 1), neither id all zeros: the cheap check of the off path
_W3C_TRACEPARENT = re.compile(r"[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
_MESSAGING = {"messaging.system": "servicebus"}

TraceContext = Context  # an OpenTelemetry context, handed between threads (``current_context``)
P = ParamSpec("P")
R = TypeVar("R")


class TracingError(RuntimeError):
    """The OTEL_* configuration cannot be honoured (unknown exporter, exporter package not installed)."""


@dataclass
class _State:
    tracer: trace.Tracer
    exporters: tuple[str, ...]
    on_shutdown: Callable[[], object] | None = None


_state: _State | None = None


def enabled() -> bool:
    return _state is not None


# ---- set-up ----------------------------------------------------------------------------------------------------


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def wanted_exporters(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The exporters the environment asks for; empty when tracing stays off."""
    if _truthy(environ.get("OTEL_SDK_DISABLED")):
        return ()
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names and (environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        names = ["otlp"]
    if "none" in names:
        names = []
    if environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING") and "azure_monitor" not in names:
        names.append("azure_monitor")
    return tuple(dict.fromkeys(names))


def _exporter(name: str, environ: Mapping[str, str]) -> object:
    try:
        if name == "otlp":
            protocol = (
                environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf"
            )
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

                return Grpc()
            if protocol != "http/protobuf":
                raise TracingError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use http/protobuf or grpc")
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter()
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            return ConsoleSpanExporter()
        if name == "azure_monitor":
            from azure.monitor.opentelemetry.exporter import AzureMonitorTraceExporter

            return AzureMonitorTraceExporter()  # reads APPLICATIONINSIGHTS_CONNECTION_STRING itself
    except ImportError as exc:
        package = {
            "otlp": "the otel extra: pip install 'geocatalog-worker[otel]'",
            "console": "the otel extra: pip install 'geocatalog-worker[otel]'",
            "azure_monitor": "the azure-monitor extra: pip install 'geocatalog-worker[azure-monitor]'",
        }[name]
        if name == "otlp" and "grpc" in str(exc):
            package = "opentelemetry-exporter-otlp-proto-grpc"
        raise TracingError(f"trace exporter {name!r} needs {package} ({exc.name or exc})") from None
    except TracingError:
        raise
    except Exception as exc:  # e.g. a malformed connection string: name the variable, never echo its value
        raise TracingError(
            f"trace exporter {name!r} could not be built from the environment: {redact(type(exc).__name__)}: "
            f"{redact(str(exc))}"
        ) from None
    raise TracingError(f"OTEL_TRACES_EXPORTER names {name!r}: use otlp, console or none")


def configure_tracing(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Turn tracing on when the environment asks for it; returns the exporters in use (empty: off).

    Raises ``TracingError`` naming the variable or the package when the configuration cannot be honoured.
    """
    environ = os.environ if environ is None else environ
    names = wanted_exporters(environ)
    if not names:
        return ()
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise TracingError(
            "tracing is asked for (OTEL_TRACES_EXPORTER / OTEL_EXPORTER_OTLP_ENDPOINT / "
            "APPLICATIONINSIGHTS_CONNECTION_STRING) but the OpenTelemetry SDK is not installed: "
            "pip install 'geocatalog-worker[otel]'"
        ) from None
    exporters = [_exporter(name, environ) for name in names]
    attributes: dict[str, str] = {"service.version": __version__}
    if not environ.get("OTEL_SERVICE_NAME") and "service.name=" not in environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        attributes["service.name"] = SERVICE_NAME
    provider = TracerProvider(resource=Resource.create(attributes))  # sampler: OTEL_TRACES_SAMPLER(_ARG)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))  # type: ignore[arg-type]
    trace.set_tracer_provider(provider)
    install(provider, exporters=names, on_shutdown=provider.shutdown)
    return names


def install(
    provider: trace.TracerProvider,
    *,
    exporters: Iterable[str] = ("custom",),
    on_shutdown: Callable[[], object] | None = None,
) -> None:
    """Trace with ``provider`` (tests pass one with an in-memory exporter; it is not made the global one)."""
    global _state
    _state = _State(provider.get_tracer(_TRACER_NAME, __version__), tuple(exporters), on_shutdown)


def uninstall() -> None:
    """Back to no tracing (tests)."""
    global _state
    _state = None


def shutdown() -> None:
    """Flush and stop the exporters (at exit); tracing is off afterwards."""
    state = _state
    uninstall()
    if state is not None and state.on_shutdown is not None:
        try:
            state.on_shutdown()
        except Exception as exc:  # an exporter that cannot flush must not change the exit status
            log.warning("tracing_shutdown_failed", error=redact(f"{type(exc).__name__}: {exc}"))


# ---- context -----------------------------------------------------------------------------------------------


def current_context() -> Context | None:
    """The caller's context, to hand to another thread (None while tracing is off)."""
    return otel_context.get_current() if _state is not None else None


def carry_context(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` to run on another thread in the caller's current context (``fn`` itself while tracing is off)."""
    if _state is None:
        return fn
    ctx = otel_context.get_current()

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        token = otel_context.attach(ctx)
        try:
            return fn(*args, **kwargs)
        finally:
            otel_context.detach(token)

    return run


def _parent(props: Mapping[str, object]) -> Context | None:
    """The producer's context from a message's ``traceparent`` (else ``Diagnostic-Id``) and ``tracestate``."""
    value = props.get(TRACEPARENT) or props.get(DIAGNOSTIC_ID)
    if not isinstance(value, str):
        return None
    carrier = {TRACEPARENT: value.strip()}
    state = props.get(TRACESTATE)
    if isinstance(state, str) and state:
        carrier[TRACESTATE] = state
    ctx = _PROPAGATOR.extract(carrier)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def passthrough_properties(props: Mapping[str, object]) -> dict[str, str]:
    """A request's own trace context properties, as the result message carries them while tracing is off."""
    value = props.get(TRACEPARENT) or props.get(DIAGNOSTIC_ID)
    if not isinstance(value, str) or not _W3C_TRACEPARENT.fullmatch(value):
        return {}
    out = {TRACEPARENT: value, DIAGNOSTIC_ID: value}
    state = props.get(TRACESTATE)
    if isinstance(state, str) and state:
        out[TRACESTATE] = state
    return out


def _properties(span: Span) -> dict[str, str]:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    if TRACEPARENT in carrier:
        carrier[DIAGNOSTIC_ID] = carrier[TRACEPARENT]
    return carrier


def add_trace_ids(_logger: object, _method: str, event_dict: dict[str, object]) -> dict[str, object]:
    """structlog processor: ``trace_id`` and ``span_id`` of the current span, when there is one."""
    if _state is None:
        return event_dict
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
    return event_dict


# ---- spans -------------------------------------------------------------------------------------------------


class _Noop:
    """The one object every hook returns while tracing is off: a context manager whose methods do nothing."""

    headers: Mapping[str, str] = {}
    properties: Mapping[str, str] = {}

    def __enter__(self) -> _Noop:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def response(self, status: int, request_ids: Callable[[], Mapping[str, str]] | None = None) -> None:
        return None

    def outcome(self, **attributes: str | int | None) -> None:
        return None

    def end(self, error: str | None = None) -> None:
        return None


_NOOP = _Noop()


@dataclass(eq=False)
class MessageTrace:
    """The ``receive`` span of one request message, open until the message is settled."""

    span: Span
    entity: str
    context: Context = field(init=False)
    ended: bool = False

    def __post_init__(self) -> None:
        self.context = trace.set_span_in_context(self.span)


class _Current:
    """A span made current for the ``with`` block (and ended with it unless ``end_on_exit`` is false)."""

    def __init__(self, span: Span, *, end_on_exit: bool = True) -> None:
        self.span = span
        self._end = end_on_exit
        self._token: object = None
        self.headers: Mapping[str, str] = {}
        self.properties: Mapping[str, str] = {}

    def __enter__(self) -> _Current:
        self._token = otel_context.attach(trace.set_span_in_context(self.span))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        try:
            if exc is not None:
                self.span.set_attribute("error.type", exc_type.__name__ if exc_type else "Exception")
                self.span.set_status(Status(StatusCode.ERROR, redact(f"{type(exc).__name__}: {exc}")[:500]))
        finally:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            if self._end:
                self.span.end()

    def response(self, status: int, request_ids: Callable[[], Mapping[str, str]] | None = None) -> None:
        """The HTTP status and (computed only now) the client's and the service's request ids."""
        self.span.set_attribute("http.response.status_code", status)
        for name, value in (request_ids() if request_ids is not None else {}).items():
            key = "az.client_request_id" if name == "client_request_id" else f"az.service_request_id.{name}"
            self.span.set_attribute(key, value)
        if status >= 400:
            self.span.set_attribute("error.type", str(status))
            self.span.set_status(Status(StatusCode.ERROR))

    def outcome(self, **attributes: str | int | None) -> None:
        for key, value in attributes.items():
            if value is not None:
                self.span.set_attribute(f"gcw.{key}", value)

    def end(self, error: str | None = None) -> None:
        if error:
            self.span.set_status(Status(StatusCode.ERROR, redact(error)[:500]))
        self.span.end()


SpanHandle = _Current | _Noop  # what the span hooks return: use it as a context manager, or call .end()


def message_received(
    props: Mapping[str, object], *, entity: str, message_id: str, delivery_count: int, attempt: int
) -> MessageTrace | None:
    """Start the ``receive`` span of a message (receiver thread); None while tracing is off."""
    state = _state
    if state is None:
        return None
    span = state.tracer.start_span(
        f"receive {entity}",
        context=_parent(props) or Context(),  # the producer's span, else a new trace
        kind=SpanKind.CONSUMER,
        attributes={
            **_MESSAGING,
            "messaging.operation.type": "receive",
            "messaging.destination.name": entity,
            "messaging.message.id": message_id,
            "messaging.servicebus.message.delivery_count": delivery_count,
            "gcw.attempt": attempt,
        },
    )
    return MessageTrace(span, entity)


def message_finished(message: MessageTrace | None, outcome: str, error: str | None = None) -> None:
    """End the ``receive`` span (settled, lost or abandoned); a second call does nothing."""
    if message is None or message.ended:
        return
    message.ended = True
    message.span.set_attribute("gcw.outcome", outcome)
    if error:
        message.span.set_status(Status(StatusCode.ERROR, redact(error)[:500]))
    message.span.end()


def _messaging_span(
    tracer: trace.Tracer, message: MessageTrace, operation: str, destination: str, kind: SpanKind, **attributes: str
) -> _Current:
    """A child of the message's ``receive`` span named ``<operation> <destination>``."""
    span = tracer.start_span(
        f"{operation} {destination}",
        context=message.context,
        kind=kind,
        attributes={
            **_MESSAGING,
            "messaging.operation.type": operation,
            "messaging.destination.name": destination,
            **attributes,
        },
    )
    return _Current(span)


def process_span(message: MessageTrace | None) -> SpanHandle:
    """The ``process`` span, current for the ``with`` block (worker thread)."""
    state = _state
    if state is None or message is None:
        return _NOOP
    return _messaging_span(state.tracer, message, "process", message.entity, SpanKind.INTERNAL)


def settle_span(message: MessageTrace | None, operation: str) -> SpanHandle:
    """A ``settle`` span (complete, dead_letter, abandon, schedule), current for the ``with`` block."""
    state = _state
    if state is None or message is None:
        return _NOOP
    return _messaging_span(
        state.tracer, message, "settle", message.entity, SpanKind.CLIENT, **{"messaging.operation.name": operation}
    )


def reply_span(message: MessageTrace | None, destination: str, request_props: Mapping[str, object]) -> SpanHandle:
    """The ``send`` span of a result message, started now and ended by ``.end()`` once the send is known.

    ``.properties`` are the application properties that carry its context on the result message (while tracing is
    off: the request's own ``traceparent`` / ``Diagnostic-Id`` / ``tracestate``, if any).
    """
    state = _state
    if state is None or message is None:
        props = passthrough_properties(request_props)
        return _Passthrough(props) if props else _NOOP
    current = _messaging_span(state.tracer, message, "send", destination, SpanKind.PRODUCER)
    current.properties = _properties(current.span)
    return current


class _Passthrough(_Noop):
    def __init__(self, properties: Mapping[str, str]) -> None:
        self.properties = properties


def http_span(method: str, route: str, url: str, attempt: int) -> SpanHandle:
    """A GeoCatalog HTTP call (one attempt), current for the ``with`` block; ``.headers`` carry its context."""
    state = _state
    if state is None:
        return _NOOP
    parts = urlsplit(url)
    span = state.tracer.start_span(
        f"{method} {route}",
        kind=SpanKind.CLIENT,
        attributes={
            "http.request.method": method,
            "http.route": route,
            "url.full": redact(f"{parts.scheme}://{parts.netloc}{parts.path}"),
            "server.address": parts.hostname or "",
            "server.port": parts.port or (443 if parts.scheme == "https" else 80),
            "http.request.resend_count": attempt - 1,
            "az.namespace": "Microsoft.Orbital",
        },
    )
    current = _Current(span)
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    current.headers = carrier
    return current


def batch_span(collection: str, mode: str, contexts: Iterable[Context | None]) -> SpanHandle:
    """The ``ingest`` span of a merged ItemCollection POST (flush thread): parented on the first request's
    context, linking every request in the batch."""
    return _linked_span(
        f"ingest {collection}", contexts, {"gcw.collection": collection, "gcw.mode": mode}, "gcw.batch.requests"
    )


def watch_span(collection: str, contexts: Iterable[Context | None]) -> SpanHandle:
    """The operation watcher's tick (its own thread): the reads that serve several batches at once, parented on
    the first waiting batch's context, linking every waiting batch."""
    return _linked_span(f"watch {collection}", contexts, {"gcw.collection": collection}, "gcw.watch.waiters")


def _linked_span(
    name: str, contexts: Iterable[Context | None], attributes: dict[str, str | int], count_attribute: str
) -> SpanHandle:
    state = _state
    if state is None:
        return _NOOP
    unique: list[Context] = []
    seen: set[int] = set()
    for ctx in contexts:
        if ctx is not None and id(ctx) not in seen:
            seen.add(id(ctx))
            unique.append(ctx)
    links = [Link(trace.get_current_span(c).get_span_context()) for c in unique]
    links = [link for link in links if link.context.is_valid]
    span = state.tracer.start_span(
        name,
        context=unique[0] if unique else Context(),
        kind=SpanKind.INTERNAL,
        links=links,
        attributes={**attributes, count_attribute: len(unique)},
    )
    return _Current(span)
