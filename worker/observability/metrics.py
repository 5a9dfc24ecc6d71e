"""Prometheus metrics of one worker process.

One ``Metrics`` object is built at start-up and passed explicitly to the parts that record into it; nothing
registers into prometheus_client's global registry, so tests can build as many as they like. Each registry
also carries prometheus_client's process, platform and GC collectors (``process_resident_memory_bytes``,
``process_cpu_seconds_total``, ``python_info``, ``python_gc_*``), as the global registry would.

Label names mean one thing each: ``code`` is an HTTP status code, ``status`` a result status (``succeeded``,
``failed``, ``invalid``, ...) or an operation status (``Succeeded``, ``Failed``, ...), ``reason`` a dead-letter
reason. docs/observability.md lists every series with example PromQL; the Grafana dashboard in
helm/geocatalog-worker/dashboards/ queries exactly these names (tests/unit/test_metrics_dashboard.py).
"""

from __future__ import annotations

import platform

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from worker import __version__

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_OPERATION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
# enqueued -> received can be minutes in a backlog; enqueued -> settled adds the operation (seconds to minutes)
_AGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
_END_TO_END_BUCKETS = (0.5, 1, 2, 5, 7.5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Info("gcw_build", "The worker's version and Python implementation.", registry=r)
        self.build_info.info({"version": __version__, "python": platform.python_version()})
        self.received = Counter("gcw_requests_received", "Request messages received.", registry=r)
        self.results = Counter("gcw_requests_finished", "Requests answered, by result status.", ["status"], registry=r)
        self.retried = Counter("gcw_requests_retried", "Requests rescheduled or abandoned for a retry.", registry=r)
        self.dead_lettered = Counter(
            "gcw_requests_dead_lettered", "Requests dead-lettered, by reason.", ["reason"], registry=r
        )
        self.message_age = Histogram(
            "gcw_message_age_seconds",
            "Time a request message waited in the queue: enqueued (broker time) to received by this worker.",
            buckets=_AGE_BUCKETS,
            registry=r,
        )
        self.end_to_end = Histogram(
            "gcw_request_end_to_end_seconds",
            "Time from a request's enqueue (broker time) to its settlement after the result was published, "
            "by result status.",
            ["status"],
            buckets=_END_TO_END_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("gcw_requests_in_flight", "Requests being processed now.", registry=r)
        self.lock_renewals = Counter("gcw_lock_renewals", "Message lock renewals.", registry=r)
        self.locks_lost = Counter("gcw_locks_lost", "Messages whose lock was lost while processing.", registry=r)
        self.geocatalog_requests = Histogram(
            "gcw_geocatalog_request_seconds",
            "GeoCatalog HTTP request latency, by method, route and HTTP status code.",
            ["method", "route", "code"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.operation_duration = Histogram(
            "gcw_geocatalog_operation_seconds",
            "Time from submitting a GeoCatalog operation to its terminal status, by type and status.",
            ["type", "status"],
            buckets=_OPERATION_BUCKETS,
            registry=r,
        )
        self.sas_cache = Counter("gcw_sas_token_cache", "SAS token cache lookups, by result.", ["result"], registry=r)
        self.breaker_open = Gauge("gcw_circuit_breaker_open", "1 while the circuit breaker holds intake.", registry=r)
        self.config_fault = Gauge(
            "gcw_config_fault",
            "1 while a configuration fault of this cause holds intake (a missing role or right, a rejected "
            "credential, a wrong scope or endpoint); alert on it: it does not clear by itself.",
            ["cause"],
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
