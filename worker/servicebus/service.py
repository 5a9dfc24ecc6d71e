"""The consumer service: receiver-owner threads + a worker thread pool + drain on SIGTERM/SIGINT.

``Consumer(client, settings, processor, limits, metrics, health).run(stop_event)`` blocks until ``stop_event``
is set, then drains: no new messages, readiness false, in-flight requests get ``drain_seconds`` to finish,
what is left is abandoned (redelivered at once).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import structlog
from azure.servicebus import ServiceBusClient

from worker import tracing
from worker.domain.contract import Limits
from worker.observability.health import HealthState
from worker.observability.metrics import Metrics
from worker.servicebus.breaker import BreakerState, CircuitBreaker
from worker.servicebus.faults import CHECK_GEOCATALOG, ConfigFaults
from worker.servicebus.handling import ProcessorLike, handle
from worker.servicebus.inflight import InFlight
from worker.servicebus.outcome import Disposition, Settle
from worker.servicebus.owner import ReceiverOwner
from worker.servicebus.preflight import CheckResult
from worker.servicebus.settings import ConsumerSettings

log = structlog.get_logger(__name__)


class Consumer:
    def __init__(
        self,
        client: ServiceBusClient,
        settings: ConsumerSettings,
        processor: ProcessorLike,
        *,
        limits: Limits,
        metrics: Metrics,
        health: HealthState,
        direct_client: ServiceBusClient | None = None,
    ) -> None:
        """``direct_client``: a client built with ``retry_total=0``, used to accept sessions and for the reply and
        reschedule senders (see ``wiring.build_servicebus_clients``)."""
        self.client = client
        self.settings = settings
        self.processor = processor
        self.limits = limits
        self.metrics = metrics
        self.health = health
        self.faults = ConfigFaults(health, metrics)
        self.breaker = CircuitBreaker(
            threshold=settings.breaker_threshold,
            open_seconds=settings.breaker_open_seconds,
            max_open_seconds=settings.breaker_max_open_seconds,
            on_change=self._breaker_changed,
            on_fault=self._fault_changed,
        )
        self._probe: Callable[[], CheckResult] | None = None  # re-checks a start-up fault that holds intake
        self._probe_at = 0.0
        self._probe_every = settings.breaker_open_seconds
        self._pool = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="gcw-worker")
        if settings.sessions:
            n = max(1, min(settings.max_sessions, settings.concurrency))
            capacities = [1] * n
        else:
            capacities = [settings.concurrency]
        self.owners = [
            ReceiverOwner(
                f"gcw-receiver-{i}",
                client,
                settings,
                dispatch=self._dispatch,
                breaker=self.breaker,
                metrics=metrics,
                health=health,
                capacity=capacity,
                faults=self.faults,
                receiver_client=direct_client if settings.sessions else None,
                sender_client=direct_client,
            )
            for i, capacity in enumerate(capacities)
        ]

    def _breaker_changed(self, state: BreakerState) -> None:
        self.metrics.breaker_open.set(0 if state is BreakerState.CLOSED else 1)
        self.health.details["circuit_breaker"] = str(state)
        log.warning("circuit_breaker", state=str(state))

    def _fault_changed(self, cause: str | None, detail: str) -> None:
        if cause is None:
            self.faults.clear(CHECK_GEOCATALOG)
        else:
            self.faults.report(CHECK_GEOCATALOG, cause, detail)

    def hold_for(self, failed: CheckResult, probe: Callable[[], CheckResult]) -> None:
        """A start-up check found a configuration fault: hold intake, re-run ``probe`` with backoff until it passes."""
        self.breaker.hold(str(failed.cause), failed.detail, probe_with_requests=False)
        self._probe = probe
        self._probe_at = time.monotonic() + self._probe_every

    def _reprobe(self) -> None:
        if self._probe is None or time.monotonic() < self._probe_at:
            return
        result = self._probe()
        if result.ok:
            self._probe = None
            self.breaker.record_success()  # clears the fault: intake resumes
            return
        self.breaker.hold(str(result.cause or self.breaker.fault), result.detail, probe_with_requests=False)
        self._probe_every = min(self.settings.breaker_max_open_seconds, self._probe_every * 2)
        self._probe_at = time.monotonic() + self._probe_every

    def _dispatch(self, rec: InFlight, owner: ReceiverOwner) -> None:
        self._pool.submit(self._work, rec, owner)

    def _work(self, rec: InFlight, owner: ReceiverOwner) -> None:
        with tracing.process_span(rec.trace) as span:
            try:
                disposition = handle(rec, self.processor, self.limits)
            except BaseException as exc:  # handle() never raises; this is the last line of defence
                log.exception("worker_thread_error")
                disposition = Disposition(
                    action=Settle.DEAD_LETTER, reason="ProcessingError", description=type(exc).__name__
                )
            span.outcome(
                action=str(disposition.action),
                status=getattr(disposition.result, "status", None),
                reason=disposition.reason,
            )
        if rec.cancel.is_set():
            log.info("result_discarded", message_id=rec.meta.message_id, reason="lock lost or abandoned")
            return
        owner.finish(rec, disposition)

    def start(self) -> None:
        self.health.details["circuit_breaker"] = str(self.breaker.state)
        for owner in self.owners:
            self.health.beat(owner.name)
            owner.start()
        log.info(
            "consumer_started",
            entity=self.settings.entity,
            reply_queue=self.settings.reply_queue,
            concurrency=self.settings.concurrency,
            receivers=len(self.owners),
            sessions=self.settings.sessions,
        )

    def drain(self) -> None:
        """Stop receiving, finish or abandon in-flight work, close the links, stop the pool."""
        self.health.set_draining()
        deadline = time.monotonic() + self.settings.drain_seconds
        in_flight = sum(o.in_flight for o in self.owners)
        log.info("drain_started", in_flight=in_flight, drain_seconds=self.settings.drain_seconds)
        for owner in self.owners:
            owner.begin_drain(deadline)
        for owner in self.owners:
            owner.join(timeout=max(0.0, deadline - time.monotonic()) + 30.0)
        self._pool.shutdown(wait=False, cancel_futures=True)
        log.info("drain_finished", still_running=[o.name for o in self.owners if o.is_alive()])

    def burst_done(self) -> bool:
        """Burst mode: every receiver has found the entity empty, with nothing in flight, for ``burst_seconds``."""
        burst = self.settings.burst_seconds
        return burst is not None and all(o.empty_for() >= burst for o in self.owners)

    def run(self, stop: threading.Event) -> bool:
        """Consume until ``stop`` is set (or, in burst mode, the entity stays empty), then drain. False when a
        receiver loop died on its own."""
        self.start()
        clean = True
        try:
            while not stop.wait(0.5):
                self._reprobe()
                dead = [o.name for o in self.owners if not o.is_alive()]
                if dead:
                    log.error("receiver_loop_died", receivers=dead)
                    clean = False
                    break
                if self.burst_done():
                    log.info("burst_finished", entity=self.settings.entity, empty_seconds=self.settings.burst_seconds)
                    break
        finally:
            self.drain()
        return clean
