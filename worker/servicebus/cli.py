"""``geocatalog-worker run``: the pod's process. Every flag also reads ``GCW_<FLAG>`` (see docs/configuration.md)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

import click
import structlog

from worker import __version__
from worker.domain.secrets import redact
from worker.options import F, config_from_values, config_options
from worker.servicebus.config import ConfigError, RunConfig


def run_options(func: F) -> F:
    """Every flag of ``run``, generated from ``RunConfig`` (``check`` takes the same ones)."""
    return config_options()(func)


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
    cfg = config_from_values(kwargs)
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
        client, direct_client = build_servicebus_clients(cfg)
        probe_client = build_preflight_geocatalog_client(cfg, metrics)
    except Exception as exc:
        log.error("startup_failed", error=redact(f"{type(exc).__name__}: {exc}"))
        server.stop()
        return 2
    settings = consumer_settings(cfg)
    consumer = Consumer(
        client, settings, processor, limits=limits, metrics=metrics, health=health, direct_client=direct_client
    )
    for result in run_preflight(client, settings, probe_client, direct_client=direct_client):
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
        for closer in (getattr(processor, "batcher", None), probe_client, client, direct_client, server):
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
        client, direct_client = build_servicebus_clients(cfg)
        geocatalog = build_preflight_geocatalog_client(cfg, Metrics())
    except Exception as exc:
        click.echo(f"cannot start the checks: {redact(f'{type(exc).__name__}: {exc}')}", err=True)
        return 2
    try:
        results = run_preflight(client, consumer_settings(cfg), geocatalog, direct_client=direct_client)
    finally:
        for closer in (geocatalog, client, direct_client):
            closer.close()
    click.echo(format_table(results))
    failed = [r.name for r in results if not r.ok]
    click.echo(f"{len(failed)} check(s) failed: {', '.join(failed)}" if failed else "all checks passed")
    return 1 if failed else 0
