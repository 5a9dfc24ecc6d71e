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
from azure.servicebus import NEXT_AVAILABLE_SESSION, ServiceBusClient, ServiceBusMessage
from azure.servicebus.exceptions import (
    MessageAlreadySettled,
    MessageLockLostError,
    OperationTimeoutError,
    ServiceBusError,
    SessionLockLostError,
)

from worker import tracing
from worker.domain.retry_policy import attempt_number
from worker.domain.secrets import redact
from worker.observability.health import HealthState
from worker.observability.metrics import Metrics
from worker.servicebus.breaker import BreakerState, CircuitBreaker
from worker.servicebus.faults import (
    CHECK_RECEIVE,
    CHECK_SCHEDULE,
    CHECK_SEND_REPLY,
    ConfigFaults,
    describe_servicebus_fault,
    servicebus_fault_cause,
)
from worker.servicebus.inflight import InFlight
from worker.servicebus.messages import (
    MAX_DESCRIPTION,
    MAX_REASON,
    body_bytes,
    build_reply,
    build_retry_copy,
    clip,
    meta_from_message,
    result_body,
    utcnow,
)
from worker.servicebus.outcome import Disposition, Settle
from worker.servicebus.settings import ConsumerSettings

log = structlog.get_logger(__name__)

LOCK_LOST_ERRORS = (MessageLockLostError, SessionLockLostError)
MAX_COMMANDS_PER_TURN = 256
REPLY_OVERHEAD_BYTES = 2048  # per message in a batch: properties and AMQP framing around the body


def _size_chunks(members: list[Any], sizes: list[int], limit: int) -> list[list[Any]]:
    """``members`` in order, split so that each chunk's ``sizes`` (plus per-message overhead) stay within
    ``limit``: several large results sent as one batch would exceed the queue's message size limit."""
    chunks: list[list[Any]] = []
    total = 0
    for member, size in zip(members, sizes, strict=True):
        size += REPLY_OVERHEAD_BYTES
        if chunks and total + size <= limit:
            chunks[-1].append(member)
            total += size
        else:
            chunks.append([member])
            total = size
    return chunks


def _close_quietly(receiver: Any) -> None:
    """Close a receiver that failed to open (never raises: this runs on the owner thread)."""
    if receiver is None:
        return
    try:
        receiver.close()
    except Exception:
        log.debug("receiver_close_failed", exc_info=True)


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
        self._receiver: Any = None
        self._senders: dict[str, Any] = {}
        self._drain_deadline: float | None = None
        self._session_id: str | None = None
        self._session_lock_until: float = 0.0
        self._session_lock_duration: float = 0.0
        self._last_message_at: float = 0.0
        self._abandon_at: dict[int, float] = {}
        self._open_failures = 0
        self._faults = faults or ConfigFaults(health, metrics)
        self._held: list[int] = []  # keys of in-flight messages held by a configuration fault, oldest first
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
            if self._receiver is None and not self._open():
                continue  # _open noted whether there was no session to accept
            if self.settings.sessions and self._session_idle():
                self._release_session()
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
        s = self.settings
        kwargs: dict[str, Any] = {
            "prefetch_count": 0,
            "max_wait_time": s.idle_receive_wait,
            "socket_timeout": s.socket_timeout,
        }
        if s.sessions:
            kwargs["session_id"] = NEXT_AVAILABLE_SESSION
        receiver: Any = None
        try:
            if s.request_queue:
                receiver = self.receiver_client.get_queue_receiver(s.request_queue, **kwargs)
            else:
                receiver = self.receiver_client.get_subscription_receiver(
                    s.request_topic, s.request_subscription, **kwargs
                )
            receiver.__enter__()
        except OperationTimeoutError:
            # no session available right now: normal for session input. Close the receiver all the same (every
            # idle attempt makes one): whatever the SDK left open for it must not wait for the garbage collector.
            _close_quietly(receiver)
            self._health.set_connected(self.name, True)
            self._note_intake(found_nothing=True)
            return False
        except Exception as exc:
            _close_quietly(receiver)
            self._note_intake(found_nothing=False)
            self._open_failures += 1
            self._health.set_connected(self.name, False)
            self._servicebus_fault(CHECK_RECEIVE, self.settings.entity, exc)
            log.warning("receiver_open_failed", receiver=self.name, error=redact(f"{type(exc).__name__}: {exc}"))
            self._run_commands(block_for=min(30.0, 0.5 * 2 ** min(self._open_failures, 6)))
            return False
        self._receiver = receiver
        if not self._warm_senders():
            self._note_intake(found_nothing=False)
            self._open_failures += 1
            self._reset_receiver()
            self._health.set_connected(self.name, False)
            self._run_commands(block_for=min(30.0, 0.5 * 2 ** min(self._open_failures, 6)))
            return False
        self._open_failures = 0
        self._health.set_connected(self.name, True)
        for check in (CHECK_RECEIVE, CHECK_SEND_REPLY, CHECK_SCHEDULE):
            self._faults.clear(check)
        if s.sessions:
            session = receiver.session
            self._session_id = session.session_id
            self._last_message_at = self._clock()
            self._set_session_lock(session.locked_until_utc)
            log.info("session_accepted", receiver=self.name, session_id=self._session_id)
        return True

    def _warm_senders(self) -> bool:
        """Open the reply sender (and the request-queue sender for retries) now, not on the first reply:
        a worker that cannot publish results must not take requests."""
        entities = [(CHECK_SEND_REPLY, self.settings.reply_queue)]
        if self.settings.can_reschedule and self.settings.request_queue:
            entities.append((CHECK_SCHEDULE, self.settings.request_queue))
        for check, entity in entities:
            try:
                self._sender(entity)
            except Exception as exc:
                self._servicebus_fault(check, entity, exc)
                log.warning("sender_open_failed", entity=entity, error=redact(f"{type(exc).__name__}: {exc}"))
                self._drop_sender(entity)
                return False
        return True

    def _servicebus_fault(self, check: str, entity: str, exc: BaseException) -> None:
        cause = servicebus_fault_cause(exc)
        if cause is not None:
            self._faults.report(check, str(cause), describe_servicebus_fault(cause, entity, exc))

    # ---- configuration faults: held messages -------------------------------------------------------------
    def _hold(self, rec: InFlight, disp: Disposition) -> None:
        """Keep the message (its lock renewed) and hold intake: the fault is the deployment's, not the request's."""
        self._held.append(rec.key)
        rec.probe = False
        self._breaker.hold(disp.reason or "configuration", disp.description or "")
        log.info("request_held", message_id=rec.meta.message_id, attempt=rec.meta.attempt, cause=disp.reason)

    def _resume_held(self) -> bool:
        """Process held messages again: one as the half-open probe, all once the breaker is closed."""
        probe = self._breaker.state is BreakerState.HALF_OPEN
        count = self._breaker.allowance(len(self._held))
        if count <= 0:
            return False
        resumed, self._held = self._held[:count], self._held[count:]
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
        held, self._held = self._held, []
        for key in held:
            rec = self._inflight.get(key)
            if rec is not None:
                self._abandon(rec, why)

    def _receive(self, count: int, *, probe: bool) -> None:
        wait = self.settings.busy_receive_wait if self._inflight else self.settings.idle_receive_wait
        try:
            messages = self._receiver.receive_messages(max_message_count=count, max_wait_time=wait)
        except LOCK_LOST_ERRORS as exc:
            if probe:
                self._breaker.record_neutral()
            log.warning("session_lock_lost", receiver=self.name, error=redact(str(exc)))
            self._lose_all("session lock lost")
            self._release_session()
            return
        except ServiceBusError as exc:
            if probe:
                self._breaker.record_neutral()
            self._health.set_connected(self.name, False)
            log.warning("receive_failed", receiver=self.name, error=redact(f"{type(exc).__name__}: {exc}"))
            # messages received on this link can no longer be settled through it: their redelivery takes over
            self._lose_all("receiver link failed")
            self._reset_receiver()
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
                self._dead_letter_unreadable(message, exc)
                continue
            rec.probe = probe and dispatched == 0
            dispatched += 1
            self._dispatch(rec, self)
        if probe and messages and not dispatched:
            self._breaker.record_neutral()
        self._metrics.in_flight.set(self._total_inflight())

    def _track(self, message: Any, now: float) -> InFlight:
        wall = utcnow()
        if self.settings.sessions:
            lock_duration = self._session_lock_duration or 30.0
            expires = self._session_lock_until or now + lock_duration
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
            entity=self.settings.entity,
            message_id=rec.meta.message_id,
            delivery_count=rec.meta.delivery_count,
            attempt=rec.meta.attempt,
        )
        self._inflight[rec.key] = rec
        if rec.meta.enqueued_time is not None:
            self._metrics.message_age.observe(max(0.0, (wall - rec.meta.enqueued_time).total_seconds()))
        return rec

    def _observe_end_to_end(self, rec: InFlight, status: str) -> None:
        """Enqueued (broker time) -> settled, for the message as delivered (a retry's copy counts from its own
        enqueue)."""
        if rec.meta.enqueued_time is not None:
            elapsed = (utcnow() - rec.meta.enqueued_time).total_seconds()
            self._metrics.end_to_end.labels(status=status).observe(max(0.0, elapsed))

    def _dead_letter_unreadable(self, message: Any, exc: Exception) -> None:
        """A message whose properties or body cannot even be read: dead-letter it (no result can be built)."""
        message_id = redact(str(getattr(message, "message_id", None)))
        what = redact(f"{type(exc).__name__}: {exc}")
        log.error("message_unreadable", message_id=message_id, error=what)
        try:
            self._receiver.dead_letter_message(
                message,
                reason="InvalidRequest",
                error_description=clip(f"message: unreadable Service Bus message ({what})", MAX_DESCRIPTION),
            )
            self._metrics.dead_lettered.labels(reason="InvalidRequest").inc()
        except Exception as settle_exc:  # its lock expires: the redelivery (delivery count) takes over
            log.warning("settle_failed", message_id=message_id, error=redact(f"{type(settle_exc).__name__}"))

    def _total_inflight(self) -> int:
        return len(self._inflight)

    # ---- lock renewal ------------------------------------------------------------------------------------
    def _renew_locks(self) -> None:
        if self._receiver is None:
            return
        now = self._clock()
        cap = self.settings.max_lock_renewal_seconds
        if self.settings.sessions:
            self._renew_session(now)
            return
        for rec in list(self._inflight.values()):
            remaining = rec.lock_expires_mono - now
            if remaining > rec.lock_duration / 2:
                continue
            if now - rec.received_mono >= cap:
                if remaining <= 0:
                    self._lose(rec, f"lock renewal cap of {cap:.0f}s reached")
                continue
            try:
                locked_until = self._receiver.renew_message_lock(rec.message)
            except LOCK_LOST_ERRORS as exc:
                self._lose(rec, redact(str(exc)))
                continue
            except (ServiceBusError, MessageAlreadySettled, ValueError) as exc:
                if remaining <= 0:
                    self._lose(rec, redact(f"{type(exc).__name__}: {exc}"))
                else:
                    log.warning("lock_renew_failed", message_id=rec.meta.message_id, error=redact(str(exc)))
                continue
            rec.renewals += 1
            self._metrics.lock_renewals.inc()
            rec.lock_expires_mono = now + max(0.0, (locked_until - utcnow()).total_seconds())

    def _set_session_lock(self, locked_until: dt.datetime | None) -> None:
        now = self._clock()
        remaining = (locked_until - utcnow()).total_seconds() if locked_until else 30.0
        if not self._session_lock_duration:
            self._session_lock_duration = max(remaining, 0.5)
        self._session_lock_until = now + remaining
        for rec in self._inflight.values():
            rec.lock_expires_mono = self._session_lock_until

    def _renew_session(self, now: float) -> None:
        if self._receiver is None or self._session_id is None:
            return
        remaining = self._session_lock_until - now
        if remaining > self._session_lock_duration / 2:
            return
        if self._inflight and now - min(r.received_mono for r in self._inflight.values()) >= (
            self.settings.max_lock_renewal_seconds
        ):
            return
        try:
            locked_until = self._receiver.session.renew_lock()
        except Exception as exc:
            log.warning("session_lock_lost", session_id=self._session_id, error=redact(str(exc)))
            self._lose_all("session lock lost")
            self._release_session()
            return
        self._metrics.lock_renewals.inc()
        self._set_session_lock(locked_until)

    def _session_idle(self) -> bool:
        if self._inflight or self._session_id is None:
            return False
        return self._clock() - self._last_message_at >= self.settings.session_idle_seconds

    def _release_session(self) -> None:
        if self._session_id is not None:
            log.info("session_released", receiver=self.name, session_id=self._session_id)
        self._reset_receiver()

    def _reset_receiver(self) -> None:
        receiver, self._receiver = self._receiver, None
        self._session_id = None
        self._session_lock_duration = 0.0
        if receiver is not None:
            try:
                receiver.close()
            except Exception:
                log.debug("receiver_close_failed", exc_info=True)

    # ---- lost, abandoned -------------------------------------------------------------------------------
    def _lose(self, rec: InFlight, why: str) -> None:
        """The lock is gone: stop the work, publish nothing, let the redelivery take over."""
        rec.cancel.set()
        if self._inflight.pop(rec.key, None) is None:
            return
        self._abandon_at.pop(rec.key, None)
        if rec.probe:
            self._breaker.record_neutral()
        self._metrics.locks_lost.inc()
        self._metrics.in_flight.set(self._total_inflight())
        log.warning("lock_lost", message_id=rec.meta.message_id, attempt=rec.meta.attempt, reason=why)
        tracing.message_finished(rec.trace, "lock_lost", why)

    def _lose_all(self, why: str) -> None:
        for rec in list(self._inflight.values()):
            self._lose(rec, why)

    def _abandon(self, rec: InFlight, why: str) -> None:
        rec.cancel.set()
        if self._inflight.pop(rec.key, None) is None:
            return
        self._abandon_at.pop(rec.key, None)
        if rec.probe:
            self._breaker.record_neutral()
        try:
            with tracing.settle_span(rec.trace, "abandon"):
                self._receiver.abandon_message(rec.message)
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
        for rec, disp in batch:
            if rec.key not in self._inflight or rec.key in self._abandon_at:
                continue  # lost or abandoned meanwhile: publish nothing
            if disp.action is Settle.HOLD:
                self._hold(rec, disp)
                continue
            self._record_breaker(rec, disp)
            if disp.action is Settle.RETRY:
                self._retry(rec, disp)
            elif disp.result is not None:
                to_reply.append((rec, disp))
            else:
                self._settle(rec, disp)
        for rec, disp in self._send_replies(to_reply):
            self._settle(rec, disp)
        self._metrics.in_flight.set(self._total_inflight())

    def _record_breaker(self, rec: InFlight, disp: Disposition) -> None:
        if disp.service_ok is True:
            self._breaker.record_success()
        elif disp.service_ok is False:
            self._breaker.record_failure()
        elif rec.probe:
            self._breaker.record_neutral()

    def _sender(self, entity: str) -> Any:
        sender = self._senders.get(entity)
        if sender is None:
            sender = self.client.get_queue_sender(entity)
            sender.__enter__()
            self._senders[entity] = sender
        return sender

    def _drop_sender(self, entity: str) -> None:
        sender = self._senders.pop(entity, None)
        if sender is not None:
            try:
                sender.close()
            except Exception:
                log.debug("sender_close_failed", exc_info=True)

    def _send_replies(self, items: list[tuple[InFlight, Disposition]]) -> list[tuple[InFlight, Disposition]]:
        """Publish the results; return the items whose reply is durably sent (only those may be settled)."""
        groups: dict[tuple[str, str | None], list[tuple[InFlight, Disposition, ServiceBusMessage]]] = {}
        sizes: dict[int, int] = {}
        sends: dict[int, tracing.SpanHandle] = {}  # rec.key -> its ``send`` span (worker.tracing.reply_span)
        for rec, disp in items:
            dest = self.settings.reply_destination(rec.meta.reply_to)
            send = sends[rec.key] = tracing.reply_span(rec.trace, dest, rec.meta.application_properties)
            try:
                body, shortened = result_body(disp.result, self.settings.max_result_bytes)
                if shortened:
                    log.warning(
                        "result_shortened",
                        message_id=rec.meta.message_id,
                        limit=self.settings.max_result_bytes,
                        size=len(body),
                        what=shortened,
                    )
                reply = build_reply(
                    body, rec.meta, status=getattr(disp.result, "status", None), trace_properties=send.properties
                )
                sizes[rec.key] = len(body)
            except Exception as exc:  # never on the owner thread's way: dead-letter it with the reason instead
                what = redact(f"{type(exc).__name__}: {exc}")
                log.error("reply_unbuildable", message_id=rec.meta.message_id, error=what)
                send.end(what)
                self._settle(
                    rec,
                    Disposition(
                        action=Settle.DEAD_LETTER,
                        reason="ProcessingError",
                        description=f"the result message could not be built: {what}; "
                        f"outcome was {disp.reason or disp.action}: {disp.description or ''}",
                    ),
                )
                continue
            groups.setdefault((dest, reply.session_id), []).append((rec, disp, reply))
        sent: list[tuple[InFlight, Disposition]] = []
        batches = [
            (dest, chunk)
            for (dest, _session), members in groups.items()
            for chunk in _size_chunks(members, [sizes[rec.key] for rec, _, _ in members], self._batch_limit())
        ]
        for dest, members in batches:
            try:
                self._sender(dest).send_messages([m for _, _, m in members])
                sent.extend((rec, disp) for rec, disp, _ in members)
                continue
            except Exception as exc:
                log.warning("reply_batch_failed", destination=dest, count=len(members), error=redact(str(exc)))
                self._drop_sender(dest)
            for rec, disp, message in members:  # one by one, so one bad reply does not hold the others
                try:
                    self._sender(dest).send_messages(message)
                    sent.append((rec, disp))
                except Exception as exc:
                    log.error(
                        "reply_failed",
                        message_id=rec.meta.message_id,
                        destination=dest,
                        error=redact(f"{type(exc).__name__}: {exc}"),
                    )
                    self._drop_sender(dest)
                    sends[rec.key].end("reply could not be sent")
                    self._abandon(rec, "reply could not be sent")
        for rec, disp in sent:
            sends[rec.key].end()
            self._metrics.results.labels(status=str(getattr(disp.result, "status", "unknown"))).inc()
        return sent

    def _batch_limit(self) -> int:
        """Bytes per reply batch: the result size limit plus the room it keeps under 256 KiB."""
        return max(self.settings.max_result_bytes, 256 * 1024 - 4 * REPLY_OVERHEAD_BYTES)

    def _settle(self, rec: InFlight, disp: Disposition) -> None:
        with tracing.settle_span(rec.trace, str(disp.action)):
            self._settle_now(rec, disp)
        tracing.message_finished(rec.trace, str(getattr(disp.result, "status", None) or disp.action))

    def _settle_now(self, rec: InFlight, disp: Disposition) -> None:
        try:
            if disp.action is Settle.DEAD_LETTER:
                reason = clip(disp.reason or "ProcessingError", MAX_REASON)
                self._receiver.dead_letter_message(
                    rec.message,
                    reason=reason,
                    error_description=clip(redact(disp.description or reason or ""), MAX_DESCRIPTION),
                )
                self._metrics.dead_lettered.labels(reason=reason or "unknown").inc()
                self._observe_end_to_end(rec, "dead_lettered")
                log.warning(
                    "request_dead_lettered", message_id=rec.meta.message_id, reason=reason, attempt=rec.meta.attempt
                )
            else:
                self._receiver.complete_message(rec.message)
                self._observe_end_to_end(rec, str(getattr(disp.result, "status", "unknown")))
                log.info(
                    "request_completed",
                    message_id=rec.meta.message_id,
                    correlation_id=rec.meta.correlation_id or rec.meta.message_id,
                    attempt=rec.meta.attempt,
                    status=getattr(disp.result, "status", None),
                    duration_ms=round((self._clock() - rec.received_mono) * 1000, 1),
                )
        except LOCK_LOST_ERRORS as exc:
            # the reply (if any) went out with a deterministic id: the redelivery's reply is dropped as a duplicate
            self._metrics.locks_lost.inc()
            log.warning("settle_lock_lost", message_id=rec.meta.message_id, error=redact(str(exc)))
        except Exception as exc:
            log.error("settle_failed", message_id=rec.meta.message_id, error=redact(f"{type(exc).__name__}: {exc}"))
        finally:
            self._inflight.pop(rec.key, None)
            self._last_message_at = self._clock()  # a session is idle from its last activity, not its last receive

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
                self._sender(s.request_queue or "").schedule_messages(copy, at)
        except Exception as exc:
            log.warning("reschedule_failed", message_id=rec.meta.message_id, error=redact(str(exc)))
            self._drop_sender(s.request_queue or "")
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
        for entity in list(self._senders):
            self._drop_sender(entity)
        self._reset_receiver()
