"""The runtime's view of what to do with a processed message.

``worker.processing.processor.Outcome`` is read by attribute (``result``, ``settle``, ``reason``, ``description``,
``retry_after``) and its ``settle`` by name (``COMPLETE``, ``RETRY``, ``DEAD_LETTER``, ``HOLD``), so the runtime
does not depend on how the processor spells its enum values.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    COMPLETE = "complete"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    HOLD = "hold"  # a configuration fault: keep the message (lock renewed), hold intake, process it again later


@dataclass(frozen=True)
class Disposition:
    """What the receiver-owner thread does with a message after processing."""

    action: Action
    result: Any | None = None  # a contract.Result; published before the message is settled
    reason: str | None = None  # dead-letter reason code; for HOLD the configuration fault's cause
    description: str | None = None
    retry_after: float | None = None
    # True when GeoCatalog answered (success or a definite failure): feeds the circuit breaker.
    # None: says nothing about GeoCatalog (invalid input).
    service_ok: bool | None = None

    @classmethod
    def from_outcome(cls, outcome: Any) -> Disposition:
        settle = outcome.settle
        name = str(getattr(settle, "name", settle)).upper().replace("-", "_")
        action = Action[name] if name in Action.__members__ else Action(str(settle).lower())
        reason = getattr(outcome, "reason", None)
        if action is Action.HOLD:
            service_ok: bool | None = None  # the breaker is held by the fault itself (ReceiverOwner)
        elif action is Action.RETRY:
            service_ok = False
        elif reason == "InvalidRequest":
            service_ok = None
        elif reason == "RetriesExhausted":
            service_ok = False
        else:
            service_ok = True
        return cls(
            action=action,
            result=getattr(outcome, "result", None),
            reason=reason,
            description=getattr(outcome, "description", None),
            retry_after=getattr(outcome, "retry_after", None),
            service_ok=service_ok,
        )
