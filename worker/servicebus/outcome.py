"""The runtime's view of what to do with a processed message."""

from __future__ import annotations

from dataclasses import dataclass

from worker.domain.contract import Result
from worker.processing.processor import Outcome, Settle

__all__ = ["Disposition", "Settle"]


@dataclass(frozen=True)
class Disposition:
    """What the receiver-owner thread does with a message after processing."""

    action: Settle
    result: Result | None = None  # published before the message is settled
    reason: str | None = None  # dead-letter reason code; for HOLD the configuration fault's cause
    description: str | None = None
    retry_after: float | None = None  # RETRY: seconds until the next attempt (the processor's RequestRetryPolicy)
    # True when GeoCatalog answered (success or a definite failure): feeds the circuit breaker.
    # None: says nothing about GeoCatalog (invalid input, cancellation, a configuration fault: HOLD holds the
    # breaker itself in the ReceiverOwner).
    service_ok: bool | None = None

    @classmethod
    def from_outcome(cls, outcome: Outcome) -> Disposition:
        return cls(
            action=outcome.settle,
            result=outcome.result,
            reason=outcome.reason,
            description=outcome.description,
            retry_after=outcome.retry_after,
            service_ok=outcome.service_ok,
        )
