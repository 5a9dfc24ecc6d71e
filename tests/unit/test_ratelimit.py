"""AIMD token bucket maths (fake clock) and blocking/cancel behaviour of ``RateLimiter``."""

from __future__ import annotations

import threading
import time

import pytest

from worker.adapters.ratelimit import RateLimiter
from worker.domain.errors import Cancelled


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def test_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(0)
    with pytest.raises(ValueError, match="decrease_factor"):
        RateLimiter(10, decrease_factor=1.5)


def test_burst_then_steady_rate() -> None:
    clock = FakeClock()
    rl = RateLimiter(10, burst=5, clock=clock)
    waits = [rl.reserve() for _ in range(5)]
    assert waits == [0.0] * 5
    # The 6th..8th calls queue behind each other at 1/rate spacing.
    assert rl.reserve() == pytest.approx(0.1)
    assert rl.reserve() == pytest.approx(0.2)
    assert rl.reserve() == pytest.approx(0.3)
    clock.advance(0.3)
    assert rl.reserve() == pytest.approx(0.1)


def test_bucket_never_holds_more_than_burst() -> None:
    clock = FakeClock()
    rl = RateLimiter(10, burst=3, clock=clock)
    clock.advance(3600)
    assert [rl.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.reserve() == pytest.approx(0.1)


def test_multiplicative_decrease_with_floor_and_cooldown() -> None:
    clock = FakeClock()
    rl = RateLimiter(40, min_rate=4, decrease_cooldown=1.0, clock=clock)
    rl.on_throttle()
    assert rl.rate == pytest.approx(20)
    rl.on_throttle()  # same burst of 429s: within the cooldown, no second cut
    assert rl.rate == pytest.approx(20)
    for expected in (10, 5, 4, 4):
        clock.advance(1.0)
        rl.on_throttle()
        assert rl.rate == pytest.approx(expected)
    assert rl.throttle_count == 6


def test_additive_increase_back_to_the_share_never_above() -> None:
    clock = FakeClock()
    rl = RateLimiter(50, increase_step=5, increase_interval=1.0, clock=clock)
    rl.on_throttle()
    assert rl.rate == pytest.approx(25)
    rl.on_success()  # no full interval of success yet
    assert rl.rate == pytest.approx(25)
    rates = []
    for _ in range(8):
        clock.advance(1.0)
        rl.on_success()
        rl.on_success()  # more successes in the same interval do not add more
        rates.append(rl.rate)
    assert rates == pytest.approx([30, 35, 40, 45, 50, 50, 50, 50])


def test_retry_after_pauses_the_whole_bucket() -> None:
    clock = FakeClock()
    rl = RateLimiter(10, burst=10, clock=clock)
    rl.on_throttle(retry_after=2.0)  # rate now 5/s, nothing before t+2
    assert rl.reserve() == pytest.approx(2.0 + 1 / 5)
    assert rl.reserve() == pytest.approx(2.0 + 2 / 5)
    clock.advance(2.0)
    assert rl.reserve() == pytest.approx(3 / 5)


def test_retry_after_capped_by_max_pause() -> None:
    clock = FakeClock()
    rl = RateLimiter(10, burst=1, max_pause=5, clock=clock)
    rl.reserve()
    rl.on_throttle(retry_after=3600)
    assert rl.reserve() <= 5 + 2 / rl.rate + 1e-9


def test_acquire_blocks_to_the_rate_real_clock() -> None:
    rl = RateLimiter(20, burst=1)
    start = time.monotonic()
    for _ in range(5):
        rl.acquire()
    elapsed = time.monotonic() - start
    # 1 from the burst, then 4 at 50 ms spacing: at least ~0.2 s (lower bound only; no upper timing assertion).
    assert elapsed >= 0.18


def test_cancel_interrupts_wait_and_refunds_the_token() -> None:
    clock = FakeClock()
    rl = RateLimiter(1, burst=1, clock=clock)
    rl.reserve()  # bucket empty: next call waits 1 s
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        rl.acquire(cancel)
    # The cancelled reservation was given back: the next caller waits 1 s, not 2 s.
    assert rl.reserve() == pytest.approx(1.0)


class _WatchedEvent(threading.Event):
    """An Event that says when somebody starts waiting on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waited_on = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waited_on.set()
        return super().wait(timeout)


def test_cancel_from_another_thread_wakes_the_waiter() -> None:
    rl = RateLimiter(0.2, burst=1)  # 5 s between calls
    rl.acquire()
    cancel = _WatchedEvent()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            rl.acquire(cancel)
        except Cancelled as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    assert cancel.waited_on.wait(5), "the caller never started waiting"
    cancel.set()
    t.join(timeout=2)
    assert not t.is_alive()
    assert len(errors) == 1
    assert errors[0].kind == "transient"


def test_thread_safety_total_tokens_conserved() -> None:
    clock = FakeClock()
    rl = RateLimiter(100, burst=10, clock=clock)
    waits: list[float] = []
    lock = threading.Lock()

    def run() -> None:
        for _ in range(50):
            w = rl.reserve()
            with lock:
                waits.append(w)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 400 reservations with a frozen clock: 10 free, then one slot every 10 ms, each exactly once.
    assert sorted(waits) == pytest.approx([0.0] * 10 + [i / 100 for i in range(1, 391)])
