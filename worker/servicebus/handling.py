"""What a worker thread does with one message: parse, process, decide. It never touches an SDK object.

Every exception is caught here: a message whose processing raises is dead-lettered with reason
``ProcessingError`` (and answered with a ``failed`` result when one can be built); the worker keeps going.
"""

from __future__ import annotations

import threading
import time
import traceback
from datetime import datetime
from typing import Protocol

import structlog

from worker.domain.contract import InvalidRequest, Limits, Request, Result, crashed_result, parse_request
from worker.domain.events import EventIgnored
from worker.domain.secrets import redact
from worker.observability.logging import request_context
from worker.processing.processor import Outcome
from worker.servicebus.inflight import InFlight
from worker.servicebus.messages import MAX_DESCRIPTION, clip, event_meta
from worker.servicebus.outcome import Disposition, Settle

log = structlog.get_logger(__name__)

MAX_LOGGED_ITEM_IDS = 20


class ProcessorLike(Protocol):
    def process(self, request: Request, cancel: threading.Event, *, received_at: datetime | None = None) -> Outcome: ...


def _item_ids(request: Request) -> list[str]:
    return request.requested_ids[:MAX_LOGGED_ITEM_IDS]


def invalid_disposition(rec: InFlight, error: InvalidRequest) -> Disposition:
    from worker.domain.contract import invalid_result

    result = invalid_result(rec.meta, error, received_at=rec.received_at, body=rec.body)
    return Disposition(
        action=Settle.DEAD_LETTER,
        result=result,
        reason="InvalidRequest",
        description=clip(
            redact(f"invalid request (attempt {rec.meta.attempt}): {error.code}: {error}"), MAX_DESCRIPTION
        ),
        service_ok=None,
    )


def failed_result(rec: InFlight, request: Request | None, code: str, message: str) -> Result | None:
    """A ``failed`` result for a request whose processing crashed; None when even that cannot be built."""
    try:
        return crashed_result(rec.meta, request, {"code": code, "message": message}, rec.received_at)
    except Exception:  # the result is best effort; the dead-letter carries the details
        log.warning("failed_result_unbuildable", exc_info=True)
        return None


def handle(rec: InFlight, processor: ProcessorLike, limits: Limits) -> Disposition:
    """Parse and process one message; always returns a disposition, never raises."""
    started = time.monotonic()
    request = None
    with request_context(
        message_id=rec.meta.message_id,
        correlation_id=rec.meta.correlation_id or rec.meta.message_id,
        attempt=rec.meta.attempt,
    ) as context:
        try:
            try:
                request = parse_request(rec.body, rec.meta, limits)
            except EventIgnored as ignored:
                log.info("event_ignored", reason=str(ignored))
                return Disposition(action=Settle.COMPLETE, service_ok=None)
            except InvalidRequest as error:
                rec.meta = event_meta(rec.meta, rec.body)
                disposition = invalid_disposition(rec, error)
                log.warning(
                    "request_invalid",
                    error=str(error),
                    error_code=error.code,
                    field=error.field,
                    request_id=rec.meta.message_id,
                )
                return disposition
            if request.event is not None:  # answered under the event id (the idempotency key)
                rec.meta = request.meta
                context["event_id"] = request.event.id
            context["collection"] = request.collection
            context["item_ids"] = _item_ids(request)
            outcome = processor.process(request, rec.cancel, received_at=rec.received_at)
            disposition = Disposition.from_outcome(outcome)
            error = disposition.result.error if disposition.result is not None else None
            log.info(
                "request_processed",
                action=str(disposition.action),
                status=disposition.result.status if disposition.result is not None else None,
                reason=disposition.reason,
                error_code=error.get("code") if isinstance(error, dict) else None,  # the underlying code
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )
            return disposition
        except Exception as exc:
            text = redact(f"{type(exc).__name__}: {exc}")
            log.error("processing_error", error=text, exc_info=True)
            tb = redact("".join(traceback.format_exception(exc, limit=6)))
            description = clip(
                f"processing raised {text} (attempt {rec.meta.attempt}); traceback: {tb}", MAX_DESCRIPTION
            )
            return Disposition(
                action=Settle.DEAD_LETTER,
                result=failed_result(rec, request, "ProcessingError", clip(text, 1000) or ""),
                reason="ProcessingError",
                description=description,
                service_ok=None,
            )
