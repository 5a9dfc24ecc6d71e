"""Building the processing stack (GeoCatalog client, signer, fetcher, batcher, processor) from a RunConfig."""

from __future__ import annotations

from typing import Any

import requests

from worker.contract import Limits
from worker.hosts import HostAllowList
from worker.observability.metrics import Metrics
from worker.runtime.config import RunConfig
from worker.secrets import Secret


def build_limits(cfg: RunConfig) -> Limits:
    allowed = {cfg.reply_queue or "", *cfg.allowed_reply_to} - {""}
    return Limits(
        allowed_reply_to=frozenset(allowed),
        item_url_hosts=HostAllowList(cfg.item_url_hosts) if cfg.item_url_hosts else None,
    )


def build_signer(cfg: RunConfig, metrics: Metrics) -> Any | None:
    """None when no host may be signed (``--sign-host`` empty): hrefs are then passed through unchanged."""
    if not cfg.sign_hosts:
        return None
    from worker.signing import HrefSigner, PlanetaryComputerSasProvider, RoutingProvider, StaticSasProvider, TokenCache

    default = None
    if cfg.sas_api_url:
        default = PlanetaryComputerSasProvider(cfg.sas_api_url, subscription_key=cfg.sas_subscription_key)
    routes: dict[str, Any] = {}
    if cfg.static_sas:
        static = StaticSasProvider(
            {key: Secret(token) for key, _, token in (e.partition("=") for e in cfg.static_sas)}
        )
        routes = {key: static for key, _, _ in (e.partition("=") for e in cfg.static_sas)}
    provider = RoutingProvider(routes, default=default)
    return HrefSigner(TokenCache(provider, metrics=metrics), HostAllowList(cfg.sign_hosts))


def build_processor(cfg: RunConfig, metrics: Metrics, limits: Limits) -> Any:
    from worker.batching import Batcher, BatchSettings
    from worker.geocatalog import GeoCatalogClient
    from worker.itemfetch import ItemFetcher
    from worker.processing import ProcessingSettings, Processor
    from worker.ratelimit import RateLimiter
    from worker.retry import RetryPolicy

    credential = None
    if not cfg.geocatalog_token:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    client_kwargs: dict[str, Any] = {}
    if cfg.geocatalog_api_version:
        client_kwargs["api_version"] = cfg.geocatalog_api_version
    geocatalog = GeoCatalogClient(
        cfg.geocatalog_url or "",
        credential=credential,
        static_token=cfg.geocatalog_token,
        pool_size=max(16, min(cfg.concurrency, 256)),
        rate_limiter=RateLimiter(cfg.geocatalog_budget),
        retry=RetryPolicy(total_timeout=cfg.geocatalog_retry_seconds),
        metrics=metrics,
        **client_kwargs,
    )
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=max(16, min(cfg.concurrency, 256)))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    fetcher = ItemFetcher(session, HostAllowList(cfg.item_url_hosts))
    batcher = Batcher(
        geocatalog,
        BatchSettings(
            max_items=cfg.batch_max_items,
            linger=cfg.batch_linger_ms / 1000.0,
            operation_timeout=cfg.operation_timeout_seconds,
        ),
        metrics,
    )
    settings = ProcessingSettings(
        max_attempts=cfg.max_attempts,
        retry_base=cfg.retry_base_seconds,
        retry_max=cfg.retry_max_seconds,
        operation_timeout=cfg.operation_timeout_seconds,
        limits=limits,
    )
    return Processor(geocatalog, build_signer(cfg, metrics), fetcher, batcher, settings, metrics)
