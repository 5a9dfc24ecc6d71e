"""The bookkeeping of one message between receive and settlement."""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from worker import tracing
from worker.domain.contract import MessageMeta
from worker.observability.metrics import Metrics
from worker.servicebus.messages import body_bytes, meta_from_message, utcnow
from worker.tracing import MessageTrace

if TYPE_CHECKING:
    from worker.servicebus.locks import SessionLock


@dataclass(eq=False)
class InFlight:
    message: Any  # ServiceBusReceivedMessage; touched only by the receiver-owner thread
    meta: MessageMeta
    body: bytes
    received_at: dt.datetime
    received_mono: float
    lock_duration: float  # seconds, as granted at receive
    lock_expires_mono: float
    cancel: threading.Event = field(default_factory=threading.Event)
    renewals: int = 0
    probe: bool = False  # the circuit breaker's half-open probe
    trace: MessageTrace | None = None  # its ``receive`` span while tracing is on

    @property
    def key(self) -> int:
        return id(self)

    def lock_remaining(self, now: float | None = None) -> float:
        return self.lock_expires_mono - (time.monotonic() if now is None else now)


def received(message: Any, now: float, *, session_lock: SessionLock | None, entity: str, metrics: Metrics) -> InFlight:
    """The bookkeeping of a message just received (``now`` monotonic); a session message shares the session's
    lock. Records the message's queue wait (``gcw_message_age_seconds``) and starts its trace."""
    wall = utcnow()
    if session_lock is not None:
        lock_duration = session_lock.duration or 30.0
        expires = session_lock.until or now + lock_duration
    else:
        locked_until = message.locked_until_utc
        remaining = (locked_until - wall).total_seconds() if locked_until else 30.0
        lock_duration = max(remaining, 0.5)
        expires = now + remaining
    rec = InFlight(
        message=message,
        meta=meta_from_message(message),
        body=body_bytes(message),
        received_at=wall,
        received_mono=now,
        lock_duration=lock_duration,
        lock_expires_mono=expires,
    )
    rec.trace = tracing.message_received(
        rec.meta.application_properties,
        entity=entity,
        message_id=rec.meta.message_id,
        delivery_count=rec.meta.delivery_count,
        attempt=rec.meta.attempt,
    )
    if rec.meta.enqueued_time is not None:
        metrics.message_age.observe(max(0.0, (wall - rec.meta.enqueued_time).total_seconds()))
    return rec
