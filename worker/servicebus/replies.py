"""Publishing results: the senders of one receiver-owner thread, reply batches within the size limit.

Used only from the owner thread (the SDK's senders are not thread-safe). ``publish`` never settles anything: it
says which replies are durably sent (only those requests may be settled), which could not be built (to be
dead-lettered with the reason) and which could not be sent (to be abandoned, so the request is redelivered).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog
from azure.servicebus import ServiceBusClient, ServiceBusMessage

from worker import tracing
from worker.domain.secrets import redact
from worker.observability.metrics import Metrics
from worker.servicebus.inflight import InFlight
from worker.servicebus.messages import build_reply, result_body
from worker.servicebus.outcome import Disposition, Settle
from worker.servicebus.settings import ConsumerSettings

log = structlog.get_logger(__name__)

REPLY_OVERHEAD_BYTES = 2048  # per message in a batch: properties and AMQP framing around the body


def size_chunks(members: list[Any], sizes: list[int], limit: int) -> list[list[Any]]:
    """``members`` in order, split so that each chunk's ``sizes`` (plus per-message overhead) stay within
    ``limit``: several large results sent as one batch would exceed the queue's message size limit."""
    chunks: list[list[Any]] = []
    total = 0
    for member, size in zip(members, sizes, strict=True):
        size += REPLY_OVERHEAD_BYTES
        if chunks and total + size <= limit:
            chunks[-1].append(member)
            total += size
        else:
            chunks.append([member])
            total = size
    return chunks


class Senders:
    """Open senders by entity name, opened on first use and dropped after a failure."""

    def __init__(self, client: ServiceBusClient) -> None:
        self.client = client
        self._senders: dict[str, Any] = {}

    def get(self, entity: str) -> Any:
        sender = self._senders.get(entity)
        if sender is None:
            sender = self.client.get_queue_sender(entity)
            sender.__enter__()
            self._senders[entity] = sender
        return sender

    def drop(self, entity: str) -> None:
        sender = self._senders.pop(entity, None)
        if sender is not None:
            try:
                sender.close()
            except Exception:
                log.debug("sender_close_failed", exc_info=True)

    def close(self) -> None:
        for entity in list(self._senders):
            self.drop(entity)


@dataclass
class Published:
    sent: list[tuple[InFlight, Disposition]] = field(default_factory=list)  # may now be settled
    unbuildable: list[tuple[InFlight, Disposition]] = field(default_factory=list)  # dead-letter with this
    failed: list[InFlight] = field(default_factory=list)  # not sent: abandon (redelivered)


def batch_limit(settings: ConsumerSettings) -> int:
    """Bytes per reply batch: the result size limit plus the room it keeps under 256 KiB."""
    return max(settings.max_result_bytes, 256 * 1024 - 4 * REPLY_OVERHEAD_BYTES)


def publish(
    senders: Senders, items: list[tuple[InFlight, Disposition]], settings: ConsumerSettings, metrics: Metrics
) -> Published:
    """Publish the results of ``items`` (batched per destination and session, within the size limit)."""
    out = Published()
    groups: dict[tuple[str, str | None], list[tuple[InFlight, Disposition, ServiceBusMessage]]] = {}
    sizes: dict[int, int] = {}
    sends: dict[int, tracing.SpanHandle] = {}  # rec.key -> its ``send`` span (worker.tracing.reply_span)
    for rec, disp in items:
        dest = settings.reply_destination(rec.meta.reply_to)
        send = sends[rec.key] = tracing.reply_span(rec.trace, dest, rec.meta.application_properties)
        status = disp.result.status if disp.result is not None else None
        try:
            body, shortened = result_body(disp.result, settings.max_result_bytes)
            if shortened:
                log.warning(
                    "result_shortened",
                    message_id=rec.meta.message_id,
                    limit=settings.max_result_bytes,
                    size=len(body),
                    what=shortened,
                )
            reply = build_reply(body, rec.meta, status=status, trace_properties=send.properties)
            sizes[rec.key] = len(body)
        except Exception as exc:  # never on the owner thread's way: dead-letter it with the reason instead
            what = redact(f"{type(exc).__name__}: {exc}")
            log.error("reply_unbuildable", message_id=rec.meta.message_id, error=what)
            send.end(what)
            out.unbuildable.append(
                (
                    rec,
                    Disposition(
                        action=Settle.DEAD_LETTER,
                        reason="ProcessingError",
                        description=f"the result message could not be built: {what}; "
                        f"outcome was {disp.reason or disp.action}: {disp.description or ''}",
                    ),
                )
            )
            continue
        groups.setdefault((dest, reply.session_id), []).append((rec, disp, reply))
    batches = [
        (dest, chunk)
        for (dest, _session), members in groups.items()
        for chunk in size_chunks(members, [sizes[rec.key] for rec, _, _ in members], batch_limit(settings))
    ]
    for dest, members in batches:
        try:
            senders.get(dest).send_messages([m for _, _, m in members])
            out.sent.extend((rec, disp) for rec, disp, _ in members)
            continue
        except Exception as exc:
            log.warning("reply_batch_failed", destination=dest, count=len(members), error=redact(str(exc)))
            senders.drop(dest)
        for rec, disp, message in members:  # one by one, so one bad reply does not hold the others
            try:
                senders.get(dest).send_messages(message)
                out.sent.append((rec, disp))
            except Exception as exc:
                log.error(
                    "reply_failed",
                    message_id=rec.meta.message_id,
                    destination=dest,
                    error=redact(f"{type(exc).__name__}: {exc}"),
                )
                senders.drop(dest)
                sends[rec.key].end("reply could not be sent")
                out.failed.append(rec)
    for rec, disp in out.sent:
        sends[rec.key].end()
        metrics.results.labels(status=str(disp.result.status if disp.result is not None else "unknown")).inc()
    return out
