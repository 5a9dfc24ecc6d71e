"""Building processor settings in tests with the retry knobs spelled as the CLI spells them."""

from __future__ import annotations

from worker.domain.retry_policy import RequestRetryPolicy
from worker.processing.processor import ProcessingSettings


def processing_settings(
    *, max_attempts: int = 5, retry_base: float = 10.0, retry_max: float = 600.0, **kw: object
) -> ProcessingSettings:
    """``ProcessingSettings`` whose ``RequestRetryPolicy`` has these attempts and backoff bounds."""
    retry = RequestRetryPolicy(max_attempts=max_attempts, base_seconds=retry_base, max_seconds=retry_max)
    return ProcessingSettings(retry=retry, **kw)  # type: ignore[arg-type]
