"""Settling request messages on the receiver that received them: complete or dead-letter, with the metrics.

Called only from the receiver-owner thread, and only after the request's reply (if any) was durably sent.
Lost locks and broker errors are logged, never raised: the redelivery takes over, and the reply's
deterministic message id makes a second reply a duplicate the reply queue drops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from azure.servicebus.exceptions import MessageLockLostError, SessionLockLostError

from worker.domain.secrets import redact
from worker.observability.metrics import Metrics
from worker.servicebus.inflight import InFlight
from worker.servicebus.messages import MAX_DESCRIPTION, MAX_REASON, clip, utcnow
from worker.servicebus.outcome import Disposition, Settle

log = structlog.get_logger(__name__)

LOCK_LOST_ERRORS = (MessageLockLostError, SessionLockLostError)


def observe_end_to_end(metrics: Metrics, rec: InFlight, status: str) -> None:
    """Enqueued (broker time) -> settled, for the message as delivered (a retry's copy counts from its own
    enqueue)."""
    if rec.meta.enqueued_time is not None:
        elapsed = (utcnow() - rec.meta.enqueued_time).total_seconds()
        metrics.end_to_end.labels(status=status).observe(max(0.0, elapsed))


def settle_message(
    receiver: Any, rec: InFlight, disp: Disposition, metrics: Metrics, clock: Callable[[], float]
) -> None:
    """Dead-letter (with the disposition's reason and description) or complete ``rec``'s message."""
    status = disp.result.status if disp.result is not None else None
    try:
        if disp.action is Settle.DEAD_LETTER:
            reason = clip(disp.reason or "ProcessingError", MAX_REASON)
            receiver.dead_letter_message(
                rec.message,
                reason=reason,
                error_description=clip(redact(disp.description or reason or ""), MAX_DESCRIPTION),
            )
            metrics.dead_lettered.labels(reason=reason or "unknown").inc()
            observe_end_to_end(metrics, rec, "dead_lettered")
            log.warning(
                "request_dead_lettered", message_id=rec.meta.message_id, reason=reason, attempt=rec.meta.attempt
            )
        else:
            receiver.complete_message(rec.message)
            observe_end_to_end(metrics, rec, str(status or "unknown"))
            log.info(
                "request_completed",
                message_id=rec.meta.message_id,
                correlation_id=rec.meta.correlation_id or rec.meta.message_id,
                attempt=rec.meta.attempt,
                status=status,
                duration_ms=round((clock() - rec.received_mono) * 1000, 1),
            )
    except LOCK_LOST_ERRORS as exc:
        metrics.locks_lost.inc()
        log.warning("settle_lock_lost", message_id=rec.meta.message_id, error=redact(str(exc)))
    except Exception as exc:
        log.error("settle_failed", message_id=rec.meta.message_id, error=redact(f"{type(exc).__name__}: {exc}"))


def dead_letter_unreadable(receiver: Any, message: Any, exc: Exception, metrics: Metrics) -> None:
    """A message whose properties or body cannot even be read: dead-letter it (no result can be built)."""
    message_id = redact(str(getattr(message, "message_id", None)))
    what = redact(f"{type(exc).__name__}: {exc}")
    log.error("message_unreadable", message_id=message_id, error=what)
    try:
        receiver.dead_letter_message(
            message,
            reason="InvalidRequest",
            error_description=clip(f"message: unreadable Service Bus message ({what})", MAX_DESCRIPTION),
        )
        metrics.dead_lettered.labels(reason="InvalidRequest").inc()
    except Exception as settle_exc:  # its lock expires: the redelivery (delivery count) takes over
        log.warning("settle_failed", message_id=message_id, error=redact(f"{type(settle_exc).__name__}"))
