"""``geocatalog-worker run``: the pod's process. Every flag also reads ``GCW_<FLAG>`` (see docs/configuration.md)."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import click
import structlog

from worker import __version__
from worker.domain.secrets import Secret, redact
from worker.options import option, servicebus_options
from worker.servicebus.config import ConfigError, RunConfig


def _secret(value: str | None) -> Secret | None:
    return Secret(value) if value else None


@click.command("run")
@servicebus_options
@option("--reply-queue", help="Queue every result is published on (required).")
@option(
    "--allowed-reply-to",
    multiple=True,
    help="Extra entities a request's reply_to may name (repeatable; --reply-queue is always allowed). "
    "A request naming any other entity is answered 'invalid' on --reply-queue.",
)
@click.option(
    "--sessions/--no-sessions",
    envvar="GCW_SESSIONS",
    show_envvar=True,
    default=False,
    show_default=True,
    help="The request entity requires sessions (ordered per session; sessions spread across workers).",
)
@option("--max-sessions", type=int, default=8, show_default=True, help="Sessions processed at once (sessions only).")
@option("--session-idle-seconds", type=float, default=5.0, show_default=True, help="Release an idle session after.")
@option("--geocatalog-url", help="GeoCatalog endpoint, e.g. https://<name>.<id>.<region>.geocatalog.spatio.azure.com")
@option(
    "--geocatalog-token",
    help="Static bearer token for GeoCatalog (the emulator only; production uses DefaultAzureCredential). Secret.",
)
@option("--geocatalog-api-version", help="GeoCatalog api-version (default: the client's).")
@option(
    "--geocatalog-scope",
    help="Entra token scope for GeoCatalog (default: from the endpoint's cloud: *.geocatalog.spatio.azure.com -> "
    "https://geocatalog.spatio.azure.com/.default, *.geocatalog.spatio.azure.us -> the US Government scope).",
)
@option(
    "--geocatalog-budget",
    type=float,
    default=10.0,
    show_default=True,
    help="This process's share of the GeoCatalog API budget, in calls per second.",
)
@option(
    "--geocatalog-retry-seconds",
    type=float,
    default=60.0,
    show_default=True,
    help="Total time one GeoCatalog call may spend on in-call retries before the request is retried later.",
)
@option("--sas-api-url", help="Planetary Computer SAS API base URL used to sign asset hrefs.")
@option("--sas-subscription-key", help="Subscription key for the SAS API (optional). Secret.")
@option("--static-sas", multiple=True, help="'account/container=TOKEN' static SAS tokens (repeatable). Secret.")
@option("--sign-host", multiple=True, help="Host pattern whose asset hrefs are signed (repeatable allow-list).")
@option(
    "--geocatalog-sas-host",
    multiple=True,
    help="Host pattern of the catalog's managed storage (repeatable): its asset hrefs are signed with "
    "GeoCatalog's collection SAS token (GET /sas/token/{collectionId}); added to the signing allow-list.",
)
@click.option(
    "--content-digest/--no-content-digest",
    envvar="GCW_CONTENT_DIGEST",
    show_envvar=True,
    default=True,
    show_default=True,
    help="Write properties['gcw:digest'] (SHA-256 of the submitted item) so the worker recognises its own writes "
    "although the service rewrites asset hrefs and upgrades stac_extensions.",
)
@option("--item-url-host", multiple=True, help="Host pattern item_urls may be fetched from (repeatable allow-list).")
@option(
    "--event-mapping",
    multiple=True,
    help="Blob Storage events to accept (repeatable, first match wins): "
    "'container=items,prefix=stac/,suffix=.json,collection=NAME' (collection=@item: the item's collection "
    "field; account=NAME optional). Event blob URLs must pass --item-url-host too.",
)
@option(
    "--event-unmatched",
    type=click.Choice(["invalid", "ignore"]),
    default="invalid",
    show_default=True,
    help="An event no --event-mapping matches: answered 'invalid' and dead-lettered, or completed silently.",
)
@option(
    "--storage-host",
    multiple=True,
    help="Host pattern of private storage (repeatable): item_urls and event blobs there are read with "
    "azure-storage-blob and --storage-credential.",
)
@option(
    "--storage-credential",
    type=click.Choice(["identity", "sas"]),
    default="identity",
    show_default=True,
    help="How --storage-host blobs are read: identity = DefaultAzureCredential (workload identity); "
    "sas = a token from --static-sas / --sas-api-url for the blob's account/container.",
)
@option("--concurrency", type=int, default=64, show_default=True, help="Requests in flight per process.")
@option("--max-receive-batch", type=int, default=32, show_default=True, help="Messages per receive call.")
@option("--max-attempts", type=int, default=5, show_default=True, help="Attempts before RetriesExhausted.")
@option(
    "--max-result-bytes",
    type=int,
    default=240 * 1024,
    show_default=True,
    help="Result bodies are shortened to fit (keeping status, counts and every item id); keep it under the "
    "reply queue's message size limit (256 KiB on Standard).",
)
@option("--retry-base-seconds", type=float, default=5.0, show_default=True, help="Backoff of the 1st retry.")
@option("--retry-max-seconds", type=float, default=300.0, show_default=True, help="Backoff cap.")
@option(
    "--max-lock-renewal-seconds",
    type=float,
    default=3600.0,
    show_default=True,
    help="Renew a message's lock for at most this long.",
)
@option(
    "--operation-timeout-seconds",
    type=float,
    default=600.0,
    show_default=True,
    help="Deadline of one GeoCatalog operation's polling.",
)
@option(
    "--batch-linger-ms",
    type=float,
    default=30.0,
    show_default=True,
    help="How long an ingest batch waits for more requests to merge.",
)
@option("--batch-max-items", type=int, default=100, show_default=True, help="Items per merged ingest POST.")
@option(
    "--batch-max-items-backlog",
    type=int,
    default=1000,
    show_default=True,
    help="Items per merged ingest POST while the GeoCatalog budget is the bottleneck (POSTs wait for budget).",
)
@option(
    "--operation-watch",
    type=click.Choice(["list", "each"]),
    default="list",
    show_default=True,
    help="How operations are polled: 'list' reads each collection's operation list once per tick for all of this "
    "process's operations; 'each' GETs every operation on its own.",
)
@option(
    "--breaker-threshold",
    type=int,
    default=5,
    show_default=True,
    help="Consecutive transient failures that open the circuit breaker.",
)
@option(
    "--breaker-open-seconds",
    type=float,
    default=10.0,
    show_default=True,
    help="How long the breaker holds intake before a probe (doubles while the probe fails).",
)
@option("--breaker-max-open-seconds", type=float, default=120.0, show_default=True, help="Cap of that hold.")
@option(
    "--drain-seconds",
    type=float,
    default=30.0,
    show_default=True,
    help="On SIGTERM/SIGINT, how long in-flight requests may finish before they are abandoned.",
)
@option("--health-host", default="0.0.0.0", show_default=True, help="Address of the health/metrics server.")
@option(
    "--health-port",
    type=int,
    default=8080,
    show_default=True,
    help="Port of /healthz, /readyz and /metrics (0 = any free port, logged at start).",
)
@option("--log-level", default="INFO", show_default=True, help="DEBUG, INFO, WARNING or ERROR.")
def run_command(**kwargs: Any) -> None:
    """Consume request messages, process them against GeoCatalog, publish one result each, settle.

    Stops on SIGTERM or SIGINT: no new messages, readiness turns false, in-flight requests get
    --drain-seconds to finish, the rest is abandoned for redelivery, exit status 0.
    """
    cfg = RunConfig(
        servicebus_connection_string=_secret(kwargs["servicebus_connection_string"]),
        servicebus_namespace=kwargs["servicebus_namespace"],
        request_queue=kwargs["request_queue"],
        request_topic=kwargs["request_topic"],
        request_subscription=kwargs["request_subscription"],
        reply_queue=kwargs["reply_queue"],
        allowed_reply_to=tuple(kwargs["allowed_reply_to"]),
        sessions=kwargs["sessions"],
        max_sessions=kwargs["max_sessions"],
        session_idle_seconds=kwargs["session_idle_seconds"],
        geocatalog_url=kwargs["geocatalog_url"],
        geocatalog_token=_secret(kwargs["geocatalog_token"]),
        geocatalog_api_version=kwargs["geocatalog_api_version"],
        geocatalog_scope=kwargs["geocatalog_scope"],
        geocatalog_budget=kwargs["geocatalog_budget"],
        geocatalog_retry_seconds=kwargs["geocatalog_retry_seconds"],
        sas_api_url=kwargs["sas_api_url"],
        sas_subscription_key=_secret(kwargs["sas_subscription_key"]),
        static_sas=tuple(kwargs["static_sas"]),
        sign_hosts=tuple(kwargs["sign_host"]),
        geocatalog_sas_hosts=tuple(kwargs["geocatalog_sas_host"]),
        item_url_hosts=tuple(kwargs["item_url_host"]),
        content_digest=kwargs["content_digest"],
        event_mappings=tuple(kwargs["event_mapping"]),
        event_unmatched=kwargs["event_unmatched"],
        storage_hosts=tuple(kwargs["storage_host"]),
        storage_credential=kwargs["storage_credential"],
        concurrency=kwargs["concurrency"],
        max_receive_batch=kwargs["max_receive_batch"],
        max_attempts=kwargs["max_attempts"],
        max_result_bytes=kwargs["max_result_bytes"],
        retry_base_seconds=kwargs["retry_base_seconds"],
        retry_max_seconds=kwargs["retry_max_seconds"],
        max_lock_renewal_seconds=kwargs["max_lock_renewal_seconds"],
        operation_timeout_seconds=kwargs["operation_timeout_seconds"],
        batch_linger_ms=kwargs["batch_linger_ms"],
        batch_max_items=kwargs["batch_max_items"],
        batch_max_items_backlog=kwargs["batch_max_items_backlog"],
        operation_watch=kwargs["operation_watch"],
        breaker_threshold=kwargs["breaker_threshold"],
        breaker_open_seconds=kwargs["breaker_open_seconds"],
        breaker_max_open_seconds=kwargs["breaker_max_open_seconds"],
        drain_seconds=kwargs["drain_seconds"],
        health_host=kwargs["health_host"],
        health_port=kwargs["health_port"],
        log_level=kwargs["log_level"],
    )
    try:
        cfg.validate()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(run(cfg))


def run(cfg: RunConfig) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status."""
    from worker import tracing
    from worker.observability.health import HealthServer, HealthState
    from worker.observability.logging import configure_logging
    from worker.observability.metrics import Metrics
    from worker.servicebus.client import make_servicebus_client
    from worker.servicebus.service import Consumer
    from worker.servicebus.settings import ConsumerSettings
    from worker.servicebus.wiring import build_limits, build_processor

    configure_logging(cfg.log_level)
    log = structlog.get_logger("worker.servicebus")
    try:
        exporters = tracing.configure_tracing()  # the OTEL_* environment (docs/observability.md "Traces")
    except tracing.TracingError as exc:
        log.error("tracing_misconfigured", error=str(exc))
        return 2
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        log.info("signal_received", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    metrics = Metrics()
    health = HealthState()
    try:
        server = HealthServer(health, metrics, host=cfg.health_host, port=cfg.health_port).start()
    except OSError as exc:
        log.error("health_server_failed", host=cfg.health_host, port=cfg.health_port, error=str(exc))
        return 2
    log.info("health_server_started", host=cfg.health_host, port=server.port)
    log.info("worker_configured", version=__version__, tracing=list(exporters) or "off", **cfg.summary())
    try:
        limits = build_limits(cfg)
        processor = build_processor(cfg, metrics, limits)
        secret = cfg.servicebus_connection_string
        connection = {
            "connection_string": secret.reveal() if secret else None,
            "namespace": cfg.servicebus_namespace,
        }
        client = make_servicebus_client(**connection)
        session_client = make_servicebus_client(**connection, retry_total=0) if cfg.sessions else None
    except Exception as exc:
        log.error("startup_failed", error=redact(f"{type(exc).__name__}: {exc}"))
        server.stop()
        return 2
    settings = ConsumerSettings(
        reply_queue=cfg.reply_queue or "",
        request_queue=cfg.request_queue,
        request_topic=cfg.request_topic,
        request_subscription=cfg.request_subscription,
        allowed_reply_to=frozenset(cfg.allowed_reply_to),
        concurrency=cfg.concurrency,
        max_receive_batch=cfg.max_receive_batch,
        max_lock_renewal_seconds=cfg.max_lock_renewal_seconds,
        max_result_bytes=cfg.max_result_bytes,
        drain_seconds=cfg.drain_seconds,
        sessions=cfg.sessions,
        max_sessions=cfg.max_sessions,
        session_idle_seconds=cfg.session_idle_seconds,
        breaker_threshold=cfg.breaker_threshold,
        breaker_open_seconds=cfg.breaker_open_seconds,
        breaker_max_open_seconds=cfg.breaker_max_open_seconds,
    )
    consumer = Consumer(
        client, settings, processor, limits=limits, metrics=metrics, health=health, session_client=session_client
    )
    status = 0
    try:
        if not consumer.run(stop):
            status = 1  # a receiver loop crashed: let the orchestrator restart the pod
    finally:
        closers = (getattr(processor, "batcher", None), getattr(processor, "operations", None))
        for closer in (*closers, client, session_client, server):
            try:
                if closer is server:
                    server.stop()
                elif closer is not None:
                    closer.close()
            except Exception:
                log.debug("close_failed", exc_info=True)
        log.info("worker_stopped", exit_status=status)
        tracing.shutdown()  # flush the spans still queued for export
    return status
