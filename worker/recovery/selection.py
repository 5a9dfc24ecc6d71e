"""Selecting dead-lettered messages: durations, timestamps and the filters shared by every ``dlq`` command."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from worker.recovery.records import DeadLetterRecord

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)([smhdw]))+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


class SelectionError(ValueError):
    """A filter value that cannot be understood; the message names the option and why."""


def parse_duration(text: str) -> timedelta:
    """``"90s"``, ``"30m"``, ``"2h"``, ``"7d"``, ``"1w"`` or compounds such as ``"1d12h"``."""
    value = text.strip().lower()
    if not value or not _DURATION.match(value):
        raise SelectionError(f"{text!r} is not a duration (use e.g. 30m, 2h, 7d, 1d12h)")
    seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(value))
    return timedelta(seconds=seconds)


def parse_when(text: str, *, now: datetime, option: str) -> datetime:
    """A point in time from a duration before ``now`` (``2h``) or an ISO-8601 timestamp (UTC when naive)."""
    value = text.strip()
    if _DURATION.match(value.lower()):
        return now - parse_duration(value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise SelectionError(
            f"{option} {text!r}: neither a duration (30m, 2h, 7d) nor an ISO-8601 timestamp (2026-01-31T12:00:00Z)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Filters:
    """Every condition must hold; a tuple option matches when any of its values matches (empty = any)."""

    reasons: tuple[str, ...] = ()
    collections: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    message_ids: tuple[str, ...] = ()
    descriptions: tuple[str, ...] = ()  # case-insensitive substrings of the dead-letter description
    older_than: datetime | None = None  # enqueued strictly before
    newer_than: datetime | None = None  # enqueued at or after

    @classmethod
    def from_options(
        cls,
        *,
        reasons: Iterable[str] = (),
        collections: Iterable[str] = (),
        actions: Iterable[str] = (),
        message_ids: Iterable[str] = (),
        descriptions: Iterable[str] = (),
        older_than: str | None = None,
        newer_than: str | None = None,
        now: datetime | None = None,
    ) -> Filters:
        now = now or datetime.now(UTC)
        older = parse_when(older_than, now=now, option="--older-than") if older_than else None
        newer = parse_when(newer_than, now=now, option="--newer-than") if newer_than else None
        if older and newer and newer >= older:
            raise SelectionError(
                f"--newer-than ({newer.isoformat()}) must be before --older-than ({older.isoformat()}): "
                "nothing can match both"
            )
        return cls(
            reasons=tuple(reasons),
            collections=tuple(collections),
            actions=tuple(actions),
            message_ids=tuple(message_ids),
            descriptions=tuple(descriptions),
            older_than=older,
            newer_than=newer,
        )

    @property
    def empty(self) -> bool:
        return not (
            self.reasons
            or self.collections
            or self.actions
            or self.message_ids
            or self.descriptions
            or self.older_than
            or self.newer_than
        )

    def matches(self, record: DeadLetterRecord) -> bool:
        if self.reasons and (record.dead_letter_reason or "") not in self.reasons:
            return False
        if self.collections and record.collection not in self.collections:
            return False
        if self.actions and record.action not in self.actions:
            return False
        if self.message_ids and not ({record.message_id, record.original_message_id} & set(self.message_ids)):
            return False
        if self.descriptions:
            text = (record.dead_letter_error_description or "").lower()
            if not any(d.lower() in text for d in self.descriptions):
                return False
        enqueued = record.enqueued_time
        if self.older_than is not None and (enqueued is None or enqueued >= self.older_than):
            return False
        return not (self.newer_than is not None and (enqueued is None or enqueued < self.newer_than))

    def describe(self) -> str:
        parts = [f"reason={','.join(self.reasons)}"] if self.reasons else []
        parts += [f"collection={','.join(self.collections)}"] if self.collections else []
        parts += [f"action={','.join(self.actions)}"] if self.actions else []
        parts += [f"message-id={','.join(self.message_ids)}"] if self.message_ids else []
        parts += [f"description~{','.join(self.descriptions)}"] if self.descriptions else []
        parts += [f"enqueued<{self.older_than.isoformat()}"] if self.older_than else []
        parts += [f"enqueued>={self.newer_than.isoformat()}"] if self.newer_than else []
        return " ".join(parts) or "(all)"
