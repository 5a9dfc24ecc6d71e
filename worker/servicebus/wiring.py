"""Building the processing stack (GeoCatalog client, signer, fetcher, batcher, processor) from a RunConfig."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import requests

from worker.adapters.hosts import HostAllowList
from worker.domain.contract import Limits
from worker.domain.secrets import Secret
from worker.observability.metrics import Metrics
from worker.servicebus.config import RunConfig
from worker.servicebus.settings import ConsumerSettings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential


def build_servicebus_clients(cfg: RunConfig) -> tuple[Any, Any]:
    """The Service Bus client (SDK retries: receiving, settling, renewing locks), and a direct one without SDK
    retries where the worker's own policy owns the retry: accepting a session (returns after ``max_wait_time``
    instead of ~20 s of retried attempts) and the reply and reschedule senders (a missing or forbidden entity is
    reported after one attempt, not after ~16 s of retried CBS token puts; a failed batch is resent one by one by
    ``replies.publish``, and a reply that still fails abandons its request for redelivery)."""
    from worker.servicebus.client import make_servicebus_client

    secret = cfg.servicebus_connection_string
    connection: dict[str, Any] = {
        "connection_string": secret.reveal() if secret else None,
        "namespace": cfg.servicebus_namespace,
    }
    client = make_servicebus_client(**connection)
    return client, make_servicebus_client(**connection, retry_total=0)


def consumer_settings(cfg: RunConfig) -> ConsumerSettings:
    return ConsumerSettings(
        reply_queue=cfg.reply_queue or "",
        request_queue=cfg.request_queue,
        request_topic=cfg.request_topic,
        request_subscription=cfg.request_subscription,
        allowed_reply_to=frozenset(cfg.allowed_reply_to),
        concurrency=cfg.concurrency,
        max_receive_batch=cfg.max_receive_batch,
        settle_together=cfg.settle_together,
        max_lock_renewal_seconds=cfg.max_lock_renewal_seconds,
        max_result_bytes=cfg.max_result_bytes,
        drain_seconds=cfg.drain_seconds,
        burst_seconds=cfg.burst_seconds,
        sessions=cfg.sessions,
        max_sessions=cfg.max_sessions,
        session_idle_seconds=cfg.session_idle_seconds,
        breaker_threshold=cfg.breaker_threshold,
        breaker_open_seconds=cfg.breaker_open_seconds,
        breaker_max_open_seconds=cfg.breaker_max_open_seconds,
    )


def build_preflight_geocatalog_client(cfg: RunConfig, metrics: Metrics) -> Any:
    """A GeoCatalog client for the start-up checks: in-call retries short enough for a check."""
    from worker.servicebus.preflight import PREFLIGHT_WAIT_SECONDS

    return build_geocatalog_client(dataclasses.replace(cfg, geocatalog_retry_seconds=PREFLIGHT_WAIT_SECONDS), metrics)


def build_limits(cfg: RunConfig) -> Limits:
    from worker.domain.events import EventRouting

    allowed = {cfg.reply_queue or "", *cfg.allowed_reply_to} - {""}
    return Limits(
        allowed_reply_to=frozenset(allowed),
        item_url_hosts=HostAllowList(cfg.item_url_hosts) if cfg.item_url_hosts else None,
        events=EventRouting.from_specs(cfg.event_mappings, cfg.event_unmatched),
    )


def build_geocatalog_client(cfg: RunConfig, metrics: Metrics, credential: TokenCredential | None = None) -> Any:
    """The GeoCatalog client: the static token when given (emulator), else ``credential`` (default:
    ``DefaultAzureCredential``), asked for the endpoint's scope (``RunConfig.effective_geocatalog_scope``)."""
    from worker.adapters.geocatalog.client import GeoCatalogClient
    from worker.adapters.geocatalog.retry import RetryPolicy
    from worker.adapters.ratelimit import RateLimiter

    if cfg.geocatalog_token:
        credential = None
    elif credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    client_kwargs: dict[str, Any] = {}
    if cfg.geocatalog_api_version:
        client_kwargs["api_version"] = cfg.geocatalog_api_version
    return GeoCatalogClient(
        cfg.geocatalog_url or "",
        credential=credential,
        static_token=cfg.geocatalog_token,
        pool_size=max(16, min(cfg.concurrency, 256)),
        rate_limiter=RateLimiter(cfg.geocatalog_budget),
        retry=RetryPolicy(total_timeout=cfg.geocatalog_retry_seconds),
        metrics=metrics,
        scope=cfg.effective_geocatalog_scope(),
        **client_kwargs,
    )


def build_signer(cfg: RunConfig, metrics: Metrics, geocatalog: Any = None) -> Any:
    """The processor's ``HrefSigner``.

    Hrefs on a ``--sign-host`` host get a token from the static / Planetary Computer providers; hrefs on a
    ``--geocatalog-sas-host`` host, and hrefs that are the catalog's own managed copy of the item's asset on a
    host the catalog reported (``ManagedStorage``), get GeoCatalog's collection SAS token for the item's
    collection, fetched through ``geocatalog`` (the processor's client: same credential, rate limiter and
    retries; one is built from ``cfg`` when not given). Every other href passes through unchanged.
    """
    from worker.adapters.sas import (
        CollectionTokenCache,
        GeoCatalogSasProvider,
        HrefSigner,
        ManagedStorage,
    )

    client = geocatalog if geocatalog is not None else build_geocatalog_client(cfg, metrics)
    collection_cache = CollectionTokenCache(
        lambda collection: GeoCatalogSasProvider(None, collection, client=client), metrics=metrics
    )
    return HrefSigner(
        build_sas_cache(cfg, metrics),
        HostAllowList(cfg.sign_hosts),
        collection_cache=collection_cache,
        collection_hosts=HostAllowList(cfg.geocatalog_sas_hosts),
        managed=ManagedStorage(lambda collection, item_id: client.get_item(collection, item_id)),
    )


def build_sas_cache(cfg: RunConfig, metrics: Metrics) -> Any:
    """The SAS token cache over the configured providers: ``--static-sas`` routes, else ``--sas-api-url``."""
    from worker.adapters.sas import PlanetaryComputerSasProvider, RoutingProvider, StaticSasProvider, TokenCache

    default = None
    if cfg.sas_api_url:
        default = PlanetaryComputerSasProvider(cfg.sas_api_url, subscription_key=cfg.sas_subscription_key)
    routes: dict[str, Any] = {}
    if cfg.static_sas:
        static = StaticSasProvider({key: Secret(token) for key, _, token in (e.partition("=") for e in cfg.static_sas)})
        routes = {key: static for key, _, _ in (e.partition("=") for e in cfg.static_sas)}
    return TokenCache(RoutingProvider(routes, default=default), metrics=metrics)


def build_blob_reader(cfg: RunConfig, metrics: Metrics, session: requests.Session) -> Any | None:
    """The private-storage reader for ``--storage-host`` hosts, or None when there are none."""
    if not cfg.storage_hosts:
        return None
    from worker.adapters.itemfetch import BlobReader

    hosts = HostAllowList(cfg.storage_hosts)
    if cfg.storage_credential == "sas":
        cache = build_sas_cache(cfg, metrics)
        return BlobReader(
            hosts, sas=lambda account, container: cache.get(account, container).token.reveal(), session=session
        )
    from azure.identity import DefaultAzureCredential

    return BlobReader(hosts, credential=DefaultAzureCredential(), session=session)


def build_processor(cfg: RunConfig, metrics: Metrics, limits: Limits) -> Any:
    from worker.adapters.geocatalog.watcher import OperationWatcher
    from worker.adapters.itemfetch import ItemFetcher
    from worker.processing.batching import Batcher, BatchSettings
    from worker.processing.processor import ProcessingSettings, Processor

    geocatalog = build_geocatalog_client(cfg, metrics)
    operations = geocatalog
    if cfg.operation_watch == "list":
        operations = OperationWatcher(geocatalog, rate_limiter=geocatalog.rate_limiter, metrics=metrics)
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=max(16, min(cfg.concurrency, 256)))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    fetcher = ItemFetcher(
        session, HostAllowList(cfg.item_url_hosts), blob_reader=build_blob_reader(cfg, metrics, session)
    )
    batcher = Batcher(
        geocatalog,
        BatchSettings(
            max_items=cfg.batch_max_items,
            max_items_backlog=cfg.batch_max_items_backlog,
            linger=cfg.batch_linger_ms / 1000.0,
            operation_timeout=cfg.operation_timeout_seconds,
        ),
        operations=operations,
    )
    settings = ProcessingSettings(
        retry=cfg.retry_policy(),
        operation_timeout=cfg.operation_timeout_seconds,
        limits=limits,
        content_digest=cfg.content_digest,
    )
    return Processor(
        geocatalog, build_signer(cfg, metrics, geocatalog), fetcher, batcher, settings, operations=operations
    )
