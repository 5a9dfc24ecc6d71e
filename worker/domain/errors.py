"""The error taxonomy shared by every layer: each failure is invalid, transient, permanent or a configuration fault.

The kind is fixed by the class, never per instance::

    WorkerError
    ├── InvalidError            invalid: answer ``invalid``, dead-letter ``InvalidRequest``
    │   ├── contract.InvalidRequest          the request body / an item / an event is wrong (names the field)
    │   ├── itemfetch.ItemRejected           a claim-check URL or fetched document is not acceptable
    │   └── geocatalog.ValidationError       the service rejected the body (400/413/422)
    ├── TransientError          transient: retry with backoff, ``RetriesExhausted`` when attempts are spent
    │   ├── Cancelled                        the lock was lost or the worker is shutting down
    │   ├── geocatalog.Throttled / ServerError / NetworkError / OperationTimeout / CredentialUnavailable
    │   ├── sas.SasUnavailable               the SAS source failed transiently (5xx, network)
    │   ├── itemfetch.ItemUnavailable        the claim-check host failed transiently
    │   └── batching.TransientOperationFailure   an operation ended with a transient code (``InternalError``)
    ├── PermanentError          permanent: the work failed for good; answered ``failed``
    │   ├── geocatalog.NotFound / Conflict (409) / GeoCatalogError (other statuses)
    │   ├── sas.SasDenied                    no token can be had (403/404, nothing configured)
    │   └── batching.OperationFailed         an operation ended Failed (``ItemAlreadyExistsInCollection``, ...)
    └── ConfigurationFault      configuration: hold intake, report the cause, answer nothing
        └── geocatalog.AuthError             401/403 still after a token refresh
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """How a failure should be handled.

    - ``invalid``: the request itself is wrong; retrying cannot help. Answer ``invalid`` and dead-letter.
    - ``transient``: throttling, 5xx, network, timeouts; retry with backoff.
    - ``permanent``: the request was fine but the work failed for good (e.g. an operation ended Failed
      with a non-transient error).
    - ``configuration``: the deployment is wrong, not the request: a credential or role the worker lacks, a wrong
      token scope or endpoint. Every request would fail the same way, so none is answered or dead-lettered: the
      runtime holds intake, reports the cause (readiness, ``gcw_config_fault``, one log line) and resumes when a
      probe passes. See ``ConfigurationFault``.
    """

    INVALID = "invalid"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    CONFIGURATION = "configuration"


class WorkerError(Exception):
    """Base of every error the worker classifies. ``str()`` never contains a secret."""

    kind: ErrorKind = ErrorKind.PERMANENT
    code: str = "Error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def to_dict(self) -> dict[str, str]:
        """The ``{"code", "message"}`` shape used in results."""
        return {"code": self.code, "message": str(self)}


class InvalidError(WorkerError):
    """The request itself is wrong; retrying cannot help."""

    kind = ErrorKind.INVALID
    code = "InvalidRequest"


class TransientError(WorkerError):
    """Worth trying again later (throttling, 5xx, network, timeouts, a lost lock)."""

    kind = ErrorKind.TRANSIENT
    code = "TransientError"


class PermanentError(WorkerError):
    """The request was fine but the work failed for good."""

    kind = ErrorKind.PERMANENT
    code = "PermanentError"


class Cancelled(TransientError):
    """The caller's cancel event was set (lock lost, shutdown): the work was not finished, try again later."""

    code = "Cancelled"


class FaultCause(StrEnum):
    """Why the deployment is misconfigured: the ``cause`` label of ``gcw_config_fault`` and ``/readyz``."""

    GEOCATALOG_UNAUTHORIZED = "geocatalog_unauthorized"  # 401 after a token refresh: credential/tenant rejected
    GEOCATALOG_AUDIENCE = "geocatalog_audience"  # 401 naming the token's audience: wrong --geocatalog-scope
    GEOCATALOG_FORBIDDEN = "geocatalog_forbidden"  # 403 after a token refresh: a role assignment is missing
    GEOCATALOG_ENDPOINT = "geocatalog_endpoint"  # the endpoint does not resolve or refuses connections at start
    SERVICEBUS_UNAUTHORIZED = "servicebus_unauthorized"  # the Service Bus credential is rejected
    SERVICEBUS_FORBIDDEN = "servicebus_forbidden"  # the credential lacks a right (Listen, Send) on an entity
    SERVICEBUS_ENTITY_NOT_FOUND = "servicebus_entity_not_found"  # a queue/topic/subscription does not exist


class ConfigurationFault(WorkerError):
    """A fault of the deployment, not of the request: the kind is always ``configuration`` (not settable), and
    ``cause`` (a ``FaultCause``) says which part of the configuration to fix."""

    kind = ErrorKind.CONFIGURATION
    code = "ConfigurationFault"
    cause: FaultCause = FaultCause.GEOCATALOG_UNAUTHORIZED

    def __init__(self, message: str, *, cause: FaultCause | None = None, **kwargs: str | float | None) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        if cause is not None:
            self.cause = cause
