"""The configuration of ``geocatalog-worker run``: the one source of every setting, validated with precise messages.

Each ``RunConfig`` field is declared with ``setting(default, help, ...)``; ``worker.options.config_options``
generates the click options (``--flag``, its ``GCW_FLAG`` environment variable, type, default and help) from these
declarations, and ``worker.options.config_from_values`` builds the ``RunConfig`` back from the parsed values, so
a setting is named, typed, defaulted and documented once (docs/configuration.md is checked against ``--help``).
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields
from typing import Any

from worker.domain.retry_policy import RequestRetryPolicy
from worker.domain.secrets import Secret, redact


class ConfigError(ValueError):
    """Invalid configuration; the message names the flag (and its environment variable) and says why."""


def flag_env(flag: str) -> str:
    from worker.options import envvar

    return f"{flag} ({envvar(flag)})"


# threads per process (docs/benchmarks.md: 3 processes x 2,048 at <= 158 MB peak RSS each)
MAX_CONCURRENCY = 4096


@dataclass(frozen=True)
class Setting:
    """How a ``RunConfig`` field appears on the command line."""

    help: str
    flag: str | None = None  # default: ``--`` + the field name with dashes
    choices: tuple[str, ...] | None = None


def setting(default: Any, help: str, *, flag: str | None = None, choices: tuple[str, ...] | None = None) -> Any:
    """A ``RunConfig`` field with its command-line description (the default must be immutable)."""
    return field(default=default, metadata={"setting": Setting(help, flag, choices)})


def setting_of(f: Field[Any]) -> Setting:
    return f.metadata["setting"]


def flag_of(f: Field[Any]) -> str:
    return setting_of(f).flag or "--" + f.name.replace("_", "-")


@dataclass(frozen=True)
class RunConfig:
    # Service Bus
    servicebus_connection_string: Secret | None = setting(
        None,
        "Service Bus connection string (the emulator's, or SAS-key auth). Mutually exclusive with "
        "--servicebus-namespace. Treated as a secret: never logged.",
    )
    servicebus_namespace: str | None = setting(
        None,
        "Service Bus namespace (name or FQDN); authenticates with DefaultAzureCredential (workload identity in "
        "Kubernetes).",
    )
    request_queue: str | None = setting(
        None,
        "Queue the requests arrive on.",
    )
    request_topic: str | None = setting(
        None,
        "Topic the requests arrive on (with --request-subscription).",
    )
    request_subscription: str | None = setting(
        None,
        "Subscription of --request-topic to consume.",
    )
    reply_queue: str | None = setting(
        None,
        "Queue every result is published on (required).",
    )
    allowed_reply_to: tuple[str, ...] = setting(
        (),
        "Extra entities a request's reply_to may name (repeatable; --reply-queue is always allowed). A request "
        "naming any other entity is answered 'invalid' on --reply-queue.",
    )
    sessions: bool = setting(
        False,
        "The request entity requires sessions (ordered per session; sessions spread across workers).",
    )
    max_sessions: int = setting(
        8,
        "Sessions processed at once (sessions only).",
    )
    session_idle_seconds: float = setting(
        5.0,
        "Release an idle session after.",
    )
    # GeoCatalog, signing, claim checks
    geocatalog_url: str | None = setting(
        None,
        "GeoCatalog endpoint, e.g. https://<name>.<id>.<region>.geocatalog.spatio.azure.com",
    )
    geocatalog_token: Secret | None = setting(
        None,
        "Static bearer token for GeoCatalog (the emulator only; production uses DefaultAzureCredential). Secret.",
    )
    geocatalog_api_version: str | None = setting(
        None,
        "GeoCatalog api-version (default: the client's).",
    )
    geocatalog_scope: str | None = setting(  # None: derived from the endpoint's cloud (public, US Gov)
        None,
        "Entra token scope for GeoCatalog (default: from the endpoint's cloud: *.geocatalog.spatio.azure.com -> "
        "https://geocatalog.spatio.azure.com/.default, *.geocatalog.spatio.azure.us -> the US Government scope).",
    )
    geocatalog_budget: float = setting(  # this process's share of GeoCatalog calls per second
        10.0,
        "This process's share of the GeoCatalog API budget, in calls per second.",
    )
    geocatalog_retry_seconds: float = setting(  # in-call retries of one GeoCatalog call, total time
        60.0,
        "Total time one GeoCatalog call may spend on in-call retries before the request is retried later.",
    )
    sas_api_url: str | None = setting(
        None,
        "Planetary Computer SAS API base URL used to sign asset hrefs.",
    )
    sas_subscription_key: Secret | None = setting(
        None,
        "Subscription key for the SAS API (optional). Secret.",
    )
    static_sas: tuple[str, ...] = setting(  # "account/container=token"
        (),
        "'account/container=TOKEN' static SAS tokens (repeatable). Secret.",
    )
    sign_hosts: tuple[str, ...] = setting(
        (),
        "Host pattern whose asset hrefs are signed (repeatable allow-list).",
        flag="--sign-host",
    )
    geocatalog_sas_hosts: tuple[str, ...] = setting(  # managed-storage hosts signed with GeoCatalog's collection SAS
        (),
        "Host pattern of the catalog's managed storage (repeatable): its asset hrefs are signed with GeoCatalog's"
        " collection SAS token (GET /sas/token/{collectionId}); added to the signing allow-list.",
        flag="--geocatalog-sas-host",
    )
    item_url_hosts: tuple[str, ...] = setting(
        (),
        "Host pattern item_urls may be fetched from (repeatable allow-list).",
        flag="--item-url-host",
    )
    content_digest: bool = setting(  # write properties["gcw:digest"] (worker.domain.stored)
        True,
        "Write properties['gcw:digest'] (SHA-256 of the submitted item) so the worker recognises its own writes "
        "although the service rewrites asset hrefs and upgrades stac_extensions.",
    )
    # Blob Storage events and private storage
    event_mappings: tuple[str, ...] = setting(  # worker.domain.events.EventMapping specs
        (),
        "Blob Storage events to accept (repeatable, first match wins): "
        "'container=items,prefix=stac/,suffix=.json,collection=NAME' (collection=@item: the item's collection "
        "field; account=NAME optional). Event blob URLs must pass --item-url-host too.",
        flag="--event-mapping",
    )
    event_unmatched: str = setting(  # or "ignore"
        "invalid",
        "An event no --event-mapping matches: answered 'invalid' and dead-lettered, or completed silently.",
        choices=("invalid", "ignore"),
    )
    storage_hosts: tuple[str, ...] = setting(  # blobs read with azure-storage-blob
        (),
        "Host pattern of private storage (repeatable): item_urls and event blobs there are read with "
        "azure-storage-blob and --storage-credential.",
        flag="--storage-host",
    )
    storage_credential: str = setting(  # or "sas"
        "identity",
        "How --storage-host blobs are read: identity = DefaultAzureCredential (workload identity); sas = a token "
        "from --static-sas / --sas-api-url for the blob's account/container.",
        choices=("identity", "sas"),
    )
    # runtime
    concurrency: int = setting(
        64,
        "Requests in flight per process (at most 4096).",
    )
    max_receive_batch: int = setting(
        32,
        "Messages per receive call.",
    )
    settle_together: bool = setting(  # worker.servicebus.settlement.complete_in_one_request
        False,
        "Experimental: complete a receive turn's requests (non-session entities) with one update-disposition "
        "request on the management link instead of one settlement round trip each; falls back to one by one when "
        "refused. Not yet verified against a live namespace.",
    )
    max_attempts: int = setting(
        5,
        "Attempts before RetriesExhausted.",
    )
    max_result_bytes: int = setting(  # result bodies are shortened to fit (docs/messages.md "Result size")
        240 * 1024,
        "Result bodies are shortened to fit (keeping status, counts and every item id); keep it under the reply "
        "queue's message size limit (256 KiB on Standard).",
    )
    retry_base_seconds: float = setting(
        5.0,
        "Backoff of the 1st retry.",
    )
    retry_max_seconds: float = setting(
        300.0,
        "Backoff cap.",
    )
    max_lock_renewal_seconds: float = setting(
        3600.0,
        "Renew a message's lock for at most this long.",
    )
    operation_timeout_seconds: float = setting(
        600.0,
        "Deadline of one GeoCatalog operation's polling.",
    )
    batch_linger_ms: float = setting(
        30.0,
        "How long an ingest batch waits for more requests to merge.",
    )
    batch_max_items: int = setting(
        100,
        "Items per merged ingest POST.",
    )
    batch_max_items_backlog: int = setting(
        1000,
        "Items per merged ingest POST while the GeoCatalog budget is the bottleneck (POSTs wait for budget).",
    )
    operation_watch: str = setting(
        "list",
        "How operations are polled: 'list' reads each collection's operation list once per tick for all of this "
        "process's operations; 'each' GETs every operation on its own.",
        choices=("list", "each"),
    )
    breaker_threshold: int = setting(
        5,
        "Consecutive transient failures that open the circuit breaker.",
    )
    breaker_open_seconds: float = setting(
        10.0,
        "Breaker hold before a probe; doubles while probes fail.",
    )
    breaker_max_open_seconds: float = setting(
        120.0,
        "Cap of that hold.",
    )
    drain_seconds: float = setting(
        30.0,
        "On SIGTERM/SIGINT, how long in-flight requests may finish before they are abandoned.",
    )
    burst_seconds: float | None = setting(
        None,
        "Burst mode (backfills, a KEDA ScaledJob): once the request entity has stayed empty for SECONDS, with nothing "
        "in flight and no retry this process scheduled still due, stop receiving and exit 0. Off by default: run "
        "until SIGTERM.",
        flag="--burst",
    )
    health_host: str = setting(
        "0.0.0.0",
        "Address of the health/metrics server.",
    )
    health_port: int = setting(
        8080,
        "Port of /healthz, /readyz and /metrics (0 = any free port, logged at start).",
    )
    log_level: str = setting(
        "INFO",
        "DEBUG, INFO, WARNING or ERROR.",
    )

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
        """Raise ``ConfigError`` for the first problem found (``worker.servicebus.config_checks``)."""
        from worker.servicebus.config_checks import validate

        validate(self)
