"""Retry policy pieces shared by the GeoCatalog client: backoff with full jitter and Retry-After parsing.

Why not urllib3's ``Retry`` (mounted on the HTTPAdapter) or tenacity? Both would re-send a request inside the
transport without the caller seeing each attempt, but every attempt must first pass the process's
``RateLimiter`` and feed its AIMD state (a 429 cuts the rate, a success raises it), must honour a cancellation
event while it sleeps, and must stop at a total-time bound that the runtime sets per message. The loop itself
is a dozen lines in ``worker.adapters.geocatalog.client``; what is subtle is reused from urllib3:
``Retry.parse_retry_after``
parses ``Retry-After`` as delta-seconds or an HTTP-date (RFC 9110). The Azure ``retry-after-ms`` and
``x-ms-retry-after-ms`` headers (milliseconds) are read here first, as azure-core does.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

from worker.domain.retry_policy import backoff

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds and backoff of the GeoCatalog client's retries.

    ``max_attempts`` counts every HTTP attempt (the first one included); ``total_timeout`` bounds the time
    spent on one logical call, waits included. A ``Retry-After`` longer than ``max_retry_after`` or than the
    remaining time is not slept through: the call fails with a transient error carrying ``retry_after``, so
    the runtime can reschedule the message instead of holding a thread.
    """

    max_attempts: int = 6
    total_timeout: float = 60.0
    backoff_base: float = 0.5
    backoff_max: float = 20.0
    max_retry_after: float = 30.0
    statuses: frozenset[int] = field(default=RETRYABLE_STATUSES)

    def backoff(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Full-jitter exponential backoff before retry ``retry_number`` (1 = first retry): the one formula,
        ``worker.domain.retry_policy.backoff``, with ``jitter=1``."""
        return backoff(max(1, retry_number), base=self.backoff_base, cap=self.backoff_max, jitter=1.0, rng=rng)


_PARSER = Retry(total=0, retry_after_max=10**9)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait according to ``retry-after-ms`` / ``x-ms-retry-after-ms`` / ``Retry-After``.

    ``headers`` must be case-insensitive (``requests``' headers are). Returns None when there is no usable
    header; an invalid value is ignored rather than failing the call. Never negative.
    """
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = headers.get(name)
        if value:
            try:
                ms = float(value.strip())
            except ValueError:
                continue
            if ms == ms and ms >= 0:  # not NaN
                return ms / 1000.0
    value = headers.get("retry-after")
    if value:
        try:  # delta-seconds; a fractional value is not RFC-valid but some proxies send it
            seconds = float(value.strip())
            if seconds == seconds and seconds != float("inf"):
                return max(0.0, seconds)
        except ValueError:
            pass
        try:
            return float(_PARSER.parse_retry_after(value))
        except (InvalidHeader, ValueError, OverflowError, TypeError):
            return None
    return None
