"""Configuration faults: the one place they are reported, and how Service Bus errors are recognised as one.

A configuration fault (``worker.domain.errors.ConfigurationFault``; here also a Service Bus error that says the
credential lacks a right or an entity is missing) would fail every request the same way, so the runtime holds
intake instead and reports it three ways, once per change: ``/readyz`` names the failing check and cause, the
gauge ``gcw_config_fault{cause}`` is 1, and one log line (``configuration_fault``, then
``configuration_fault_cleared``) says what to fix.
"""

from __future__ import annotations

import structlog
from azure.servicebus.exceptions import (
    MessagingEntityNotFoundError,
    ServiceBusAuthenticationError,
    ServiceBusAuthorizationError,
)

from worker.domain.errors import FaultCause
from worker.domain.secrets import redact
from worker.observability.health import HealthState
from worker.observability.metrics import Metrics

log = structlog.get_logger(__name__)

# the checks of readiness and of the start-up preflight (``geocatalog-worker check``)
CHECK_RECEIVE = "receive"
CHECK_SEND_REPLY = "send_reply"
CHECK_SCHEDULE = "schedule"
CHECK_GEOCATALOG = "geocatalog"

_HINTS = {
    FaultCause.SERVICEBUS_UNAUTHORIZED: "the Service Bus credential is rejected (key, connection string or identity)",
    FaultCause.SERVICEBUS_FORBIDDEN: "the credential lacks a Service Bus right on the entity "
    "(Listen to receive, Send to reply and to schedule retries; roles Azure Service Bus Data Receiver / Sender)",
    FaultCause.SERVICEBUS_ENTITY_NOT_FOUND: "the Service Bus entity does not exist",
}


def servicebus_fault_cause(exc: BaseException) -> FaultCause | None:
    """The configuration fault a Service Bus SDK error stands for, or None when it is not one."""
    if isinstance(exc, ServiceBusAuthorizationError):
        return FaultCause.SERVICEBUS_FORBIDDEN
    if isinstance(exc, ServiceBusAuthenticationError):
        return FaultCause.SERVICEBUS_UNAUTHORIZED
    if isinstance(exc, MessagingEntityNotFoundError):
        return FaultCause.SERVICEBUS_ENTITY_NOT_FOUND
    return None


def describe_servicebus_fault(cause: FaultCause, entity: str, exc: BaseException) -> str:
    return redact(f"{_HINTS.get(cause, str(cause))}: {entity}: {type(exc).__name__}: {exc}")[:1000]


class ConfigFaults:
    """Reports configuration faults per check to readiness, the gauge and the log (thread-safe)."""

    def __init__(self, health: HealthState, metrics: Metrics) -> None:
        self._health = health
        self._metrics = metrics

    def report(self, check: str, cause: str, detail: str) -> None:
        before = self._health.set_fault(check, cause, detail)
        if before == cause:
            return
        if before is not None:
            self._lower(before)
        self._metrics.config_fault.labels(cause=cause).set(1)
        log.error("configuration_fault", check=check, cause=cause, detail=redact(detail))

    def clear(self, check: str) -> None:
        cause = self._health.clear_fault(check)
        if cause is None:
            return
        self._lower(cause)
        log.info("configuration_fault_cleared", check=check, cause=cause)

    def _lower(self, cause: str) -> None:
        """The gauge of ``cause`` goes to 0 unless another check still fails with it."""
        if cause not in {f["cause"] for f in self._health.faults().values()}:
            self._metrics.config_fault.labels(cause=cause).set(0)
