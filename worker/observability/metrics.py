"""Prometheus metrics of one worker process.

One ``Metrics`` object is built at start-up and passed explicitly to the parts that record into it; nothing
registers into prometheus_client's global registry, so tests can build as many as they like.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_OPERATION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter("gcw_requests_received", "Request messages received.", registry=r)
        self.results = Counter(
            "gcw_requests_finished", "Requests answered, by result status.", ["status"], registry=r
        )
        self.retried = Counter("gcw_requests_retried", "Requests rescheduled or abandoned for a retry.", registry=r)
        self.dead_lettered = Counter(
            "gcw_requests_dead_lettered", "Requests dead-lettered, by reason.", ["reason"], registry=r
        )
        self.in_flight = Gauge("gcw_requests_in_flight", "Requests being processed now.", registry=r)
        self.lock_renewals = Counter("gcw_lock_renewals", "Message lock renewals.", registry=r)
        self.locks_lost = Counter("gcw_locks_lost", "Messages whose lock was lost while processing.", registry=r)
        self.geocatalog_requests = Histogram(
            "gcw_geocatalog_request_seconds",
            "GeoCatalog HTTP request latency, by method, route and status code.",
            ["method", "route", "status"],
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

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
