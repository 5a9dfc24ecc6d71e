"""Replaying dead-lettered requests: the message we send, the pacing and the per-run report.

A replay carries the original body, correlation_id, reply_to, reply_to_session_id, session_id, partition_key,
content_type, subject, to, time_to_live and application properties, minus what Service Bus or the runtime added
on the way to the DLQ (``DeadLetterReason``, ``DeadLetterErrorDescription``, the runtime's ``gcw-attempt`` and
``gcw-request-id`` retry bookkeeping, a previous ``gcw-replay-to``). It gets:

- a NEW message_id (duplicate detection would drop the old one): ``uuid5(original id, DLQ sequence number,
  replay count)``. Deterministic on purpose: if a replay is interrupted after the send and before the DLQ copy is
  completed, the re-run sends the *same* id, which a queue with duplicate detection drops;
- ``gcw-original-message-id`` (the very first id, kept across repeated replays), ``gcw-replay-count`` (+1),
  ``gcw-last-dead-letter-reason``, and ``gcw-replay-to`` when sent through a topic;
- ``correlation_id`` = the original message id when the original had none, because the result's correlation id
  defaults to the request's message id, which changes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from azure.servicebus import ServiceBusMessage

from worker.domain.secrets import redact
from worker.recovery.entity import ReplayTarget
from worker.recovery.records import (
    DEAD_LETTER_DESCRIPTION_PROPERTY,
    DEAD_LETTER_REASON_PROPERTY,
    LAST_DEAD_LETTER_REASON,
    ORIGINAL_MESSAGE_ID,
    REPLAY_COUNT,
    REPLAY_TO,
    RUNTIME_ATTEMPT,
    RUNTIME_REQUEST_ID,
    DeadLetterRecord,
)
from worker.recovery.settle import Decision, StopSettling
from worker.recovery.summary import render_table

log = structlog.get_logger(__name__)

# Dropped from a replay: what Service Bus added when dead-lettering, the runtime's retry bookkeeping (a replay
# starts again at attempt 1, and gets its own request id so its result's message id "result-<request id>" is not
# dropped by duplicate detection on the reply queue as a repeat of the failed result), a previous gcw-replay-to.
STRIPPED_PROPERTIES = frozenset(
    {DEAD_LETTER_REASON_PROPERTY, DEAD_LETTER_DESCRIPTION_PROPERTY, RUNTIME_ATTEMPT, RUNTIME_REQUEST_ID, REPLAY_TO}
)
_ID_NAMESPACE = uuid.UUID("6f1d3c52-5a0e-4f43-9a55-0c6b1f0f8d11")


class ReplayRefused(Exception):
    """This record must not be replayed; the text says why (it stays in the DLQ / the file)."""


def replay_message_id(record: DeadLetterRecord, replay_count: int) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, f"{record.original_message_id}|{record.sequence_number}|{replay_count}"))


def build_message(record: DeadLetterRecord, *, target: ReplayTarget, max_replays: int) -> ServiceBusMessage:
    """The message to send for ``record``; raises ``ReplayRefused`` past ``max_replays`` or for a non-data body."""
    if record.replay_count >= max_replays:
        raise ReplayRefused(f"already replayed {record.replay_count} time(s) (--max-replays {max_replays})")
    if record.body_type != "data":
        raise ReplayRefused(f"AMQP {record.body_type} body: only data bodies are replayed")
    for key, value in record.application_properties.items():
        if isinstance(value, bytes):  # the SDK decodes bytes property values as UTF-8 when sending
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                raise ReplayRefused(
                    f"application property {key!r} is binary (not UTF-8); azure-servicebus cannot send it"
                ) from None
    count = record.replay_count + 1
    props: dict[str | bytes, Any] = {
        k: v for k, v in record.application_properties.items() if k not in STRIPPED_PROPERTIES
    }
    props[ORIGINAL_MESSAGE_ID] = record.original_message_id or ""
    props[REPLAY_COUNT] = count
    if record.dead_letter_reason:
        props[LAST_DEAD_LETTER_REASON] = record.dead_letter_reason[:256]
    if target.replay_to:
        props[REPLAY_TO] = target.replay_to
    message = ServiceBusMessage(
        record.body,
        application_properties=props,
        session_id=record.session_id,
        message_id=replay_message_id(record, count),
        content_type=record.content_type,
        correlation_id=record.correlation_id or record.original_message_id,
        subject=record.subject,
        to=record.to,
        reply_to=record.reply_to,
        reply_to_session_id=record.reply_to_session_id,
        time_to_live=record.time_to_live,
    )
    if record.partition_key and (record.session_id is None or record.partition_key == record.session_id):
        message.partition_key = record.partition_key
    return message


class Pacer:
    """At most ``rate`` calls of ``wait()`` per second (None: no limit)."""

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._clock, self._sleep = clock, sleep
        self._next = 0.0

    def wait(self) -> None:
        if not self._interval:
            return
        now = self._clock()
        if now < self._next:
            self._sleep(self._next - now)
            now = self._next
        self._next = now + self._interval


LISTED = 200  # rows of a text report's tables; --json has them all


@dataclass
class ReplayReport:
    target: str
    source: str
    dry_run: bool = False
    selected: int = 0
    replayed: int = 0
    would_replay: int = 0
    refused: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    not_completed: list[dict[str, Any]] = field(default_factory=list)  # sent, DLQ copy still there (re-run dedups)
    not_reached: list[int] = field(default_factory=list)
    released: int = 0
    stopped_because: str = ""
    planned: list[dict[str, Any]] = field(default_factory=list)  # what passed the checks (a dry run lists them)

    @property
    def ok(self) -> bool:
        return not (self.failed or self.not_completed or self.not_reached)

    def to_dict(self) -> dict[str, Any]:
        listed = {"would_replay_messages": self.planned} if self.dry_run else {}
        return {
            "source": self.source,
            "target": self.target,
            "dry_run": self.dry_run,
            "selected": self.selected,
            "replayed": self.replayed,
            "would_replay": self.would_replay,
            "refused": self.refused,
            "failed": self.failed,
            "sent_but_not_completed": self.not_completed,
            "not_reached": self.not_reached,
            "locks_released": self.released,
            "stopped_because": self.stopped_because,
            **listed,
        }

    def render(self) -> str:
        verb = "would replay" if self.dry_run else "replayed"
        count = self.would_replay if self.dry_run else self.replayed
        lines = [
            f"{'DRY RUN: ' if self.dry_run else ''}{self.source} -> {self.target}",
            f"selected {self.selected}, {verb} {count}, refused {len(self.refused)}, failed {len(self.failed)}, "
            f"sent but not completed {len(self.not_completed)}, not reached {len(self.not_reached)}",
        ]
        if self.stopped_because:
            lines.append(f"stopped: {self.stopped_because}")
        if self.dry_run and self.planned:
            rows = [
                [str(p["sequence_number"]), str(p["message_id"]), str(p["original_message_id"]), str(p["error_code"])]
                for p in self.planned[:LISTED]
            ]
            headers = ["SEQ", "MESSAGE ID", "ORIGINAL MESSAGE ID", "ERROR CODE"]
            lines += ["", "would replay:", render_table(headers, rows)]
            if len(self.planned) > LISTED:
                lines.append(f"... and {len(self.planned) - LISTED} more (use --json)")
        problems = [
            [str(r.get("sequence_number")), str(r.get("message_id")), outcome, r["why"]]
            for outcome, rows in (
                ("refused", self.refused),
                ("failed", self.failed),
                ("not completed", self.not_completed),
            )
            for r in rows
        ]
        if problems:
            lines += ["", render_table(["SEQ", "MESSAGE ID", "OUTCOME", "WHY"], problems[:LISTED])]
            if len(problems) > LISTED:
                lines.append(f"... and {len(problems) - LISTED} more (use --json)")
        if self.not_reached:
            lines.append(
                f"not reached (locked elsewhere, removed meanwhile, or run stopped): {len(self.not_reached)} "
                "— they are still in the DLQ; re-run to replay them"
            )
        return "\n".join(lines)


class Replayer:
    """Sends replays of records one by one (paced) and fills the report. The sender is owned by the caller."""

    def __init__(
        self,
        sender: Any,
        target: ReplayTarget,
        report: ReplayReport,
        *,
        max_replays: int,
        pacer: Pacer | None = None,
        max_consecutive_failures: int = 5,
    ) -> None:
        self._sender, self._target, self.report = sender, target, report
        self._max_replays = max_replays
        self._pacer = pacer or Pacer(None)
        self._max_failures = max_consecutive_failures
        self._failures_in_a_row = 0

    def check(self, record: DeadLetterRecord) -> bool:
        """Dry run: would ``record`` be replayed? Refusals go to the report."""
        try:
            build_message(record, target=self._target, max_replays=self._max_replays)
        except ReplayRefused as exc:
            self._refuse(record, str(exc))
            return False
        self.report.would_replay += 1
        self.report.planned.append(
            {
                "sequence_number": record.sequence_number,
                "message_id": record.message_id,
                "original_message_id": record.original_message_id,
                "error_code": record.error_code,
            }
        )
        return True

    def replay(self, record: DeadLetterRecord) -> Decision:
        """Send one replay. COMPLETE only when the send succeeded; raises StopSettling after repeated failures."""
        try:
            message = build_message(record, target=self._target, max_replays=self._max_replays)
        except ReplayRefused as exc:
            self._refuse(record, str(exc))
            return Decision.KEEP
        self._pacer.wait()
        try:
            self._sender.send_messages(message)
        except Exception as exc:
            why = redact(f"{type(exc).__name__}: {exc}")[:300]
            self.report.failed.append(_ref(record, why))
            log.warning("dlq_replay_send_failed", message_id=record.message_id, error=why)
            self._failures_in_a_row += 1
            if self._failures_in_a_row >= self._max_failures:
                raise StopSettling(f"{self._failures_in_a_row} sends failed in a row; last: {why}") from exc
            return Decision.KEEP
        self._failures_in_a_row = 0
        self.report.replayed += 1
        log.info(
            "dlq_replayed",
            message_id=record.message_id,
            new_message_id=message.message_id,
            original_message_id=record.original_message_id,
            replay_count=record.replay_count + 1,
            collection=record.collection,
            target=self._target.describe(),
        )
        return Decision.COMPLETE

    def _refuse(self, record: DeadLetterRecord, why: str) -> None:
        self.report.refused.append(_ref(record, why))
        log.info("dlq_replay_refused", message_id=record.message_id, why=why)


def _ref(record: DeadLetterRecord, why: str) -> dict[str, Any]:
    return {"sequence_number": record.sequence_number, "message_id": record.message_id, "why": why}
