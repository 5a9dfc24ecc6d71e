"""Keeping the locks of in-flight messages (or of the session) alive, up to a cap, from the owner thread.

A lock is renewed when half its duration has passed; a message held longer than ``max_lock_renewal_seconds`` is
not renewed any more and is lost when its lock expires. ``renew_message_locks`` reports the messages whose lock
is gone (the owner cancels their processing: they publish nothing and are redelivered).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import structlog
from azure.servicebus.exceptions import MessageAlreadySettled, ServiceBusError

from worker.domain.secrets import redact
from worker.observability.metrics import Metrics
from worker.servicebus.inflight import InFlight
from worker.servicebus.messages import utcnow
from worker.servicebus.settlement import LOCK_LOST_ERRORS

log = structlog.get_logger(__name__)


def renewal_due(rec: InFlight) -> float:
    """When ``rec``'s lock is due for renewal (monotonic): half its duration before it expires."""
    return rec.lock_expires_mono - rec.lock_duration / 2


def renew_message_locks(
    receiver: Any, recs: Iterable[InFlight], now: float, cap: float, metrics: Metrics
) -> tuple[list[tuple[InFlight, str]], float]:
    """Renew every lock past half its duration; returns ``(message, why)`` for the locks that are gone, and when
    the next call has something to do (monotonic; the owner skips the scan of every message until then)."""
    lost: list[tuple[InFlight, str]] = []
    next_due = float("inf")
    for rec in list(recs):
        due = renewal_due(rec)
        if now < due:
            next_due = min(next_due, due)
            continue
        remaining = rec.lock_expires_mono - now
        if now - rec.received_mono >= cap:
            if remaining <= 0:
                lost.append((rec, f"lock renewal cap of {cap:.0f}s reached"))
            else:
                next_due = min(next_due, rec.lock_expires_mono)  # not renewed: lost when it expires
            continue
        try:
            locked_until = receiver.renew_message_lock(rec.message)
        except LOCK_LOST_ERRORS as exc:
            lost.append((rec, redact(str(exc))))
            continue
        except (ServiceBusError, MessageAlreadySettled, ValueError) as exc:
            if remaining <= 0:
                lost.append((rec, redact(f"{type(exc).__name__}: {exc}")))
            else:
                log.warning("lock_renew_failed", message_id=rec.meta.message_id, error=redact(str(exc)))
                next_due = now  # try again on the next turn
            continue
        rec.renewals += 1
        metrics.lock_renewals.inc()
        rec.lock_expires_mono = now + max(0.0, (locked_until - utcnow()).total_seconds())
        next_due = min(next_due, renewal_due(rec))
    return lost, next_due


class SessionLock:
    """The lock of the session a session receiver holds: every message of the session shares it."""

    def __init__(self) -> None:
        self.until = 0.0  # monotonic
        self.duration = 0.0  # learned from the first lock seen

    def reset(self) -> None:
        self.until = 0.0
        self.duration = 0.0

    def set(self, locked_until: dt.datetime | None, now: float, recs: Iterable[InFlight]) -> None:
        remaining = (locked_until - utcnow()).total_seconds() if locked_until else 30.0
        if not self.duration:
            self.duration = max(remaining, 0.5)
        self.until = now + remaining
        for rec in recs:
            rec.lock_expires_mono = self.until

    def due(self, now: float, recs: list[InFlight], cap: float) -> bool:
        """Past half its duration, and no message held beyond the renewal cap."""
        if self.until - now > self.duration / 2:
            return False
        return not (recs and now - min(r.received_mono for r in recs) >= cap)
