"""Settling request messages on the receiver that received them: complete or dead-letter, with the metrics.

Called only from the receiver-owner thread, and only after the request's reply (if any) was durably sent.
Lost locks and broker errors are logged, never raised: the redelivery takes over, and the reply's
deterministic message id makes a second reply a duplicate the reply queue drops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any

import structlog
from azure.servicebus import ServiceBusReceivedMessage, ServiceBusReceiver
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
            record_completed(rec, disp, metrics, clock)
    except LOCK_LOST_ERRORS as exc:
        metrics.locks_lost.inc()
        log.warning("settle_lock_lost", message_id=rec.meta.message_id, error=redact(str(exc)))
    except Exception as exc:
        log.error("settle_failed", message_id=rec.meta.message_id, error=redact(f"{type(exc).__name__}: {exc}"))


def record_completed(rec: InFlight, disp: Disposition, metrics: Metrics, clock: Callable[[], float]) -> None:
    """The metrics and the log line of a completion the broker confirmed."""
    status = disp.result.status if disp.result is not None else None
    observe_end_to_end(metrics, rec, str(status or "unknown"))
    log.info(
        "request_completed",
        message_id=rec.meta.message_id,
        correlation_id=rec.meta.correlation_id or rec.meta.message_id,
        attempt=rec.meta.attempt,
        status=status,
        duration_ms=round((clock() - rec.received_mono) * 1000, 1),
    )


class Together(StrEnum):
    """How ``complete_in_one_request`` went."""

    DONE = "done"  # the broker answered 200: every message is completed
    LOCK_LOST = "lock_lost"  # refused for a lost lock (an everyday answer)
    FAILED = "failed"  # any other failure, or the SDK lacks the operation


def complete_in_one_request(receiver: ServiceBusReceiver, messages: Sequence[ServiceBusReceivedMessage]) -> Together:
    """Complete ``messages`` (peek-locked, received on ``receiver``'s link, not of a session) with one
    ``com.microsoft:update-disposition`` request on the entity's management link: one round trip for all, where
    the public ``complete_message`` waits for each outcome in turn (PEEK_LOCK negotiates rcv-settle-mode second:
    azure/servicebus/_common/receiver_mixins.py).

    DONE only when the broker answered 200 for the request: every message is then settled (marked settled, so
    the SDK refuses a second settlement, and its delivery tag dropped from the receiver link's bookkeeping,
    which would otherwise keep every tag for the link's lifetime). Otherwise (the SDK lacks the operation, or the
    request failed: the answer carries no per-token outcome, and a broker may have applied part of it) nothing is
    known, the caller settles each message with ``complete_message`` as before (one whose completion was applied
    then reads as a lost lock).

    The only use of the SDK's private settlement path (azure-servicebus 7.15,
    azure/servicebus/_servicebus_receiver.py ``_settle_message_via_mgmt_link``, the fallback of
    ``_settle_message``; tests/integration/test_settle_batch_emulator.py fails when it changes)."""
    settle = getattr(receiver, "_settle_message_via_mgmt_link", None)
    if settle is None or not messages:
        return Together.FAILED
    try:
        settle("completed", [m.lock_token for m in messages])
    except Exception as exc:
        lost = isinstance(exc, LOCK_LOST_ERRORS)
        log.warning("settle_batch_failed", count=len(messages), error=redact(f"{type(exc).__name__}: {exc}"))
        return Together.LOCK_LOST if lost else Together.FAILED
    tags = _link_delivery_tags(receiver)
    for m in messages:
        m._settled = True
        if tags is not None:
            tags.discard(m._delivery_tag)
    return Together.DONE


def _link_delivery_tags(receiver: ServiceBusReceiver) -> set[bytes] | None:
    """The pyamqp receiver link's set of the delivery tags it has not sent a disposition for (None: not found)."""
    link = getattr(getattr(receiver, "_handler", None), "_link", None)
    tags = getattr(link, "_received_delivery_tags", None)
    return tags if isinstance(tags, set) else None


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
