"""The receiver-owner thread: the only thread that touches this receiver and its senders.

The azure-servicebus sync clients are not thread-safe, so one thread owns a receiver, the reply senders and
the request-queue sender (for re-scheduled retries). Its loop:

1. drain the command queue (finished messages from the worker threads): send the replies (batched per
   destination), then settle each request (complete / dead-letter / re-schedule + complete / abandon);
2. renew the lock of every in-flight message (or the session lock) before it expires, up to a cap; a lock
   that cannot be renewed cancels the processing of its message, which then publishes nothing;
3. receive up to the number of free slots (bounded prefetch: the link never asks for more than it can
   process), unless the circuit breaker holds intake or the process is draining; hand each message to the
   worker pool.

A request that meets a configuration fault (``Settle.HOLD``) is neither answered nor settled: its lock is
renewed while the breaker holds intake, and it is processed again (one as the half-open probe, all once the
breaker closes). A Service Bus error that is a configuration fault (a right missing, an entity not found) on
opening the receiver or a sender is reported per check (``worker.servicebus.faults``) until an open succeeds.

When draining it stops receiving, keeps settling and renewing until nothing is in flight or the drain
deadline passes, then abandons what is left (so it is redelivered at once) and closes its links.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from azure.servicebus import ServiceBusClient
from azure.servicebus.exceptions import (
    ServiceBusError,
)

from worker import tracing
from worker.domain.retry_policy import attempt_number
from worker.domain.secrets import redact
from worker.observability.health import HealthState
from worker.observability.metrics import Metrics
from worker.servicebus.breaker import BreakerState, CircuitBreaker
from worker.servicebus.faults import (
    ConfigFaults,
)
from worker.servicebus.holds import HeldRequests
from worker.servicebus.inflight import InFlight, received
from worker.servicebus.locks import renew_message_locks, renewal_due
from worker.servicebus.messages import (
    build_retry_copy,
    utcnow,
)
from worker.servicebus.outcome import Disposition, Settle
from worker.servicebus.receiving import RequestLink
from worker.servicebus.replies import Senders, publish
from worker.servicebus.settings import ConsumerSettings
from worker.servicebus.settlement import (
    LOCK_LOST_ERRORS,
    Together,
    complete_in_one_request,
    dead_letter_unreadable,
    record_completed,
    settle_message,
)

log = structlog.get_logger(__name__)

MAX_COMMANDS_PER_TURN = 256
# after this many update-disposition requests in a row fail for another reason than a lost lock (the SDK lacks the
# operation, the service refuses it for link-received messages), this owner completes one by one from then on
MAX_TOGETHER_FAILURES = 3


class ReceiverOwner(threading.Thread):
    """Owns one receiver. ``capacity`` is its share of in-flight slots (1 for a session: ordered)."""

    def __init__(
        self,
        name: str,
        client: ServiceBusClient,
        settings: ConsumerSettings,
        *,
        dispatch: Callable[[InFlight, ReceiverOwner], None],
        breaker: CircuitBreaker,
        metrics: Metrics,
        health: HealthState,
        capacity: int,
        faults: ConfigFaults | None = None,
        receiver_client: ServiceBusClient | None = None,
        sender_client: ServiceBusClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.client = client
        # session acquisition: a client without SDK retries, so "no session available" returns after
        # max_wait_time instead of ~20 s of retried attempts (which would stall this loop)
        self.receiver_client = receiver_client or client
        self.settings = settings
        self.capacity = capacity
        self._dispatch = dispatch
        self._breaker = breaker
        self._metrics = metrics
        self._health = health
        self._clock = clock
        self._commands: queue.SimpleQueue[tuple[InFlight, Disposition]] = queue.SimpleQueue()
        self._inflight: dict[int, InFlight] = {}
        # reply and reschedule senders: a client without SDK retries, so a missing or forbidden entity is reported
        # after one attempt (the worker's backoff and redelivery own the retry)
        self._senders = Senders(sender_client or client)
        self._drain_deadline: float | None = None
        self._last_message_at: float = 0.0
        self._abandon_at: dict[int, float] = {}
        self._renew_at = float("inf")  # no message lock is due for renewal before this (monotonic)
        self._faults = faults or ConfigFaults(health, metrics)
        self._link = RequestLink(
            name, self.receiver_client, settings, senders=self._senders, health=health, faults=self._faults, clock=clock
        )
        self._held = HeldRequests(breaker)
        self._together_failures = 0  # update-disposition requests failed in a row, not for a lost lock
        # burst mode: since when every receive found nothing with nothing in flight (None: not empty), and when
        # the last retry this owner scheduled on the request queue becomes due
        self._empty_since: float | None = None
        self._retries_due_at = 0.0

    # ---- called from other threads ---------------------------------------------------------------------
    def finish(self, rec: InFlight, disposition: Disposition) -> None:
        """A worker thread hands back a processed message (never blocks)."""
        self._commands.put((rec, disposition))

    def begin_drain(self, deadline: float) -> None:
        self._drain_deadline = deadline

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def empty_for(self) -> float:
        """How long receives have found the entity empty, nothing in flight and no scheduled retry due (0: not)."""
        since = self._empty_since
        if since is None:
            return 0.0
        return max(0.0, self._clock() - max(since, self._retries_due_at))

    def _note_intake(self, found_nothing: bool) -> None:
        """After a receive (or a session accept) that found nothing or something; or when none was tried."""
        if not found_nothing or self._inflight:
            self._empty_since = None
        elif self._empty_since is None:
            self._empty_since = self._clock()

    # ---- the loop ----------------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._loop()
        except Exception:
            log.exception("receiver_loop_crashed", receiver=self.name)
            self._abandon_all("receiver loop crashed")
        finally:
            self._close()
            self._health.set_connected(self.name, False)
            self._health.forget(self.name)

    def _loop(self) -> None:
        while True:
            self._health.beat(self.name)
            self._run_commands(block_for=0.0)
            self._renew_locks()
            self._abandon_due()
            if self._drain_deadline is not None:
                self._abandon_held("draining")
                for key in list(self._abandon_at):  # retries waiting out their backoff: let them go now
                    self._abandon_at[key] = 0.0
                if not self._inflight:
                    return
                if self._clock() >= self._drain_deadline:
                    self._abandon_all("drain deadline reached")
                    return
                self._run_commands(block_for=0.1)
                continue
            if self._link.receiver is None and not self._open():
                continue  # _open noted whether there was no session to accept
            if self.settings.sessions and self._session_idle():
                self._link.release_session()
                continue
            if self._held and self._resume_held():
                continue
            free = self.capacity - len(self._inflight)
            wanted = min(free, self.settings.max_receive_batch)
            allowed = self._breaker.allowance(wanted) if wanted > 0 else 0
            if allowed <= 0:
                self._note_intake(found_nothing=False)  # full, or intake held: the entity is not known empty
                self._run_commands(block_for=0.2)
                continue
            self._receive(allowed, probe=self._breaker.state is BreakerState.HALF_OPEN)

    # ---- receiving ---------------------------------------------------------------------------------------
    def _open(self) -> bool:
        """Open the receiver (accepting the next session when the entity requires sessions)."""
        wait = self._link.open(self._inflight.values())
        if wait is None:
            self._last_message_at = self._clock()
            return True
        self._note_intake(found_nothing=wait == 0.0)  # 0: no session to accept; else the open failed
        if wait:
            self._run_commands(block_for=wait)
        return False

    # ---- configuration faults: held messages -------------------------------------------------------------
    def _resume_held(self) -> bool:
        """Process held messages again: one as the half-open probe, all once the breaker is closed."""
        resumed, probe = self._held.release()
        if not resumed:
            return False
        for key in resumed:
            rec = self._inflight.get(key)
            if rec is None:  # its lock was lost meanwhile: the redelivery takes over
                if probe:
                    self._breaker.record_neutral()
                continue
            rec.probe = probe
            log.info("request_resumed", message_id=rec.meta.message_id, probe=probe)
            self._dispatch(rec, self)
        return True

    def _abandon_held(self, why: str) -> None:
        for key in self._held.release_all():
            rec = self._inflight.get(key)
            if rec is not None:
                self._abandon(rec, why)

    def _receive(self, count: int, *, probe: bool) -> None:
        wait = self.settings.busy_receive_wait if self._inflight else self.settings.idle_receive_wait
        try:
            messages = self._link.receiver.receive_messages(max_message_count=count, max_wait_time=wait)
        except LOCK_LOST_ERRORS as exc:
            if probe:
                self._breaker.record_neutral()
            log.warning("session_lock_lost", receiver=self.name, error=redact(str(exc)))
            self._lose_all("session lock lost")
            self._link.release_session()
            return
        except ServiceBusError as exc:
            if probe:
                self._breaker.record_neutral()
            self._health.set_connected(self.name, False)
            log.warning("receive_failed", receiver=self.name, error=redact(f"{type(exc).__name__}: {exc}"))
            # messages received on this link can no longer be settled through it: their redelivery takes over
            self._lose_all("receiver link failed")
            self._link.reset()
            self._note_intake(found_nothing=False)
            self._run_commands(block_for=1.0)
            return
        self._health.set_connected(self.name, True)
        self._note_intake(found_nothing=not messages)
        if probe and not messages:
            self._breaker.record_neutral()
        now = self._clock()
        if messages:
            self._last_message_at = now
        dispatched = 0
        for message in messages:
            self._metrics.received.inc()
            try:
                rec = self._track(message, now)
            except Exception as exc:  # an unreadable message must not take the loop (and this pod) down
                dead_letter_unreadable(self._link.receiver, message, exc, self._metrics)
                continue
            rec.probe = probe and dispatched == 0
            dispatched += 1
            self._dispatch(rec, self)
        if probe and messages and not dispatched:
            self._breaker.record_neutral()
        self._metrics.in_flight.set(self._total_inflight())

    def _track(self, message: Any, now: float) -> InFlight:
        rec = received(
            message,
            now,
            session_lock=self._link.session_lock if self.settings.sessions else None,
            entity=self.settings.entity,
            metrics=self._metrics,
        )
        self._inflight[rec.key] = rec
        self._renew_at = min(self._renew_at, renewal_due(rec))
        return rec

    def _total_inflight(self) -> int:
        return len(self._inflight)

    # ---- lock renewal ------------------------------------------------------------------------------------
    def _renew_locks(self) -> None:
        if self._link.receiver is None:
            return
        now = self._clock()
        if self.settings.sessions:
            self._renew_session(now)
            return
        if now < self._renew_at:  # nothing due: no scan of every message on each turn (docs/benchmarks.md)
            return
        lost, self._renew_at = renew_message_locks(
            self._link.receiver, self._inflight.values(), now, self.settings.max_lock_renewal_seconds, self._metrics
        )
        for rec, why in lost:
            self._lose(rec, why)

    def _renew_session(self, now: float) -> None:
        if self._link.receiver is None or self._link.session_id is None:
            return
        if not self._link.session_lock.due(now, list(self._inflight.values()), self.settings.max_lock_renewal_seconds):
            return
        try:
            locked_until = self._link.receiver.session.renew_lock()
        except Exception as exc:
            log.warning("session_lock_lost", session_id=self._link.session_id, error=redact(str(exc)))
            self._lose_all("session lock lost")
            self._link.release_session()
            return
        self._metrics.lock_renewals.inc()
        self._link.session_lock.set(locked_until, self._clock(), self._inflight.values())

    def _session_idle(self) -> bool:
        if self._inflight or self._link.session_id is None:
            return False
        return self._clock() - self._last_message_at >= self.settings.session_idle_seconds

    # ---- lost, abandoned -------------------------------------------------------------------------------
    def _forget(self, rec: InFlight) -> bool:
        """Stop ``rec``'s work and drop it from the books; False when it was gone already."""
        rec.cancel.set()
        if self._inflight.pop(rec.key, None) is None:
            return False
        self._abandon_at.pop(rec.key, None)
        if rec.probe:
            self._breaker.record_neutral()
        return True

    def _lose(self, rec: InFlight, why: str) -> None:
        """The lock is gone: stop the work, publish nothing, let the redelivery take over."""
        if not self._forget(rec):
            return
        self._metrics.locks_lost.inc()
        self._metrics.in_flight.set(self._total_inflight())
        log.warning("lock_lost", message_id=rec.meta.message_id, attempt=rec.meta.attempt, reason=why)
        tracing.message_finished(rec.trace, "lock_lost", why)

    def _lose_all(self, why: str) -> None:
        for rec in list(self._inflight.values()):
            self._lose(rec, why)

    def _abandon(self, rec: InFlight, why: str) -> None:
        if not self._forget(rec):
            return
        try:
            with tracing.settle_span(rec.trace, "abandon"):
                self._link.receiver.abandon_message(rec.message)
                log.info("message_abandoned", message_id=rec.meta.message_id, attempt=rec.meta.attempt, reason=why)
        except Exception as exc:
            log.warning("abandon_failed", message_id=rec.meta.message_id, error=redact(str(exc)))
        tracing.message_finished(rec.trace, "abandoned", why)
        self._metrics.in_flight.set(self._total_inflight())

    def _abandon_all(self, why: str) -> None:
        # finished work first: a reply that is ready is worth publishing
        self._run_commands(block_for=0.0)
        for rec in list(self._inflight.values()):
            self._abandon(rec, why)

    def _abandon_due(self) -> None:
        now = self._clock()
        for key, due in list(self._abandon_at.items()):
            rec = self._inflight.get(key)
            if rec is None:
                self._abandon_at.pop(key, None)
            elif now >= due:
                self._abandon(rec, "retry after backoff")

    # ---- settling ----------------------------------------------------------------------------------------
    def _run_commands(self, *, block_for: float) -> None:
        batch: list[tuple[InFlight, Disposition]] = []
        try:
            if block_for > 0:
                batch.append(self._commands.get(timeout=block_for))
            while len(batch) < MAX_COMMANDS_PER_TURN:
                batch.append(self._commands.get_nowait())
        except queue.Empty:
            pass
        if batch:
            self._settle_batch(batch)

    def _settle_batch(self, batch: list[tuple[InFlight, Disposition]]) -> None:
        to_reply: list[tuple[InFlight, Disposition]] = []
        to_settle: list[tuple[InFlight, Disposition]] = []
        for rec, disp in batch:
            if rec.key not in self._inflight or rec.key in self._abandon_at:
                continue  # lost or abandoned meanwhile: publish nothing
            if disp.action is Settle.HOLD:
                self._held.hold(rec, disp)
                continue
            self._record_breaker(rec, disp)
            if disp.action is Settle.RETRY:
                self._retry(rec, disp)
            elif disp.result is not None:
                to_reply.append((rec, disp))
            else:
                to_settle.append((rec, disp))
        published = publish(self._senders, to_reply, self.settings, self._metrics)
        for rec in published.failed:
            self._abandon(rec, "reply could not be sent")
        self._settle_all(to_settle + published.unbuildable + published.sent)
        self._metrics.in_flight.set(self._total_inflight())

    def _settle_all(self, items: list[tuple[InFlight, Disposition]]) -> None:
        """Settle ``items``: the completions of a non-session receiver in one request when there are several
        (``complete_in_one_request``), the rest, and all of them if that request fails, one by one."""
        now = self._clock()
        batched = [
            (rec, disp)
            for rec, disp in items
            if disp.action is Settle.COMPLETE and rec.lock_remaining(now) > 0  # an expired lock: as before
        ]
        together = (
            self.settings.settle_together
            and not self.settings.sessions  # a session's settlements stay on its receiver link
            and len(batched) >= 2
            and self._together_failures < MAX_TOGETHER_FAILURES
        )
        if together and self._complete_together(batched):
            keys = {rec.key for rec, _ in batched}
            items = [(rec, disp) for rec, disp in items if rec.key not in keys]
        for rec, disp in items:
            self._settle(rec, disp)

    def _complete_together(self, items: list[tuple[InFlight, Disposition]]) -> bool:
        spans = [tracing.settle_span(rec.trace, str(Settle.COMPLETE)) for rec, _ in items]
        outcome = complete_in_one_request(self._link.receiver, [rec.message for rec, _ in items])
        for span in spans:
            span.end(None if outcome is Together.DONE else "update-disposition not confirmed: settled one by one")
        if outcome is Together.FAILED:
            self._together_failures += 1
            if self._together_failures == MAX_TOGETHER_FAILURES:
                log.warning("settle_together_disabled", receiver=self.name, failures=self._together_failures)
        elif outcome is Together.DONE:
            self._together_failures = 0
        if outcome is not Together.DONE:
            return False
        log.debug("requests_completed_together", receiver=self.name, count=len(items))
        for rec, disp in items:
            record_completed(rec, disp, self._metrics, self._clock)
            self._settled(rec, disp)
        return True

    def _record_breaker(self, rec: InFlight, disp: Disposition) -> None:
        if disp.service_ok is True:
            self._breaker.record_success()
        elif disp.service_ok is False:
            self._breaker.record_failure()
        elif rec.probe:
            self._breaker.record_neutral()

    def _settle(self, rec: InFlight, disp: Disposition) -> None:
        try:
            with tracing.settle_span(rec.trace, str(disp.action)):
                settle_message(self._link.receiver, rec, disp, self._metrics, self._clock)
        finally:
            self._settled(rec, disp)

    def _settled(self, rec: InFlight, disp: Disposition) -> None:
        """Off the books (settled, or its settlement failed: the redelivery takes over)."""
        self._inflight.pop(rec.key, None)
        self._last_message_at = self._clock()  # a session is idle from its last activity, not its last receive
        tracing.message_finished(rec.trace, str(getattr(disp.result, "status", None) or disp.action))

    def _retry(self, rec: InFlight, disp: Disposition) -> None:
        s = self.settings
        attempt = attempt_number(rec.meta)
        delay = disp.retry_after or 0.0  # the processor's RequestRetryPolicy decided it
        if self._breaker.state is BreakerState.OPEN:
            delay = max(delay, self._breaker.reopens_in())
        self._metrics.retried.inc()
        if not s.can_reschedule:
            # keep the message (its lock renewed) for the backoff, then abandon: the order of a session holds
            self._abandon_at[rec.key] = self._clock() + min(delay, s.max_lock_renewal_seconds)
            log.info("retry_by_abandon", message_id=rec.meta.message_id, attempt=attempt, delay_s=round(delay, 2))
            return
        copy = build_retry_copy(rec.message, rec.meta, next_attempt=attempt + 1)
        at = utcnow() + dt.timedelta(seconds=delay)
        try:
            with tracing.settle_span(rec.trace, "schedule"):
                self._senders.get(s.request_queue or "").schedule_messages(copy, at)
        except Exception as exc:
            log.warning("reschedule_failed", message_id=rec.meta.message_id, error=redact(str(exc)))
            self._senders.drop(s.request_queue or "")
            self._abandon(rec, "reschedule failed")
            return
        log.info(
            "request_rescheduled",
            message_id=rec.meta.message_id,
            attempt=attempt,
            next_attempt=attempt + 1,
            delay_s=round(delay, 2),
            reason=disp.reason,
        )
        # the copy is durably scheduled: only now may the original go (burst mode waits until it is due)
        self._retries_due_at = max(self._retries_due_at, self._clock() + delay)
        self._settle(rec, Disposition(action=Settle.COMPLETE))

    # ---- closing -----------------------------------------------------------------------------------------
    def _close(self) -> None:
        self._senders.close()
        self._link.reset()
