"""``geocatalog-worker run``: the pod's process. Every flag also reads ``GCW_<FLAG>`` (see docs/configuration.md)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import click
import structlog

from worker import __version__
from worker.domain.secrets import Secret, redact
from worker.options import F, option, servicebus_options
from worker.servicebus.config import ConfigError, RunConfig


def _secret(value: str | None) -> Secret | None:
    return Secret(value) if value else None


def _number(name: str, kind: type[int] | type[float], default: float, help: str) -> Callable[[F], F]:
    """A numeric flag that shows its default."""
    return option(name, type=kind, default=default, show_default=True, help=help)


# every flag of ``run``; ``check`` takes the same ones, so it checks exactly what ``run`` would use
_RUN_OPTIONS: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    servicebus_options,
    option("--reply-queue", help="Queue every result is published on (required)."),
    option(
        "--allowed-reply-to",
        multiple=True,
        help="Extra entities a request's reply_to may name (repeatable; --reply-queue is always allowed). "
        "A request naming any other entity is answered 'invalid' on --reply-queue.",
    ),
    click.option(
        "--sessions/--no-sessions",
        envvar="GCW_SESSIONS",
        show_envvar=True,
        default=False,
        show_default=True,
        help="The request entity requires sessions (ordered per session; sessions spread across workers).",
    ),
    _number("--max-sessions", int, 8, "Sessions processed at once (sessions only)."),
    _number("--session-idle-seconds", float, 5.0, "Release an idle session after."),
    option(
        "--geocatalog-url", help="GeoCatalog endpoint, e.g. https://<name>.<id>.<region>.geocatalog.spatio.azure.com"
    ),
    option(
        "--geocatalog-token",
        help="Static bearer token for GeoCatalog (the emulator only; production uses DefaultAzureCredential). Secret.",
    ),
    option("--geocatalog-api-version", help="GeoCatalog api-version (default: the client's)."),
    option(
        "--geocatalog-scope",
        help="Entra token scope for GeoCatalog (default: from the endpoint's cloud: *.geocatalog.spatio.azure.com -> "
        "https://geocatalog.spatio.azure.com/.default, *.geocatalog.spatio.azure.us -> the US Government scope).",
    ),
    _number(
        "--geocatalog-budget", float, 10.0, "This process's share of the GeoCatalog API budget, in calls per second."
    ),
    _number(
        "--geocatalog-retry-seconds",
        float,
        60.0,
        "Total time one GeoCatalog call may spend on in-call retries before the request is retried later.",
    ),
    option("--sas-api-url", help="Planetary Computer SAS API base URL used to sign asset hrefs."),
    option("--sas-subscription-key", help="Subscription key for the SAS API (optional). Secret."),
    option("--static-sas", multiple=True, help="'account/container=TOKEN' static SAS tokens (repeatable). Secret."),
    option("--sign-host", multiple=True, help="Host pattern whose asset hrefs are signed (repeatable allow-list)."),
    option(
        "--geocatalog-sas-host",
        multiple=True,
        help="Host pattern of the catalog's managed storage (repeatable): its asset hrefs are signed with "
        "GeoCatalog's collection SAS token (GET /sas/token/{collectionId}); added to the signing allow-list.",
    ),
    click.option(
        "--content-digest/--no-content-digest",
        envvar="GCW_CONTENT_DIGEST",
        show_envvar=True,
        default=True,
        show_default=True,
        help="Write properties['gcw:digest'] (SHA-256 of the submitted item) so the worker recognises its own "
        "writes although the service rewrites asset hrefs and upgrades stac_extensions.",
    ),
    option(
        "--item-url-host", multiple=True, help="Host pattern item_urls may be fetched from (repeatable allow-list)."
    ),
    option(
        "--event-mapping",
        multiple=True,
        help="Blob Storage events to accept (repeatable, first match wins): "
        "'container=items,prefix=stac/,suffix=.json,collection=NAME' (collection=@item: the item's collection "
        "field; account=NAME optional). Event blob URLs must pass --item-url-host too.",
    ),
    option(
        "--event-unmatched",
        type=click.Choice(["invalid", "ignore"]),
        default="invalid",
        show_default=True,
        help="An event no --event-mapping matches: answered 'invalid' and dead-lettered, or completed silently.",
    ),
    option(
        "--storage-host",
        multiple=True,
        help="Host pattern of private storage (repeatable): item_urls and event blobs there are read with "
        "azure-storage-blob and --storage-credential.",
    ),
    option(
        "--storage-credential",
        type=click.Choice(["identity", "sas"]),
        default="identity",
        show_default=True,
        help="How --storage-host blobs are read: identity = DefaultAzureCredential (workload identity); "
        "sas = a token from --static-sas / --sas-api-url for the blob's account/container.",
    ),
    _number("--concurrency", int, 64, "Requests in flight per process."),
    _number("--max-receive-batch", int, 32, "Messages per receive call."),
    _number("--max-attempts", int, 5, "Attempts before RetriesExhausted."),
    _number(
        "--max-result-bytes",
        int,
        240 * 1024,
        "Result bodies are shortened to fit (keeping status, counts and every item id); keep it under the "
        "reply queue's message size limit (256 KiB on Standard).",
    ),
    _number("--retry-base-seconds", float, 5.0, "Backoff of the 1st retry."),
    _number("--retry-max-seconds", float, 300.0, "Backoff cap."),
    _number("--max-lock-renewal-seconds", float, 3600.0, "Renew a message's lock for at most this long."),
    _number("--operation-timeout-seconds", float, 600.0, "Deadline of one GeoCatalog operation's polling."),
    _number("--batch-linger-ms", float, 30.0, "How long an ingest batch waits for more requests to merge."),
    _number("--batch-max-items", int, 100, "Items per merged ingest POST."),
    _number("--breaker-threshold", int, 5, "Consecutive transient failures that open the circuit breaker."),
    _number("--breaker-open-seconds", float, 10.0, "Breaker hold before a probe; doubles while probes fail."),
    _number("--breaker-max-open-seconds", float, 120.0, "Cap of that hold."),
    _number(
        "--drain-seconds",
        float,
        30.0,
        "On SIGTERM/SIGINT, how long in-flight requests may finish before they are abandoned.",
    ),
    option(
        "--burst",
        type=click.FloatRange(min=0, min_open=True),
        metavar="SECONDS",
        help="Burst mode (backfills, a KEDA ScaledJob): once the request entity has stayed empty for SECONDS, "
        "with nothing in flight and no retry this process scheduled still due, stop receiving and exit 0. "
        "Off by default: run until SIGTERM.",
    ),
    option("--health-host", default="0.0.0.0", show_default=True, help="Address of the health/metrics server."),
    _number("--health-port", int, 8080, "Port of /healthz, /readyz and /metrics (0 = any free port, logged at start)."),
    option("--log-level", default="INFO", show_default=True, help="DEBUG, INFO, WARNING or ERROR."),
]


def run_options(func: F) -> F:
    """Apply every flag of ``run`` to ``func`` (in ``--help`` order)."""
    for decorator in reversed(_RUN_OPTIONS):
        func = decorator(func)  # type: ignore[assignment]
    return func


@click.command("run")
@run_options
def run_command(**kwargs: Any) -> None:
    """Consume request messages, process them against GeoCatalog, publish one result each, settle.

    Stops on SIGTERM or SIGINT: no new messages, readiness turns false, in-flight requests get
    --drain-seconds to finish, the rest is abandoned for redelivery, exit status 0. With --burst SECONDS it
    also stops, exit status 0, once the request entity has stayed empty for SECONDS.
    """
    sys.exit(run(config_from_options(kwargs)))


def config_from_options(kwargs: dict[str, Any]) -> RunConfig:
    """The validated ``RunConfig`` of ``run_options``' values (a ``click.UsageError`` naming the flag if wrong)."""
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
        breaker_threshold=kwargs["breaker_threshold"],
        breaker_open_seconds=kwargs["breaker_open_seconds"],
        breaker_max_open_seconds=kwargs["breaker_max_open_seconds"],
        drain_seconds=kwargs["drain_seconds"],
        burst_seconds=kwargs["burst"],
        health_host=kwargs["health_host"],
        health_port=kwargs["health_port"],
        log_level=kwargs["log_level"],
    )
    try:
        cfg.validate()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    return cfg


def run(cfg: RunConfig) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status."""
    from worker import tracing
    from worker.observability.health import HealthServer, HealthState
    from worker.observability.logging import configure_logging
    from worker.observability.metrics import Metrics
    from worker.servicebus.faults import CHECK_GEOCATALOG
    from worker.servicebus.preflight import check_geocatalog, run_preflight
    from worker.servicebus.service import Consumer
    from worker.servicebus.wiring import (
        build_limits,
        build_preflight_geocatalog_client,
        build_processor,
        build_servicebus_clients,
        consumer_settings,
    )

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
        client, session_client = build_servicebus_clients(cfg)
        probe_client = build_preflight_geocatalog_client(cfg, metrics)
    except Exception as exc:
        log.error("startup_failed", error=redact(f"{type(exc).__name__}: {exc}"))
        server.stop()
        return 2
    settings = consumer_settings(cfg)
    consumer = Consumer(
        client, settings, processor, limits=limits, metrics=metrics, health=health, session_client=session_client
    )
    for result in run_preflight(client, settings, probe_client, receiver_client=session_client):
        log.log(
            logging.INFO if result.ok else logging.ERROR,
            "preflight_check",
            check=result.name,
            result=result.status,
            cause=result.cause and str(result.cause),
            detail=result.detail,
        )
        if result.cause is None:
            continue
        if result.name == CHECK_GEOCATALOG:  # hold intake until the endpoint answers and accepts the token
            consumer.hold_for(result, lambda: check_geocatalog(probe_client))
        else:  # cleared by the receiver loop once its links open
            consumer.faults.report(result.name, str(result.cause), result.detail)
    status = 0
    try:
        if not consumer.run(stop):
            status = 1  # a receiver loop crashed: let the orchestrator restart the pod
    finally:
        for closer in (getattr(processor, "batcher", None), probe_client, client, session_client, server):
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


@click.command("check")
@run_options
def check_command(**kwargs: Any) -> None:
    """Check what run needs, with the same flags as run; print a table; exit 1 when a check fails.

    Checks: receive (Listen on the request entity; peeks, locks nothing), send_reply (Send on the reply queue;
    sends nothing), schedule (Send on the request queue, where retries are scheduled), geocatalog (one read,
    GET /stac/collections). The CAUSE column names a configuration fault (see docs/operations.md).
    """
    sys.exit(check(config_from_options(kwargs)))


def check(cfg: RunConfig) -> int:
    """The preflight of ``run`` as a command: 0 when every check passes, 1 otherwise, 2 when it cannot start."""
    from worker.observability.logging import configure_logging
    from worker.observability.metrics import Metrics
    from worker.servicebus.preflight import format_table, run_preflight
    from worker.servicebus.wiring import build_preflight_geocatalog_client, build_servicebus_clients, consumer_settings

    configure_logging("ERROR")  # the table is the output
    try:
        client, session_client = build_servicebus_clients(cfg)
        geocatalog = build_preflight_geocatalog_client(cfg, Metrics())
    except Exception as exc:
        click.echo(f"cannot start the checks: {redact(f'{type(exc).__name__}: {exc}')}", err=True)
        return 2
    try:
        results = run_preflight(client, consumer_settings(cfg), geocatalog, receiver_client=session_client)
    finally:
        for closer in (geocatalog, client, session_client):
            if closer is not None:
                closer.close()
    click.echo(format_table(results))
    failed = [r.name for r in results if not r.ok]
    click.echo(f"{len(failed)} check(s) failed: {', '.join(failed)}" if failed else "all checks passed")
    return 1 if failed else 0
