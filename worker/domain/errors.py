"""The error taxonomy shared by every layer: each failure is invalid, transient or permanent."""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """How a failure should be handled.

    - ``invalid``: the request itself is wrong; retrying cannot help. Answer ``invalid`` and dead-letter.
    - ``transient``: throttling, 5xx, network, timeouts; retry with backoff.
    - ``permanent``: the request was fine but the work failed for good (e.g. an operation ended Failed
      with a non-transient error, or authentication still fails after a token refresh).
    """

    INVALID = "invalid"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


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
        kind: ErrorKind | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if kind is not None:
            self.kind = kind
        self.field = field
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def to_dict(self) -> dict[str, str]:
        """The ``{"code", "message"}`` shape used in results."""
        return {"code": self.code, "message": str(self)}
