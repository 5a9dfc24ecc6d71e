"""Client-side rate limiter for this process's share of the GeoCatalog API budget (AIMD token bucket).

GeoCatalog documents about 50 STAC API calls per second per subscription, shared by every pod. Each process
gets a configured share (``rate`` calls/s). The limiter is a token bucket whose refill rate follows AIMD:

- multiplicative decrease: a 429 cuts the current rate by ``decrease_factor`` (default x0.5), never below
  ``min_rate``; several 429s arriving together (one burst of concurrent calls) count as one cut, because cuts
  are at most one per ``decrease_cooldown`` seconds. A ``Retry-After`` on the 429 also pauses the whole bucket,
  so every thread of the process waits, not only the one that got the 429.
- additive increase: while calls succeed, the rate rises by ``increase_step`` calls/s at most once per
  ``increase_interval`` seconds, back up to the configured share (never above it).

The bucket works by reservation: ``acquire()`` takes a token (the count may go negative, which is the queue of
waiters) and sleeps until its slot comes, so waiting threads are served in order without a thundering herd.
A cancelled wait gives its token back. Every GeoCatalog HTTP attempt, retries included, calls ``acquire()``
and then reports ``on_success()`` or ``on_throttle()`` (see ``worker.adapters.geocatalog.client``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from worker.domain.errors import Cancelled


class RateLimiter:
    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        min_rate: float | None = None,
        decrease_factor: float = 0.5,
        decrease_cooldown: float = 1.0,
        increase_step: float | None = None,
        increase_interval: float = 1.0,
        max_pause: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 calls/s, got {rate}")
        if not 0 < decrease_factor < 1:
            raise ValueError(f"decrease_factor must be in (0, 1), got {decrease_factor}")
        self.max_rate = float(rate)
        self.min_rate = float(min_rate) if min_rate is not None else max(self.max_rate * 0.05, 0.1)
        self.min_rate = min(self.min_rate, self.max_rate)
        self.burst = float(burst) if burst is not None else max(1.0, self.max_rate * 0.5)
        self.decrease_factor = decrease_factor
        self.decrease_cooldown = decrease_cooldown
        self.increase_step = float(increase_step) if increase_step is not None else max(self.max_rate * 0.1, 0.05)
        self.increase_interval = increase_interval
        self.max_pause = max_pause
        self._clock = clock
        self._lock = threading.Lock()
        self._rate = self.max_rate
        self._tokens = self.burst
        self._last = clock()  # refill reference time; may lie in the future during a pause
        self._last_cut = float("-inf")
        self._last_increase = clock()
        self.throttle_count = 0

    @property
    def rate(self) -> float:
        """The current refill rate in calls per second."""
        with self._lock:
            return self._rate

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self._rate)
            self._last = now

    def reserve(self) -> float:
        """Take one token; returns how long (seconds) the caller must wait before its call. Non-blocking."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens -= 1.0
            wait = max(0.0, self._last - now)  # a pause set by Retry-After
            if self._tokens < 0:
                wait += -self._tokens / self._rate
            return wait

    def delay(self) -> float:
        """How long a call reserved now would wait (seconds), without reserving. For callers that can use the
        wait productively, e.g. the batcher keeps a batch open instead of queueing its POST."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            wait = max(0.0, self._last - now)
            if self._tokens < 1.0:
                wait += (1.0 - self._tokens) / self._rate
            return wait

    def refund(self) -> None:
        """Give back a reserved token that was not used (a cancelled wait)."""
        with self._lock:
            self._tokens = min(self.burst, self._tokens + 1.0)

    def acquire(self, cancel: threading.Event | None = None) -> float:
        """Block until this caller may make one call; returns the seconds waited.

        Raises ``Cancelled`` (and returns the token) if ``cancel`` is set before the slot comes.
        """
        wait = self.reserve()
        if wait <= 0:
            if cancel is not None and cancel.is_set():
                self.refund()
                raise Cancelled("cancelled while waiting for the GeoCatalog rate limiter")
            return 0.0
        if cancel is None:
            time.sleep(wait)
        elif cancel.wait(wait):
            self.refund()
            raise Cancelled("cancelled while waiting for the GeoCatalog rate limiter")
        return wait

    def on_success(self) -> None:
        """A call went through without throttling: additive increase (at most once per interval)."""
        with self._lock:
            if self._rate >= self.max_rate:
                return
            now = self._clock()
            if now - self._last_increase >= self.increase_interval:
                self._rate = min(self.max_rate, self._rate + self.increase_step)
                self._last_increase = now

    def on_throttle(self, retry_after: float | None = None) -> None:
        """A call got 429: multiplicative decrease, and pause the bucket for ``retry_after`` seconds if given."""
        with self._lock:
            now = self._clock()
            self.throttle_count += 1
            self._refill(now)
            if now - self._last_cut >= self.decrease_cooldown:
                self._rate = max(self.min_rate, self._rate * self.decrease_factor)
                self._last_cut = now
            # The next increase comes only after a full interval of successes.
            self._last_increase = now
            if retry_after is not None and retry_after > 0:
                pause_end = now + min(retry_after, self.max_pause)
                if pause_end > self._last:
                    self._tokens = min(self._tokens, 0.0)
                    self._last = pause_end
