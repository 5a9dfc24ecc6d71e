"""The configuration of ``geocatalog-worker run``, validated at start with precise messages."""

from __future__ import annotations

from dataclasses import dataclass, fields
from urllib.parse import urlsplit

from worker.domain.retry_policy import RequestRetryPolicy
from worker.domain.secrets import Secret, redact


class ConfigError(ValueError):
    """Invalid configuration; the message names the flag (and its environment variable) and says why."""


def _flag_env(flag: str) -> str:
    from worker.options import envvar

    return f"{flag} ({envvar(flag)})"


# threads per process (docs/benchmarks.md: 3 processes x 2,048 at <= 158 MB peak RSS each)
MAX_CONCURRENCY = 4096

@dataclass(frozen=True)
class RunConfig:
    # Service Bus
    servicebus_connection_string: Secret | None = None
    servicebus_namespace: str | None = None
    request_queue: str | None = None
    request_topic: str | None = None
    request_subscription: str | None = None
    reply_queue: str | None = None
    allowed_reply_to: tuple[str, ...] = ()
    sessions: bool = False
    max_sessions: int = 8
    session_idle_seconds: float = 5.0
    # GeoCatalog, signing, claim checks
    geocatalog_url: str | None = None
    geocatalog_token: Secret | None = None
    geocatalog_api_version: str | None = None
    geocatalog_scope: str | None = None  # None: derived from the endpoint's cloud (public, US Gov)
    geocatalog_budget: float = 10.0  # this process's share of GeoCatalog calls per second
    geocatalog_retry_seconds: float = 60.0  # in-call retries of one GeoCatalog call, total time
    sas_api_url: str | None = None
    sas_subscription_key: Secret | None = None
    static_sas: tuple[str, ...] = ()  # "account/container=token"
    sign_hosts: tuple[str, ...] = ()
    geocatalog_sas_hosts: tuple[str, ...] = ()  # managed-storage hosts signed with GeoCatalog's collection SAS
    item_url_hosts: tuple[str, ...] = ()
    content_digest: bool = True  # write properties["gcw:digest"] (worker.domain.stored)
    # Blob Storage events and private storage
    event_mappings: tuple[str, ...] = ()  # worker.domain.events.EventMapping specs
    event_unmatched: str = "invalid"  # or "ignore"
    storage_hosts: tuple[str, ...] = ()  # blobs read with azure-storage-blob
    storage_credential: str = "identity"  # or "sas"
    # runtime
    concurrency: int = 64
    max_receive_batch: int = 32
    max_attempts: int = 5
    max_result_bytes: int = 240 * 1024  # result bodies are shortened to fit (docs/messages.md "Result size")
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 300.0
    max_lock_renewal_seconds: float = 3600.0
    operation_timeout_seconds: float = 600.0
    batch_linger_ms: float = 30.0
    batch_max_items: int = 100
    batch_max_items_backlog: int = 1000  # items per POST while the GeoCatalog budget is the bottleneck
    operation_watch: str = "list"  # "list": one operation list read per collection per tick; "each": a GET each
    breaker_threshold: int = 5
    breaker_open_seconds: float = 10.0
    breaker_max_open_seconds: float = 120.0
    drain_seconds: float = 30.0
    health_host: str = "0.0.0.0"
    health_port: int = 8080
    log_level: str = "INFO"

    def retry_policy(self) -> RequestRetryPolicy:
        """The one retry policy of requests (``--max-attempts``, ``--retry-base-seconds``, ``--retry-max-seconds``)."""
        return RequestRetryPolicy(
            max_attempts=self.max_attempts, base_seconds=self.retry_base_seconds, max_seconds=self.retry_max_seconds
        )

    def summary(self) -> dict[str, str | int | float | bool | list[str] | None]:
        """The effective configuration for the startup log line: every setting, no secret.

        A secret shows only whether it is set; the connection string shows its endpoint alone; static SAS
        entries show their ``account/container`` keys; URLs pass through ``redact``.
        """
        out: dict[str, str | int | float | bool | list[str] | None] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "servicebus_connection_string":
                endpoint = next(
                    (
                        p.split("=", 1)[1]
                        for p in (value.reveal() if value else "").split(";")
                        if p.lower().startswith("endpoint=")
                    ),
                    None,
                )
                out["servicebus_endpoint"] = redact(endpoint) if endpoint else None
            elif isinstance(value, Secret) or f.name in ("geocatalog_token", "sas_subscription_key"):
                out[f.name] = "set" if value else None
            elif f.name == "static_sas":
                out[f.name] = [entry.partition("=")[0] for entry in value]
            elif isinstance(value, tuple):
                out[f.name] = [redact(str(v)) for v in value]
            elif isinstance(value, str):
                out[f.name] = redact(value)
            else:
                out[f.name] = value
        return out

    def effective_geocatalog_scope(self) -> str:
        """``--geocatalog-scope``, else the scope of the endpoint's cloud, else the public cloud's."""
        from worker.adapters.geocatalog.client import SCOPE, scope_for

        return self.geocatalog_scope or scope_for(self.geocatalog_url or "") or SCOPE

    def validate(self) -> None:
        """Raise ``ConfigError`` for the first problem found."""
        if bool(self.servicebus_connection_string) == bool(self.servicebus_namespace):
            raise ConfigError(
                f"give exactly one of {_flag_env('--servicebus-connection-string')} or "
                f"{_flag_env('--servicebus-namespace')}"
            )
        if self.servicebus_connection_string:
            cs = self.servicebus_connection_string.reveal()
            if "endpoint=" not in cs.lower():
                raise ConfigError(
                    f"{_flag_env('--servicebus-connection-string')} has no 'Endpoint=sb://...' part: "
                    f"got {redact(cs)[:60]!r}"
                )
        if self.request_queue and (self.request_topic or self.request_subscription):
            raise ConfigError("give either --request-queue or --request-topic with --request-subscription, not both")
        if not self.request_queue and not (self.request_topic and self.request_subscription):
            raise ConfigError(
                f"give {_flag_env('--request-queue')}, or --request-topic together with --request-subscription"
            )
        if not self.reply_queue:
            raise ConfigError(f"{_flag_env('--reply-queue')} is required: every request is answered there")
        if not self.geocatalog_url:
            raise ConfigError(f"{_flag_env('--geocatalog-url')} is required")
        parts = urlsplit(self.geocatalog_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"{_flag_env('--geocatalog-url')} must be an http(s) URL, got {redact(self.geocatalog_url)!r}"
            )
        if self.geocatalog_scope is not None and not self.geocatalog_scope.startswith("https://"):
            raise ConfigError(
                f"{_flag_env('--geocatalog-scope')} is an Entra scope such as "
                f"'https://geocatalog.spatio.azure.us/.default', got {redact(self.geocatalog_scope)!r}"
            )
        if self.sas_api_url:
            sas = urlsplit(self.sas_api_url)
            if sas.scheme not in ("http", "https") or not sas.netloc:
                raise ConfigError(
                    f"{_flag_env('--sas-api-url')} must be an http(s) URL, got {redact(self.sas_api_url)!r}"
                )
        for entry in self.static_sas:
            key, sep, token = entry.partition("=")
            if not sep or "/" not in key or not token:
                raise ConfigError(f"--static-sas entries look like 'account/container=TOKEN', got {redact(entry)!r}")
        for pattern in self.geocatalog_sas_hosts:
            host = pattern.strip()
            if not host or "/" in host or "@" in host or host.strip("*.?") == "":
                raise ConfigError(
                    f"{_flag_env('--geocatalog-sas-host')} entries are host patterns such as "
                    f"'*.blob.core.windows.net' or 'account.blob.core.windows.net', got {redact(pattern)!r}"
                )
        from worker.domain.events import EventMapping

        for spec in self.event_mappings:
            try:
                EventMapping.parse(spec)
            except ValueError as exc:
                raise ConfigError(f"{_flag_env('--event-mapping')} {spec!r}: {exc}") from None
        if self.event_unmatched not in ("invalid", "ignore"):
            raise ConfigError(f"{_flag_env('--event-unmatched')} must be 'invalid' or 'ignore'")
        if self.operation_watch not in ("list", "each"):
            raise ConfigError(f"{_flag_env('--operation-watch')} must be 'list' or 'each'")
        if self.storage_credential not in ("identity", "sas"):
            raise ConfigError(f"{_flag_env('--storage-credential')} must be 'identity' or 'sas'")
        if self.storage_hosts and self.storage_credential == "sas" and not (self.static_sas or self.sas_api_url):
            raise ConfigError(
                f"{_flag_env('--storage-credential')} sas needs a SAS provider: --static-sas or --sas-api-url"
            )
        positive_ints = {
            "--concurrency": self.concurrency,
            "--max-attempts": self.max_attempts,
            "--max-sessions": self.max_sessions,
            "--breaker-threshold": self.breaker_threshold,
            "--max-receive-batch": self.max_receive_batch,
            "--batch-max-items": self.batch_max_items,
            "--batch-max-items-backlog": self.batch_max_items_backlog,
        }
        for flag, value in positive_ints.items():
            if value < 1:
                raise ConfigError(f"{_flag_env(flag)} must be >= 1, got {value}")
        if self.max_result_bytes < 64 * 1024:
            raise ConfigError(
                f"{_flag_env('--max-result-bytes')} must be >= 65536 (room for a shortened result), "
                f"got {self.max_result_bytes}"
            )
        if self.concurrency > MAX_CONCURRENCY:
            raise ConfigError(f"{_flag_env('--concurrency')} must be <= {MAX_CONCURRENCY}, got {self.concurrency}")
        non_negative = {
            "--drain-seconds": self.drain_seconds,
            "--retry-base-seconds": self.retry_base_seconds,
            "--batch-linger-ms": self.batch_linger_ms,
        }
        for flag, value in non_negative.items():
            if value < 0:
                raise ConfigError(f"{_flag_env(flag)} must be >= 0, got {value}")
        positive = {
            "--max-lock-renewal-seconds": self.max_lock_renewal_seconds,
            "--operation-timeout-seconds": self.operation_timeout_seconds,
            "--retry-max-seconds": self.retry_max_seconds,
            "--breaker-open-seconds": self.breaker_open_seconds,
            "--session-idle-seconds": self.session_idle_seconds,
            "--geocatalog-budget": self.geocatalog_budget,
            "--geocatalog-retry-seconds": self.geocatalog_retry_seconds,
        }
        for flag, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{_flag_env(flag)} must be > 0, got {value}")
        if not 0 <= self.health_port <= 65535:
            raise ConfigError(f"{_flag_env('--health-port')} must be 0..65535, got {self.health_port}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"{_flag_env('--log-level')} must be DEBUG, INFO, WARNING or ERROR")
