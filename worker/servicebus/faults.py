"""Configuration faults: the one place they are reported, and how Service Bus errors are recognised as one.

A configuration fault (``worker.domain.errors.ConfigurationFault``; here also a Service Bus error that says the
credential lacks a right or an entity is missing) would fail every request the same way, so the runtime holds
intake instead and reports it three ways, once per change: ``/readyz`` names the failing check and cause, the
gauge ``gcw_config_fault{cause}`` is 1, and one log line (``configuration_fault``, then
``configuration_fault_cleared``) says what to fix.

A missing entity reaches the worker in two shapes. Azure answers the client's put-token (the ``$cbs`` node) for a
queue, topic or subscription that does not exist with status 404 ("The messaging entity 'sb://<namespace>/<name>'
could not be found", Azure/azure-service-bus issue 304); the SDK raises that, as every put-token status outside
2xx, as ``ServiceBusAuthenticationError`` carrying pyamqp's ``TokenAuthFailure`` (``_pyamqp/cbs.py``,
``_transport/_pyamqp_transport.py``). An entity deleted after the put-token is refused on attach
(``amqp:not-found``), which the SDK raises as ``MessagingEntityNotFoundError``.
"""

from __future__ import annotations

import structlog

# TokenAuthFailure is pyamqp's (the SDK's vendored AMQP stack) and has no public alias: it is the only place the
# put-token's status code and description survive (ServiceBusAuthenticationError keeps it as inner_exception)
from azure.servicebus._pyamqp.error import TokenAuthFailure
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


def _put_token_failure(exc: BaseException) -> TokenAuthFailure | None:
    """The put-token answer inside an authentication error (status code and description), if it is one."""
    if isinstance(exc, ServiceBusAuthenticationError) and isinstance(exc.inner_exception, TokenAuthFailure):
        return exc.inner_exception
    return None


def servicebus_fault_cause(exc: BaseException) -> FaultCause | None:
    """The configuration fault a Service Bus SDK error stands for, or None when it is not one."""
    if isinstance(exc, ServiceBusAuthorizationError):
        return FaultCause.SERVICEBUS_FORBIDDEN
    if isinstance(exc, ServiceBusAuthenticationError):
        failure = _put_token_failure(exc)
        if failure is not None and failure.status_code == 404:  # Azure's answer for a missing entity
            return FaultCause.SERVICEBUS_ENTITY_NOT_FOUND
        return FaultCause.SERVICEBUS_UNAUTHORIZED
    if isinstance(exc, MessagingEntityNotFoundError):
        return FaultCause.SERVICEBUS_ENTITY_NOT_FOUND
    return None


def servicebus_error_text(exc: BaseException) -> str:
    """``<class>: <message>``, redacted; for a failed put-token also its status and description, which the SDK's
    message leaves out ("Service Bus has encountered an error. Error condition: amqp:client-error.")."""
    text = f"{type(exc).__name__}: {exc}"
    failure = _put_token_failure(exc)
    if failure is not None:
        text += " (" + "; ".join(line.strip() for line in str(failure).splitlines() if line.strip()) + ")"
    return redact(text)[:1000]


def describe_servicebus_fault(cause: FaultCause, entity: str, exc: BaseException) -> str:
    return redact(f"{_HINTS.get(cause, str(cause))}: {entity}: {servicebus_error_text(exc)}")[:1000]


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
