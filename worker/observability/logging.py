"""structlog JSON logging with secret redaction.

``configure_logging()`` is called once by a command at start (never at import). Every event goes through
``redact_event``: each value (nested dicts and lists included) is scanned by ``worker.domain.secrets.redact`` and
``Secret`` objects render as ``***``, so a SAS token, bearer token or connection-string key that slips into a
log call never reaches the output. Records from the standard library (the azure SDK, urllib3) are rendered
by the same processors, so they are JSON and redacted too.

Context keys bound by the runtime while a message is processed (``structlog.contextvars``): ``message_id``,
``correlation_id``, ``collection``, ``item_ids``, ``attempt``, ``duration_ms``; while tracing is on
(``worker.tracing``), ``trace_id`` and ``span_id`` of the current span.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from worker.domain.secrets import REDACTED, Secret, redact
from worker.tracing import add_trace_ids

# keys whose values are secrets whatever they look like
_SECRET_KEYS = frozenset({"token", "password", "connection_string", "key", "sas", "authorization", "secret"})


def _scrub(value: Any, depth: int = 0) -> Any:
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if depth > 8:  # too deep to walk: flatten to text, which is still redacted (never the raw value)
        return redact(str(value))
    if isinstance(value, dict):
        return {k: (REDACTED if _secret_key(k) and v else _scrub(v, depth + 1)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v, depth + 1) for v in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    return redact(str(value))


def _secret_key(key: Any) -> bool:
    return isinstance(key, str) and key.lower() in _SECRET_KEYS


def redact_event(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: redact secrets in every value of the event (exception text included)."""
    for key, value in list(event_dict.items()):
        if _secret_key(key) and value:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(value)
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        redact_event,
    ]


def configure_logging(level: str = "INFO", stream: TextIO | None = None, *, sdk_level: str = "WARNING") -> None:
    """JSON lines on ``stream`` (stdout by default) for structlog and standard-library loggers."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING or ERROR")
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        # a call below the level returns at once (a stdlib BoundLogger ran the processor chain to drop it:
        # ~3 µs a call, about a dozen per request; docs/benchmarks.md); filter_by_level above still honours a
        # level set on one standard-library logger
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(default=str),
        ],
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for noisy in ("azure", "uamqp", "urllib3"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.getLevelName(sdk_level.upper())))
