"""Lock exactly the selected dead-lettered messages and settle them; hold nothing longer than needed.

Service Bus cannot receive a given message by sequence number (only deferred ones), so selection is two-phase:

1. **peek** (``browse``) to choose sequence numbers — no locks, no side effects, cheap;
2. **receive** in PEEK_LOCK with ``prefetch_count=0`` (no message is locked before we ask for it), small batches:
   * a selected message goes to the handler at once (replay: send, then complete; purge: export + fsync, then
     complete) — its lock lives only for that;
   * any other message (not selected, new since the peek, or refused by the handler) is *held*: abandoning it
     right away would put it back at the head, and the next receive would return it again forever. Held locks are
     renewed when close to expiry and all abandoned together at the end (also on errors, in ``finally``).
   The loop stops when every selected message was handled, when a receive returns nothing, or when
   ``max_held`` messages are held (reported as "not reached"; re-run with narrower filters).

Cost of the hold: a non-selected message that was locked and abandoned gets its delivery count raised by one.
In a dead-letter queue that has no effect (a DLQ never dead-letters or expires its messages), and ``dlq export``
before a replay keeps the original counts. Lost locks (expiry, connection loss) return the message to the DLQ:
never a loss.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class StopSettling(Exception):
    """Raised by a handler to stop after the current message (which is kept); the text says why."""


class Decision(StrEnum):
    COMPLETE = "complete"  # the handler did its work (sent / exported): remove the DLQ copy
    KEEP = "keep"  # leave it in the DLQ (refused, failed)


@dataclass
class SettleOutcome:
    handled: int = 0
    completed: int = 0
    kept: int = 0
    complete_failed: list[tuple[int, str]] = field(default_factory=list)  # (sequence number, error)
    not_reached: set[int] = field(default_factory=set)
    released: int = 0  # locked but not selected (or kept): abandoned at the end
    stopped_because: str = ""


def settle_selected(
    receiver: Any,
    selected: Iterable[int],
    handler: Callable[[Any], Decision],
    *,
    batch: int = 32,
    max_wait_time: float = 5.0,
    max_held: int = 5000,
    before_complete: Callable[[], None] | None = None,
    renew_margin: float = 10.0,
    on_handled: Callable[[Any, Decision], None] | None = None,
) -> SettleOutcome:
    """Receive until every ``selected`` sequence number was handled; see the module docstring.

    Without ``before_complete`` a message is completed right after its handler returned COMPLETE. With it, the
    batch's COMPLETE messages are completed together after ``before_complete()`` returned (e.g. an fsync).
    """
    pending = set(selected)
    outcome = SettleOutcome()
    held: list[Any] = []
    try:
        while pending:
            if len(held) >= max_held:
                outcome.stopped_because = f"{len(held)} other messages locked (max {max_held})"
                break
            # a full batch even when few are pending: non-selected messages ahead of them must be passed quickly
            messages = receiver.receive_messages(max_message_count=batch, max_wait_time=max_wait_time)
            if not messages:
                outcome.stopped_because = "no more messages to receive"
                break
            to_complete: list[Any] = []
            for index, message in enumerate(messages):
                if outcome.stopped_because:  # a handler asked to stop: hold the rest of the batch for release
                    held.extend(messages[index:])
                    break
                if message.sequence_number not in pending:
                    held.append(message)
                    continue
                pending.discard(message.sequence_number)
                outcome.handled += 1
                try:
                    decision = handler(message)
                except StopSettling as stop:
                    outcome.kept += 1
                    held.append(message)
                    outcome.stopped_because = str(stop) or "stopped by the handler"
                    continue
                except BaseException:
                    held.append(message)  # released in finally, not left locked until expiry
                    raise
                if decision is Decision.COMPLETE:
                    if before_complete is None:
                        _complete(receiver, message, outcome)
                    else:
                        to_complete.append(message)
                else:
                    outcome.kept += 1
                    held.append(message)
                if on_handled is not None:
                    on_handled(message, decision)
            if to_complete:
                assert before_complete is not None
                before_complete()
                for message in to_complete:
                    _complete(receiver, message, outcome)
            if outcome.stopped_because:
                break
            _renew_expiring(receiver, held, renew_margin)
        else:
            outcome.stopped_because = "all selected messages handled"
    finally:
        outcome.not_reached = pending
        outcome.released = _release(receiver, held)
    return outcome


def _complete(receiver: Any, message: Any, outcome: SettleOutcome) -> None:
    try:
        receiver.complete_message(message)
        outcome.completed += 1
    except Exception as exc:  # lock lost: the copy stays in the DLQ; a re-run may duplicate, never lose
        outcome.complete_failed.append((message.sequence_number, type(exc).__name__))
        log.warning("dlq_complete_failed", sequence_number=message.sequence_number, error=type(exc).__name__)


def _renew_expiring(receiver: Any, held: list[Any], margin: float) -> None:
    now = datetime.now(UTC)
    for message in held:
        until = message.locked_until_utc
        if until is None:
            continue
        if until.tzinfo is None:
            until = until.replace(tzinfo=UTC)
        if (until - now).total_seconds() < margin:
            try:
                receiver.renew_message_lock(message)
            except Exception as exc:  # it will simply return to the DLQ
                log.debug("dlq_renew_failed", sequence_number=message.sequence_number, error=type(exc).__name__)


def _release(receiver: Any, held: list[Any]) -> int:
    released = 0
    started = time.monotonic()
    for message in held:
        try:
            receiver.abandon_message(message)
            released += 1
        except Exception as exc:  # lock already lost: the message is back in the DLQ anyway
            log.debug("dlq_abandon_failed", sequence_number=message.sequence_number, error=type(exc).__name__)
    if held:
        log.info("dlq_released_locks", count=released, seconds=round(time.monotonic() - started, 3))
    return released
