"""Long-running operations: a timeline fixed at creation, a status computed lazily from the clock.

An operation is ``Pending`` from ``created`` to ``started``, ``Running`` until ``finished``, and then takes the
outcome decided when the catalog applies it (``Succeeded`` with a last history entry ``Finished``, or ``Failed``).
No timer thread: the catalog applies due operations before answering any call.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

TERMINAL = frozenset({"Succeeded", "Failed", "Canceled"})
STATUSES = ("Pending", "Running", "Succeeded", "Failed", "Canceled", "Canceling")
PENDING_SHARE = 0.25  # share of an operation's duration spent in Pending


def rfc3339(ts: float) -> str:
    """Seconds since the epoch as the service writes them: ``2025-10-28T18:43:35.3077441Z`` (7 digits)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


class DurationSpec:
    """How long an operation takes: a fixed number (``2.0``), ``uniform:A,B`` or ``exp:MEAN``."""

    def __init__(self, spec: float | int | str) -> None:
        self.spec = str(spec)
        self._kind, self._a, self._b = self._parse(spec)

    @staticmethod
    def _parse(spec: float | int | str) -> tuple[str, float, float]:
        if isinstance(spec, int | float):
            if spec < 0:
                raise ValueError(f"operation duration must be >= 0, got {spec}")
            return "fixed", float(spec), 0.0
        text = spec.strip().lower()
        try:
            if text.startswith("uniform:"):
                low, high = (float(x) for x in text[len("uniform:") :].split(","))
                if low < 0 or high < low:
                    raise ValueError
                return "uniform", low, high
            if text.startswith("exp:"):
                mean = float(text[len("exp:") :])
                if mean <= 0:
                    raise ValueError
                return "exp", mean, 0.0
            value = float(text)
            if value < 0:
                raise ValueError
            return "fixed", value, 0.0
        except ValueError:
            raise ValueError(
                f"invalid operation duration {spec!r}: expected seconds (2.0), 'uniform:LOW,HIGH' or 'exp:MEAN'"
            ) from None

    def sample(self, rng: random.Random) -> float:
        if self._kind == "fixed":
            return self._a
        if self._kind == "uniform":
            return rng.uniform(self._a, self._b)
        return rng.expovariate(1.0 / self._a)


@dataclass
class Operation:
    """One operation record. ``payload`` is what the catalog applies when the operation finishes."""

    id: str
    type: str
    collection_id: str | None
    created: float
    started: float
    finished: float
    payload: dict[str, Any] = field(default_factory=dict)
    forced_error: tuple[str, str] | None = None  # (code, message) from an op-fail fault
    outcome: str | None = None  # Succeeded | Failed | Canceled once applied
    error: tuple[str, str] | None = None
    ended: float | None = None  # when the outcome was fixed (== finished unless canceled)
    additional_information: dict[str, str] = field(default_factory=dict)

    def status_at(self, now: float) -> str:
        if self.outcome is not None:
            return self.outcome
        return "Pending" if now < self.started else "Running"

    def to_json(self, now: float) -> dict[str, Any]:
        status = self.status_at(now)
        history: list[dict[str, Any]] = [{"status": "Pending", "timestamp": rfc3339(self.created)}]
        body: dict[str, Any] = {
            "id": self.id,
            "status": status,
            "type": self.type,
            "creationTime": rfc3339(self.created),
        }
        if self.collection_id is not None:
            body["collectionId"] = self.collection_id
        ran = (self.ended if self.ended is not None else now) >= self.started
        if ran:
            history.append({"status": "Running", "timestamp": rfc3339(self.started)})
            body["startTime"] = rfc3339(self.started)
        if self.outcome is not None and self.ended is not None:
            body["finishTime"] = rfc3339(self.ended)
            entry: dict[str, Any] = {
                "status": "Finished" if self.outcome == "Succeeded" else self.outcome,
                "timestamp": rfc3339(self.ended),
            }
            if self.error is not None:
                entry["errorCode"], entry["errorMessage"] = self.error
                body["error"] = {"error": {"code": self.error[0], "message": self.error[1]}}
            history.append(entry)
        body["statusHistory"] = history
        if self.additional_information:
            body["additionalInformation"] = dict(self.additional_information)
        return body

    # Persistence (the SQLite store keeps operations as JSON).
    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "collection_id": self.collection_id,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "payload": self.payload,
            "forced_error": list(self.forced_error) if self.forced_error else None,
            "outcome": self.outcome,
            "error": list(self.error) if self.error else None,
            "ended": self.ended,
            "additional_information": self.additional_information,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Operation:
        return cls(
            id=rec["id"],
            type=rec["type"],
            collection_id=rec["collection_id"],
            created=rec["created"],
            started=rec["started"],
            finished=rec["finished"],
            payload=rec["payload"],
            forced_error=tuple(rec["forced_error"]) if rec["forced_error"] else None,  # type: ignore[arg-type]
            outcome=rec["outcome"],
            error=tuple(rec["error"]) if rec["error"] else None,  # type: ignore[arg-type]
            ended=rec["ended"],
            additional_information=rec["additional_information"],
        )
