"""The request entity's receiver of one owner thread: opened (accepting a session when the entity has them),
reopened after a failure with backoff, and closed; a Service Bus configuration fault met on the way (a right
missing, an entity not found) is reported per check (``worker.servicebus.faults``) until an open succeeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from azure.servicebus import NEXT_AVAILABLE_SESSION, ServiceBusClient
from azure.servicebus.exceptions import OperationTimeoutError

from worker.domain.secrets import redact
from worker.observability.health import HealthState
from worker.servicebus.faults import (
    CHECK_RECEIVE,
    CHECK_SCHEDULE,
    CHECK_SEND_REPLY,
    ConfigFaults,
    describe_servicebus_fault,
    servicebus_fault_cause,
)
from worker.servicebus.inflight import InFlight
from worker.servicebus.locks import SessionLock
from worker.servicebus.replies import Senders
from worker.servicebus.settings import ConsumerSettings

log = structlog.get_logger(__name__)


def _close_quietly(receiver: Any) -> None:
    """Close a receiver (never raises: this runs on the owner thread)."""
    if receiver is None:
        return
    try:
        receiver.close()
    except Exception:
        log.debug("receiver_close_failed", exc_info=True)


class RequestLink:
    """The receiver (and session) of one owner thread. ``receiver`` is None while closed."""

    def __init__(
        self,
        name: str,
        client: ServiceBusClient,
        settings: ConsumerSettings,
        *,
        senders: Senders,
        health: HealthState,
        faults: ConfigFaults,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.client = client
        self.settings = settings
        self.senders = senders
        self.health = health
        self.faults = faults
        self.clock = clock
        self.receiver: Any = None
        self.session_id: str | None = None
        self.session_lock = SessionLock()
        self.failures = 0

    def open(self, in_flight: Iterable[InFlight]) -> float | None:
        """Open the receiver; None when it is open, else the seconds to wait before trying again."""
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
                receiver = self.client.get_queue_receiver(s.request_queue, **kwargs)
            else:
                receiver = self.client.get_subscription_receiver(s.request_topic, s.request_subscription, **kwargs)
            receiver.__enter__()
        except OperationTimeoutError:
            # no session available right now: normal for session input. Close the receiver all the same (every
            # idle attempt makes one): whatever the SDK left open for it must not wait for the garbage collector.
            _close_quietly(receiver)
            self.health.set_connected(self.name, True)
            return 0.0
        except Exception as exc:
            _close_quietly(receiver)
            self.failures += 1
            self.health.set_connected(self.name, False)
            self.report_fault(CHECK_RECEIVE, s.entity, exc)
            log.warning("receiver_open_failed", receiver=self.name, error=redact(f"{type(exc).__name__}: {exc}"))
            return self._backoff()
        self.receiver = receiver
        if not self._warm_senders():
            self.failures += 1
            self.reset()
            self.health.set_connected(self.name, False)
            return self._backoff()
        self.failures = 0
        self.health.set_connected(self.name, True)
        for check in (CHECK_RECEIVE, CHECK_SEND_REPLY, CHECK_SCHEDULE):
            self.faults.clear(check)
        if s.sessions:
            session = receiver.session
            self.session_id = session.session_id
            self.session_lock.set(session.locked_until_utc, self.clock(), in_flight)
            log.info("session_accepted", receiver=self.name, session_id=self.session_id)
        return None

    def _backoff(self) -> float:
        return min(30.0, 0.5 * 2 ** min(self.failures, 6))

    def _warm_senders(self) -> bool:
        """Open the reply sender (and the request-queue sender for retries) now, not on the first reply:
        a worker that cannot publish results must not take requests."""
        entities = [(CHECK_SEND_REPLY, self.settings.reply_queue)]
        if self.settings.can_reschedule and self.settings.request_queue:
            entities.append((CHECK_SCHEDULE, self.settings.request_queue))
        for check, entity in entities:
            try:
                self.senders.get(entity)
            except Exception as exc:
                self.report_fault(check, entity, exc)
                log.warning("sender_open_failed", entity=entity, error=redact(f"{type(exc).__name__}: {exc}"))
                self.senders.drop(entity)
                return False
        return True

    def report_fault(self, check: str, entity: str, exc: BaseException) -> None:
        cause = servicebus_fault_cause(exc)
        if cause is not None:
            self.faults.report(check, str(cause), describe_servicebus_fault(cause, entity, exc))

    def release_session(self) -> None:
        if self.session_id is not None:
            log.info("session_released", receiver=self.name, session_id=self.session_id)
        self.reset()

    def reset(self) -> None:
        receiver, self.receiver = self.receiver, None
        self.session_id = None
        self.session_lock.reset()
        _close_quietly(receiver)
