"""structlog JSON logging with secret redaction.

``configure_logging()`` is called once by a command at start (never at import). Every event goes through
``redact_event``: each value (nested dicts and lists included) is scanned by ``worker.domain.secrets.redact`` and
``Secret`` objects render as ``***``, so a SAS token, bearer token or connection-string key that slips into a
log call never reaches the output. Records from the standard library (the azure SDK, urllib3) are rendered
by the same processors, so they are JSON and redacted too.

Context keys bound by the runtime while a message is processed (``request_context``): ``message_id``,
``correlation_id``, ``collection``, ``item_ids``, ``attempt``, ``action``, ``event_id``; while tracing is on
(``worker.tracing``), ``trace_id`` and ``span_id`` of the current span. ``structlog.contextvars`` bindings are
merged as well. One context variable holds a request's whole context: binding it costs one ``ContextVar.set``
per request, not one per key (structlog's ``bind_contextvars``), and nothing at all is rendered below the level.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
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


_REQUEST_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("gcw_request_context", default=None)


@contextmanager
def request_context(**fields: Any) -> Iterator[dict[str, Any]]:
    """Add ``fields`` to every log line written in this context until the block ends (nested blocks add to the
    outer one's fields). The yielded dict is the context: keys set on it later are logged too."""
    outer = _REQUEST_CONTEXT.get()
    context = {**outer, **fields} if outer else fields
    token = _REQUEST_CONTEXT.set(context)
    try:
        yield context
    finally:
        _REQUEST_CONTEXT.reset(token)


def merge_request_context(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the ``request_context`` fields, unless the call itself sets them."""
    context = _REQUEST_CONTEXT.get()
    if context:
        for key, value in context.items():
            event_dict.setdefault(key, value)
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        merge_request_context,
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
