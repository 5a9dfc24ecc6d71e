"""The bookkeeping of one message between receive and settlement."""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from worker.domain.contract import MessageMeta
from worker.tracing import MessageTrace


@dataclass(eq=False)
class InFlight:
    message: Any  # ServiceBusReceivedMessage; touched only by the receiver-owner thread
    meta: MessageMeta
    body: bytes
    received_at: dt.datetime
    received_mono: float
    lock_duration: float  # seconds, as granted at receive
    lock_expires_mono: float
    cancel: threading.Event = field(default_factory=threading.Event)
    renewals: int = 0
    probe: bool = False  # the circuit breaker's half-open probe
    trace: MessageTrace | None = None  # its ``receive`` span while tracing is on

    @property
    def key(self) -> int:
        return id(self)

    def lock_remaining(self, now: float | None = None) -> float:
        return self.lock_expires_mono - (time.monotonic() if now is None else now)
