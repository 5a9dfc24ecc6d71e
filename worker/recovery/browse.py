"""Peek-only iteration over a dead-letter queue: no lock is taken, nothing changes, delivery counts stay."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from worker.recovery.records import DeadLetterRecord
from worker.recovery.selection import Filters

PEEK_BATCH = 250


def peek_records(
    receiver: Any, *, entity: str, batch: int = PEEK_BATCH, max_messages: int | None = None
) -> Iterator[DeadLetterRecord]:
    """Every message of the receiver's entity in sequence order, by explicit sequence-number paging.

    ``max_messages`` caps how many are read (a huge DLQ); ``None`` reads to the end.
    """
    next_sequence = 1  # peek_messages(sequence_number=0) would mean "continue from the receiver's cursor"
    seen = 0
    while max_messages is None or seen < max_messages:
        count = batch if max_messages is None else min(batch, max_messages - seen)
        messages = receiver.peek_messages(max_message_count=count, sequence_number=next_sequence)
        if not messages:
            return
        for message in messages:
            yield DeadLetterRecord.from_message(message, entity=entity)
            seen += 1
        next_sequence = max(m.sequence_number for m in messages) + 1


def select(
    records: Iterable[DeadLetterRecord], filters: Filters, *, limit: int | None = None
) -> list[DeadLetterRecord]:
    """The records that match, in sequence order, at most ``limit``."""
    chosen: list[DeadLetterRecord] = []
    for record in records:
        if limit is not None and len(chosen) >= limit:
            break
        if filters.matches(record):
            chosen.append(record)
    return chosen
