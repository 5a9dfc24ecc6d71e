"""The one retry policy: attempt counting, the one backoff formula, exhaustion.

Two levels retry, with the same formula:

- a **request** (a Service Bus message) that failed transiently is tried again later: rescheduled as a copy
  with ``gcw-attempt`` + 1 on a plain queue, or abandoned after the backoff on a session entity or a topic
  subscription (the broker's ``delivery_count`` then counts the attempts). ``RequestRetryPolicy`` decides,
  for every input kind alike, which attempt this is, whether it is the last one, and how long to wait;
- one **GeoCatalog call** is retried inside the client (``worker.adapters.geocatalog.retry.RetryPolicy``),
  with ``backoff`` and full jitter.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

__all__ = ["AttemptMeta", "RequestRetryPolicy", "attempt_number", "backoff"]


def backoff(
    number: int,
    *,
    base: float,
    cap: float,
    jitter: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry ``number`` (1 = the first retry): ``min(cap, base * 2**(number-1))``,
    shortened by up to ``jitter`` of itself at random (0: exact; 1: "full jitter", anywhere in [0, delay]),
    never shorter than the server's ``retry_after`` (itself capped at ``cap``)."""
    if number < 1:
        raise ValueError("retry numbers start at 1")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError("jitter is a fraction in [0, 1]")
    delay = min(cap, base * (2 ** min(number - 1, 32)))
    if jitter:
        delay -= delay * jitter * (rng or random).random()
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return max(0.0, delay)


class AttemptMeta(Protocol):
    """What a received message says about its attempts (``worker.domain.contract.MessageMeta``)."""

    @property
    def attempt(self) -> int: ...  # 1 + the gcw-attempt application property (reschedules)

    @property
    def delivery_count(self) -> int: ...  # the broker's count (abandons, lost locks)


def attempt_number(meta: AttemptMeta) -> int:
    """Which attempt this delivery is: reschedules count in ``gcw-attempt``, abandons and lost locks in the
    broker's ``delivery_count``; the larger one is the truth for queues, sessions and topics alike."""
    return max(meta.attempt, meta.delivery_count or 0, 1)


@dataclass(frozen=True)
class RequestRetryPolicy:
    """When a transiently failed request is tried again, and when it is given up (``RetriesExhausted``)."""

    max_attempts: int = 5
    base_seconds: float = 5.0
    max_seconds: float = 300.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_seconds < 0 or self.max_seconds < self.base_seconds:
            raise ValueError("need 0 <= base_seconds <= max_seconds")

    def attempt(self, meta: AttemptMeta) -> int:
        return attempt_number(meta)

    def is_retry(self, meta: AttemptMeta) -> bool:
        """An earlier attempt may have done part of the work (``trust_identical`` in the batcher)."""
        return self.attempt(meta) > 1

    def exhausted(self, meta: AttemptMeta) -> bool:
        """This is the last allowed attempt: a transient failure now is answered ``failed``."""
        return self.attempt(meta) >= self.max_attempts

    def delay(self, meta: AttemptMeta, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds before the next attempt after this one failed transiently."""
        return backoff(
            self.attempt(meta),
            base=self.base_seconds,
            cap=self.max_seconds,
            jitter=self.jitter,
            retry_after=retry_after,
            rng=rng,
        )
