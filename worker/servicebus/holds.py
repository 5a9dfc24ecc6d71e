"""Requests held by a configuration fault: kept (locks renewed), neither answered nor settled, run again later.

A request that meets a fault of the deployment (``Settle.HOLD``: a role missing, a wrong scope) would fail the
same way for every request, so it is held, the circuit breaker holds intake, and when the breaker lets a probe
through one held request is run again; once it closes, all are.
"""

from __future__ import annotations

import structlog

from worker.servicebus.breaker import BreakerState, CircuitBreaker
from worker.servicebus.inflight import InFlight
from worker.servicebus.outcome import Disposition

log = structlog.get_logger(__name__)


class HeldRequests:
    """The keys of held in-flight messages, oldest first (owner thread only)."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._keys: list[int] = []

    def __bool__(self) -> bool:
        return bool(self._keys)

    def hold(self, rec: InFlight, disp: Disposition) -> None:
        """Keep the message and hold intake: the fault is the deployment's, not the request's."""
        self._keys.append(rec.key)
        rec.probe = False
        self._breaker.hold(disp.reason or "configuration", disp.description or "")
        log.info("request_held", message_id=rec.meta.message_id, attempt=rec.meta.attempt, cause=disp.reason)

    def release(self) -> tuple[list[int], bool]:
        """The keys to run again now, and whether they are the half-open probe (one) or all (breaker closed)."""
        probe = self._breaker.state is BreakerState.HALF_OPEN
        count = self._breaker.allowance(len(self._keys))
        if count <= 0:
            return [], probe
        released, self._keys = self._keys[:count], self._keys[count:]
        return released, probe

    def release_all(self) -> list[int]:
        released, self._keys = self._keys, []
        return released
