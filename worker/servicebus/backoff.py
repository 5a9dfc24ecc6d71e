"""Delays between attempts of a request that failed transiently."""

from __future__ import annotations

import random


def retry_delay(
    attempt: int,
    *,
    base: float = 5.0,
    cap: float = 300.0,
    retry_after: float | None = None,
    jitter: float = 0.2,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before attempt ``attempt + 1`` of a request whose attempt ``attempt`` failed.

    Exponential (``base * 2**(attempt-1)``) capped at ``cap``, never shorter than the server's
    ``retry_after``, with +/- ``jitter`` (a fraction) so that many rescheduled requests do not return together.
    """
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    delay = min(cap, base * (2 ** min(attempt - 1, 32)))
    if jitter:
        spread = delay * jitter
        delay += (rng or random).uniform(-spread, spread)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return max(0.0, delay)
