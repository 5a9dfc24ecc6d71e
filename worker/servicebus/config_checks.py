"""The checks of a ``RunConfig`` at start: the first problem found, with a message naming the flag and why."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from worker.domain.secrets import redact
from worker.servicebus.config import MAX_CONCURRENCY, ConfigError, flag_env

if TYPE_CHECKING:
    from worker.servicebus.config import RunConfig


def validate(cfg: RunConfig) -> None:
    """Raise ``ConfigError`` for the first problem found."""
    if bool(cfg.servicebus_connection_string) == bool(cfg.servicebus_namespace):
        raise ConfigError(
            f"give exactly one of {flag_env('--servicebus-connection-string')} or {flag_env('--servicebus-namespace')}"
        )
    if cfg.servicebus_connection_string:
        cs = cfg.servicebus_connection_string.reveal()
        if "endpoint=" not in cs.lower():
            raise ConfigError(
                f"{flag_env('--servicebus-connection-string')} has no 'Endpoint=sb://...' part: got {redact(cs)[:60]!r}"
            )
    if cfg.request_queue and (cfg.request_topic or cfg.request_subscription):
        raise ConfigError("give either --request-queue or --request-topic with --request-subscription, not both")
    if not cfg.request_queue and not (cfg.request_topic and cfg.request_subscription):
        raise ConfigError(
            f"give {flag_env('--request-queue')}, or --request-topic together with --request-subscription"
        )
    if not cfg.reply_queue:
        raise ConfigError(f"{flag_env('--reply-queue')} is required: every request is answered there")
    if not cfg.geocatalog_url:
        raise ConfigError(f"{flag_env('--geocatalog-url')} is required")
    parts = urlsplit(cfg.geocatalog_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{flag_env('--geocatalog-url')} must be an http(s) URL, got {redact(cfg.geocatalog_url)!r}")
    if cfg.geocatalog_scope is not None and not cfg.geocatalog_scope.startswith("https://"):
        raise ConfigError(
            f"{flag_env('--geocatalog-scope')} is an Entra scope such as "
            f"'https://geocatalog.spatio.azure.us/.default', got {redact(cfg.geocatalog_scope)!r}"
        )
    if cfg.sas_api_url:
        sas = urlsplit(cfg.sas_api_url)
        if sas.scheme not in ("http", "https") or not sas.netloc:
            raise ConfigError(f"{flag_env('--sas-api-url')} must be an http(s) URL, got {redact(cfg.sas_api_url)!r}")
    for entry in cfg.static_sas:
        key, sep, token = entry.partition("=")
        if not sep or "/" not in key or not token:
            raise ConfigError(f"--static-sas entries look like 'account/container=TOKEN', got {redact(entry)!r}")
    for pattern in cfg.geocatalog_sas_hosts:
        host = pattern.strip()
        if not host or "/" in host or "@" in host or host.strip("*.?") == "":
            raise ConfigError(
                f"{flag_env('--geocatalog-sas-host')} entries are host patterns such as "
                f"'*.blob.core.windows.net' or 'account.blob.core.windows.net', got {redact(pattern)!r}"
            )
    from worker.domain.events import EventMapping

    for spec in cfg.event_mappings:
        try:
            EventMapping.parse(spec)
        except ValueError as exc:
            raise ConfigError(f"{flag_env('--event-mapping')} {spec!r}: {exc}") from None
    if cfg.event_unmatched not in ("invalid", "ignore"):
        raise ConfigError(f"{flag_env('--event-unmatched')} must be 'invalid' or 'ignore'")
    if cfg.operation_watch not in ("list", "each"):
        raise ConfigError(f"{flag_env('--operation-watch')} must be 'list' or 'each'")
    if cfg.storage_credential not in ("identity", "sas"):
        raise ConfigError(f"{flag_env('--storage-credential')} must be 'identity' or 'sas'")
    if cfg.storage_hosts and cfg.storage_credential == "sas" and not (cfg.static_sas or cfg.sas_api_url):
        raise ConfigError(f"{flag_env('--storage-credential')} sas needs a SAS provider: --static-sas or --sas-api-url")
    positive_ints = {
        "--concurrency": cfg.concurrency,
        "--max-attempts": cfg.max_attempts,
        "--max-sessions": cfg.max_sessions,
        "--breaker-threshold": cfg.breaker_threshold,
        "--max-receive-batch": cfg.max_receive_batch,
        "--batch-max-items": cfg.batch_max_items,
        "--batch-max-items-backlog": cfg.batch_max_items_backlog,
    }
    for flag, value in positive_ints.items():
        if value < 1:
            raise ConfigError(f"{flag_env(flag)} must be >= 1, got {value}")
    if cfg.max_result_bytes < 64 * 1024:
        raise ConfigError(
            f"{flag_env('--max-result-bytes')} must be >= 65536 (room for a shortened result), "
            f"got {cfg.max_result_bytes}"
        )
    if cfg.concurrency > MAX_CONCURRENCY:
        raise ConfigError(f"{flag_env('--concurrency')} must be <= {MAX_CONCURRENCY}, got {cfg.concurrency}")
    non_negative = {
        "--drain-seconds": cfg.drain_seconds,
        "--retry-base-seconds": cfg.retry_base_seconds,
        "--batch-linger-ms": cfg.batch_linger_ms,
    }
    for flag, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{flag_env(flag)} must be >= 0, got {value}")
    positive = {
        "--max-lock-renewal-seconds": cfg.max_lock_renewal_seconds,
        "--operation-timeout-seconds": cfg.operation_timeout_seconds,
        "--retry-max-seconds": cfg.retry_max_seconds,
        "--breaker-open-seconds": cfg.breaker_open_seconds,
        "--session-idle-seconds": cfg.session_idle_seconds,
        "--geocatalog-budget": cfg.geocatalog_budget,
        "--geocatalog-retry-seconds": cfg.geocatalog_retry_seconds,
    }
    for flag, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{flag_env(flag)} must be > 0, got {value}")
    if cfg.burst_seconds is not None and cfg.burst_seconds <= 0:
        raise ConfigError(f"{flag_env('--burst')} must be > 0 seconds, got {cfg.burst_seconds}")
    if not 0 <= cfg.health_port <= 65535:
        raise ConfigError(f"{flag_env('--health-port')} must be 0..65535, got {cfg.health_port}")
    if cfg.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{flag_env('--log-level')} must be DEBUG, INFO, WARNING or ERROR")
