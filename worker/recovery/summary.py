"""Grouping dead-lettered messages: counts by reason, collection and action, with first / last seen."""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from worker.recovery.records import DeadLetterRecord

NONE = "-"


@dataclass
class Group:
    key: tuple[str, ...]
    count: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    max_replay_count: int = 0
    descriptions: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)  # the underlying error codes

    def add(self, record: DeadLetterRecord) -> None:
        self.count += 1
        when = record.enqueued_time
        if when is not None:
            self.first_seen = when if self.first_seen is None else min(self.first_seen, when)
            self.last_seen = when if self.last_seen is None else max(self.last_seen, when)
        self.max_replay_count = max(self.max_replay_count, record.replay_count)
        if record.dead_letter_error_description:
            self.descriptions[shorten(record.dead_letter_error_description, 200)] += 1
        self.codes[record.error_code or NONE] += 1

    def to_dict(self, names: tuple[str, ...]) -> dict[str, Any]:
        data: dict[str, Any] = dict(zip(names, self.key, strict=True))
        data.update(
            count=self.count,
            first_seen=self.first_seen.isoformat() if self.first_seen else None,
            last_seen=self.last_seen.isoformat() if self.last_seen else None,
            max_replay_count=self.max_replay_count,
        )
        if self.descriptions:
            data["top_description"] = self.descriptions.most_common(1)[0][0]
        data["error_codes"] = dict(self.codes.most_common())
        return data

    def render_codes(self) -> str:
        return ", ".join(f"{code} x{n}" if len(self.codes) > 1 else code for code, n in self.codes.most_common(3)) + (
            ", ..." if len(self.codes) > 3 else ""
        )


@dataclass
class Summary:
    entity: str
    total: int = 0
    by_reason: dict[tuple[str, ...], Group] = field(default_factory=dict)
    by_collection: dict[tuple[str, ...], Group] = field(default_factory=dict)
    by_action: dict[tuple[str, ...], Group] = field(default_factory=dict)
    groups: dict[tuple[str, ...], Group] = field(default_factory=dict)  # reason x collection x action

    def to_dict(self) -> dict[str, Any]:
        def rows(groups: dict[tuple[str, ...], Group], names: tuple[str, ...]) -> list[dict[str, Any]]:
            return [g.to_dict(names) for g in sorted(groups.values(), key=lambda g: (-g.count, g.key))]

        return {
            "entity": self.entity,
            "total": self.total,
            "by_reason": rows(self.by_reason, ("reason",)),
            "by_collection": rows(self.by_collection, ("collection",)),
            "by_action": rows(self.by_action, ("action",)),
            "groups": rows(self.groups, ("reason", "collection", "action")),
        }


def summarize(records: Iterable[DeadLetterRecord], *, entity: str) -> Summary:
    summary = Summary(entity=entity)
    keys: list[tuple[dict[tuple[str, ...], Group], Callable[[DeadLetterRecord], tuple[str, ...]]]] = [
        (summary.by_reason, lambda r: (r.dead_letter_reason or NONE,)),
        (summary.by_collection, lambda r: (r.collection or NONE,)),
        (summary.by_action, lambda r: (r.action or NONE,)),
        (summary.groups, lambda r: (r.dead_letter_reason or NONE, r.collection or NONE, r.action or NONE)),
    ]
    for record in records:
        summary.total += 1
        for groups, key_of in keys:
            key = key_of(record)
            groups.setdefault(key, Group(key)).add(record)
    return summary


def shorten(text: str, width: int) -> str:
    """One line of at most ``width`` characters, cut at a word boundary and marked with an ellipsis."""
    return textwrap.shorten(text, width=width, placeholder=" …") if len(text) > width else " ".join(text.split())


def wrap_cell(text: str, width: int, max_lines: int | None) -> str:
    """``text`` wrapped to ``width`` (lines joined by newlines, for ``render_table``); past ``max_lines`` the last
    line ends with "… (+N chars)" so a cut is never silent."""
    lines = textwrap.wrap(" ".join(text.split()), width=width, break_long_words=True) or [NONE]
    if max_lines is None or len(lines) <= max_lines:
        return "\n".join(lines)
    kept = lines[:max_lines]
    left = len(" ".join(lines)) - len(" ".join(kept))
    marker = f" … (+{left} chars)"
    kept[-1] = kept[-1][: max(1, width - len(marker))].rstrip() + marker
    return "\n".join(kept)


def render_table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain, aligned text table (no colours: it is piped into tickets and chat). A cell holding newlines
    takes several lines; the other cells of its row stay on the first."""
    widths = [len(h) for h in headers]
    split = [[cell.split("\n") for cell in row] for row in rows]
    for row in split:
        widths = [max(w, *(len(part) for part in cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in split:
        for i in range(max(len(cell) for cell in row)):
            cells = [cell[i] if i < len(cell) else "" for cell in row]
            lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else NONE


def render_summary(summary: Summary) -> str:
    out = [f"Dead-letter queue of {summary.entity}: {summary.total} message(s)"]
    if not summary.total:
        return out[0]
    for title, groups, names in (
        ("By reason", summary.by_reason, ["REASON"]),
        ("By reason, collection and action", summary.groups, ["REASON", "COLLECTION", "ACTION"]),
    ):
        rows = [
            [*g.key, str(g.count), _when(g.first_seen), _when(g.last_seen), str(g.max_replay_count), g.render_codes()]
            for g in sorted(groups.values(), key=lambda g: (-g.count, g.key))
        ]
        headers = [*names, "COUNT", "FIRST SEEN", "LAST SEEN", "REPLAYS", "ERROR CODES"]
        out += ["", title + ":", render_table(headers, rows)]
    examples = [
        [g.key[0], wrap_cell(g.descriptions.most_common(1)[0][0], 100, 3)]
        for g in summary.by_reason.values()
        if g.descriptions
    ]
    if examples:
        out += ["", "Most common description per reason:", render_table(["REASON", "DESCRIPTION"], examples)]
    return "\n".join(out)
