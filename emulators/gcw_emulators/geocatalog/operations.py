"""Long-running operations: a timeline fixed at creation, a status computed lazily from the clock.

An operation is ``Pending`` from ``created`` to ``started``, ``Running`` until ``finished``, and then takes the
outcome decided when the catalog applies it (``Succeeded`` with a last history entry ``Finished``, or ``Failed``).
No timer thread: the catalog applies due operations before answering any call.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

TERMINAL = frozenset({"Succeeded", "Failed", "Canceled"})
STATUSES = ("Pending", "Running", "Succeeded", "Failed", "Canceled", "Canceling")
PENDING_SHARE = 0.25  # share of an operation's duration spent in Pending
# operations whose terminal body has no startTime, finishTime or additionalInformation (T07)
COLLECTION_TYPES = frozenset({"AddCollection", "DeleteCollection"})
# operations on an ingestion definition: like the collection ones, no startTime/finishTime and 7 fractional digits,
# but their additionalInformation ({"IngestionId": ...}) shows in every state, Pending included (I03, I16, I17)
DEFINITION_TYPES = frozenset({"DeleteIngestion"})


@functools.lru_cache(maxsize=4096)  # an operation's timestamps are written on every read of it, an item's per item
def rfc3339(ts: float, digits: int = 7) -> str:
    """Seconds since the epoch as the service writes them: ``2025-10-28T18:43:35.3077441Z`` (7 digits) or, in
    terminal item-operation bodies and ``_msft:ts``, ``2025-10-27T17:56:54.016281Z`` (6 digits)."""
    text = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text + "0Z" if digits == 7 else text + "Z"


# The live service's timings (T14, T13, T11, T07, C01, C03): (low, high) total seconds and the share spent Pending.
RECORDED_DURATIONS: dict[str, tuple[float, float, float]] = {
    "AddItem": (5.0, 7.0, 0.34),  # 6.89 s, 2.33 s Pending (T14)
    "UpdateItem": (2.2, 2.8, 0.55),  # 2.53 s, 1.39 s Pending (T13)
    "DeleteItem": (0.6, 1.0, 0.34),  # 0.79 s, 0.27 s Pending (T14)
    "AddCollection": (4.6, 8.4, 0.95),  # 8.38 / 7.84 / 5.63 s, almost all Pending (T07)
    "DeleteCollection": (4.6, 7.2, 0.9),  # 7.20 / 6.91 / 4.61 s (T07)
    "DeleteIngestion": (3.3, 3.6, 0.99),  # 3.36-3.53 s Pending, 0.02 s Running (I16)
    # 0.74-0.78 s Pending (I17); a run of the 1050-item sample catalog was still Running after 13 s (I17): a small
    # catalog's duration is not recorded, this range is the emulator's choice
    "IngestionStaticCatalog": (2.0, 4.0, 0.3),
}
RECORDED_FAILURE = (0.7, 1.6, 0.4)  # failed item writes: 0.74 / 1.04 / 1.47 / 1.62 s (T13, T11, T07)


class DurationSpec:
    """How long an operation takes: ``recorded`` (the live service's timings per operation type and outcome, the
    default), a fixed number (``2.0``), ``uniform:A,B`` or ``exp:MEAN``."""

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
        if text == "recorded":
            return "recorded", 0.0, 0.0
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
                f"invalid operation duration {spec!r}: expected 'recorded', seconds (2.0), 'uniform:LOW,HIGH' or "
                "'exp:MEAN'"
            ) from None

    def sample(self, rng: random.Random, op_type: str = "AddItem", failing: bool = False) -> tuple[float, float]:
        """(total seconds, seconds Pending) of one operation."""
        if self._kind == "recorded":
            low, high, share = (
                RECORDED_FAILURE
                if failing and op_type not in COLLECTION_TYPES
                else (RECORDED_DURATIONS.get(op_type, RECORDED_DURATIONS["AddItem"]))
            )
            total = rng.uniform(low, high)
            return total, total * share
        if self._kind == "fixed":
            total = self._a
        elif self._kind == "uniform":
            total = rng.uniform(self._a, self._b)
        else:
            total = rng.expovariate(1.0 / self._a)
        return total, total * PENDING_SHARE


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
        """The Operation as the service serves it at ``now`` (shapes per state and type: T14, T13, T11, T07)."""
        status = self.status_at(now)
        terminal = self.outcome is not None and self.ended is not None
        item_op = self.type not in COLLECTION_TYPES and self.type not in DEFINITION_TYPES
        # terminal item-operation bodies carry 6 fractional digits, everything else 7 (T14, T11, T07)
        digits = 6 if terminal and item_op else 7
        created = rfc3339(self.created, digits)
        canceled_pending = self.outcome == "Canceled" and self.ended is not None and self.ended < self.started
        history: list[dict[str, Any]] = []
        if not canceled_pending:  # canceled while Pending: a single Canceled entry (T07)
            history.append({"status": "Pending", "timestamp": created})
            if (self.ended if terminal else now) >= self.started:
                history.append({"status": "Running", "timestamp": rfc3339(self.started, digits)})
        if terminal and self.ended is not None:
            entry: dict[str, Any] = {
                "status": "Finished" if self.outcome == "Succeeded" else self.outcome,
                "timestamp": rfc3339(self.ended, digits),
            }
            if self.error is not None:
                entry["errorCode"], entry["errorMessage"] = self.error
            history.append(entry)
        body: dict[str, Any] = {"id": self.id, "status": status, "statusHistory": history, "type": self.type}
        body["creationTime"] = created
        if terminal and item_op and self.ended is not None:
            if not canceled_pending:
                body["startTime"] = created  # startTime equals creationTime, not the Running timestamp (T14)
            body["finishTime"] = rfc3339(self.ended, digits)
        if self.collection_id is not None:
            body["collectionId"] = self.collection_id
        if ((terminal and item_op) or self.type in DEFINITION_TYPES) and self.additional_information:
            body["additionalInformation"] = dict(self.additional_information)
        if self.outcome == "Failed" and self.error is not None:
            body["error"] = {"error": {"code": self.error[0], "message": self.error[1]}}
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
