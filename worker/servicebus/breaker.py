"""A circuit breaker that holds intake while GeoCatalog is down or throttling hard.

The runtime records the outcome of every processed request: a transient failure (``RETRY``) counts as a
failure, an answer from GeoCatalog (success or a permanent per-item failure) as a success, and invalid input
as neither. After ``threshold`` consecutive failures the breaker opens: the receiver takes no new messages,
so the backlog stays in the queue instead of burning delivery counts and flooding the dead-letter queue.
After ``open_seconds`` it half-opens and lets exactly one probe request through; the probe's outcome closes
it or re-opens it for twice as long (up to ``max_open_seconds``).

A configuration fault (``hold(cause, detail)``: 401/403 after a token refresh, a wrong scope) opens it at once,
whatever the threshold, and records the cause; the half-open probe (a held request processed again) clears the
fault when it succeeds, or re-opens for twice as long when the fault is still there. ``on_fault`` hears each
change of the fault (the cause, or None once cleared).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        *,
        threshold: int = 5,
        open_seconds: float = 10.0,
        max_open_seconds: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
        on_fault: Callable[[str | None, str], None] | None = None,
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold must be >= 1")
        self._threshold = threshold
        self._base_open = open_seconds
        self._max_open = max(max_open_seconds, open_seconds)
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._open_for = open_seconds
        self._opened_at = 0.0
        self._probe_out = False
        self._on_fault = on_fault
        self._fault: str | None = None
        self._self_probed = False  # the fault is probed by its owner (a start-up check), not by requests

    @property
    def fault(self) -> str | None:
        """The cause of the configuration fault holding intake, or None."""
        with self._lock:
            return self._fault

    @property
    def state(self) -> BreakerState:
        with self._lock:
            self._tick()
            return self._state

    def allowance(self, wanted: int) -> int:
        """How many of ``wanted`` new messages may be taken now (claims the probe when half-open)."""
        with self._lock:
            self._tick()
            if self._state is BreakerState.CLOSED:
                return wanted
            if self._state is BreakerState.HALF_OPEN and not self._probe_out and wanted > 0:
                self._probe_out = True
                return 1
            return 0

    def reopens_in(self) -> float:
        """Seconds until the breaker half-opens (0 unless open)."""
        with self._lock:
            if self._state is not BreakerState.OPEN:
                return 0.0
            return max(0.0, self._opened_at + self._open_for - self._clock())

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._probe_out = False
            if self._state is not BreakerState.CLOSED:
                self._open_for = self._base_open
                self._set(BreakerState.CLOSED)
            cleared = self._fault is not None
            self._fault = None
            self._self_probed = False
        if cleared and self._on_fault is not None:
            self._on_fault(None, "")

    def hold(self, cause: str, detail: str, *, probe_with_requests: bool = True) -> None:
        """A configuration fault: open now (re-open for twice as long when it is the probe's answer).

        ``probe_with_requests=False``: no request is let through as a probe; it stays open until the caller,
        which probes the fault itself (a start-up check), calls ``record_success``."""
        with self._lock:
            self._tick()
            changed = cause != self._fault
            self._fault = cause
            self._self_probed = not probe_with_requests
            if self._state is BreakerState.HALF_OPEN:
                self._probe_out = False
                self._open_for = min(self._max_open, self._open_for * 2)
                self._open()
            elif self._state is BreakerState.CLOSED:
                self._open()
        if changed and self._on_fault is not None:
            self._on_fault(cause, detail)

    def record_neutral(self) -> None:
        """An outcome that says nothing about GeoCatalog (invalid input, lock lost): frees the probe slot."""
        with self._lock:
            self._probe_out = False

    def record_failure(self) -> None:
        with self._lock:
            self._tick()
            self._failures += 1
            if self._state is BreakerState.HALF_OPEN:
                self._probe_out = False
                self._open_for = min(self._max_open, self._open_for * 2)
                self._open()
            elif self._state is BreakerState.CLOSED and self._failures >= self._threshold:
                self._open()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._set(BreakerState.OPEN)

    def _tick(self) -> None:
        if self._self_probed:
            return
        if self._state is BreakerState.OPEN and self._clock() >= self._opened_at + self._open_for:
            self._probe_out = False
            self._set(BreakerState.HALF_OPEN)

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)
