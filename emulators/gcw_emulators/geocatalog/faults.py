"""Fault injection: a small spec grammar, seeded decisions, and the shared request budget.

Grammar: ``KIND[=VALUE][,key=value]...``. Kinds:

``latency=SECONDS`` (``jitter=S``) · ``status=429|500|503|...`` (``retry-after=S``) · ``reset`` ·
``op-fail`` (``code=``, ``message=``) · ``outage=SECONDS`` · ``auth-expired=SECONDS`` · ``sas-early=SECONDS`` ·
``budget=CALLS_PER_SECOND``.

Common keys: ``rate=0..1`` (share of matching requests, default 1), ``path=/prefix`` (only paths starting with
it), ``method=GET`` and ``count=N`` (at most N injections). Timed faults (outage, auth-expired) last SECONDS
from the moment they are set. Each fault draws from its own ``random.Random(seed + index)``, so the same
sequence of requests meets the same faults.
"""

from __future__ import annotations

import math
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

KINDS = ("latency", "status", "reset", "op-fail", "outage", "auth-expired", "sas-early", "budget")
COMMON_KEYS = {"rate", "path", "method", "count"}
EXTRA_KEYS = {
    "latency": {"jitter"},
    "status": {"retry-after"},
    "op-fail": {"code", "message"},
}
NEEDS_VALUE = {"latency", "status", "outage", "auth-expired", "sas-early", "budget"}


class FaultSpecError(ValueError):
    """A fault spec that cannot be parsed; the message says which part and why."""


@dataclass
class Fault:
    kind: str
    value: float | None = None
    rate: float = 1.0
    path: str | None = None
    method: str | None = None
    count: int | None = None
    options: dict[str, str] = field(default_factory=dict)
    spec: str = ""
    activated: float = 0.0
    injected: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def matches(self, method: str, path: str) -> bool:
        if self.path and not path.startswith(self.path):
            return False
        return not (self.method and method.upper() != self.method)

    def fire(self) -> bool:
        """Draw once: True if this fault applies now (respects rate and count)."""
        if self.count is not None and self.injected >= self.count:
            return False
        if self.rate < 1.0 and self.rng.random() >= self.rate:
            return False
        self.injected += 1
        return True

    def to_json(self) -> dict[str, object]:
        return {"spec": self.spec, "kind": self.kind, "injected": self.injected}


def parse_fault(spec: str) -> Fault:
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise FaultSpecError("empty fault spec")
    kind, _, raw_value = parts[0].partition("=")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise FaultSpecError(f"fault {spec!r}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    fault = Fault(kind=kind, spec=spec)
    if kind in NEEDS_VALUE:
        if not raw_value:
            raise FaultSpecError(f"fault {spec!r}: {kind} needs a value, e.g. {kind}=1")
        try:
            fault.value = float(raw_value)
        except ValueError:
            raise FaultSpecError(f"fault {spec!r}: {kind} value {raw_value!r} is not a number") from None
        if fault.value < 0 or not math.isfinite(fault.value):
            raise FaultSpecError(f"fault {spec!r}: {kind} value must be >= 0")
        if kind == "status" and not 400 <= fault.value <= 599:
            raise FaultSpecError(f"fault {spec!r}: status must be an HTTP error code 400..599")
        if kind == "budget" and fault.value <= 0:
            raise FaultSpecError(f"fault {spec!r}: budget must be > 0 calls per second")
    elif raw_value:
        raise FaultSpecError(f"fault {spec!r}: {kind} takes no value")
    allowed = COMMON_KEYS | EXTRA_KEYS.get(kind, set())
    for part in parts[1:]:
        key, eq, val = part.partition("=")
        key = key.strip().lower()
        if not eq or key not in allowed:
            raise FaultSpecError(f"fault {spec!r}: unknown option {part!r}; allowed: {', '.join(sorted(allowed))}")
        try:
            if key == "rate":
                fault.rate = float(val)
                if not 0.0 <= fault.rate <= 1.0:
                    raise ValueError
            elif key == "count":
                fault.count = int(val)
                if fault.count < 0:
                    raise ValueError
            elif key == "path":
                fault.path = val if val.startswith("/") else "/" + val
            elif key == "method":
                fault.method = val.upper()
            else:
                if key in ("jitter", "retry-after"):
                    float(val)
                fault.options[key] = val
        except ValueError:
            raise FaultSpecError(f"fault {spec!r}: invalid value for {key}: {val!r}") from None
    return fault


@dataclass
class Decision:
    """What the HTTP layer must do with one request."""

    latency: float = 0.0
    reset: bool = False
    status: int | None = None
    code: str = ""
    message: str = ""
    retry_after: float | None = None


class TokenBucket:
    """``rate`` calls per second with a burst of ``rate``; ``take`` returns None or seconds to wait."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = rate
        self._last = clock()

    def take(self) -> float | None:
        now = self._clock()
        self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return (1.0 - self._tokens) / self.rate


_STATUS_CODES = {429: "TooManyRequests", 500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable"}


class FaultSet:
    """The active faults plus the request budget. Thread-safe; every decision is seeded."""

    def __init__(self, clock: Callable[[], float], seed: int = 0, budget: float | None = None) -> None:
        self._clock = clock
        self._seed = seed
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._base_budget = budget
        self._bucket = TokenBucket(budget, clock) if budget else None
        self.injected: Counter[str] = Counter()

    def set(self, specs: Iterable[str]) -> list[Fault]:
        """Replace the active faults (all parsed first: a bad spec changes nothing)."""
        faults = [parse_fault(s) for s in specs]
        now = self._clock()
        with self._lock:
            for i, fault in enumerate(faults):
                fault.activated = now
                fault.rng = random.Random(self._seed + i)
            self._faults = faults
            budgets = [f.value for f in faults if f.kind == "budget" and f.value]
            rate = budgets[-1] if budgets else self._base_budget
            self._bucket = TokenBucket(rate, self._clock) if rate else None
        return faults

    def clear(self) -> None:
        self.set([])

    def describe(self) -> list[dict[str, object]]:
        with self._lock:
            return [f.to_json() for f in self._faults]

    @property
    def budget(self) -> float | None:
        with self._lock:
            return self._bucket.rate if self._bucket else None

    def _active(self, fault: Fault, now: float) -> bool:
        return fault.value is not None and now < fault.activated + fault.value

    def decide(self, method: str, path: str, budgeted: bool) -> Decision:
        """The fate of one request: outage, budget, latency, reset, injected status (in that order)."""
        now = self._clock()
        decision = Decision()
        with self._lock:
            for fault in self._faults:
                if fault.kind == "outage" and self._active(fault, now) and fault.matches(method, path):
                    fault.injected += 1
                    self.injected["outage"] += 1
                    remaining = fault.activated + (fault.value or 0) - now
                    decision.status, decision.code = 503, "ServiceUnavailable"
                    decision.message = "The service is unavailable (emulated outage)"
                    decision.retry_after = max(1.0, math.ceil(remaining))
                    return decision
            if budgeted and self._bucket is not None:
                wait = self._bucket.take()
                if wait is not None:
                    self.injected["budget"] += 1
                    decision.status, decision.code = 429, "TooManyRequests"
                    decision.message = f"Rate limit of {self._bucket.rate:g} calls per second exceeded"
                    decision.retry_after = max(1.0, math.ceil(wait))
                    return decision
            for fault in self._faults:
                if not fault.matches(method, path):
                    continue
                if fault.kind == "latency" and fault.fire():
                    jitter = float(fault.options.get("jitter", 0))
                    decision.latency += (fault.value or 0) + (fault.rng.uniform(0, jitter) if jitter else 0)
                    self.injected["latency"] += 1
                elif fault.kind == "reset" and not decision.reset and decision.status is None and fault.fire():
                    decision.reset = True
                    self.injected["reset"] += 1
                elif fault.kind == "status" and decision.status is None and not decision.reset and fault.fire():
                    status = int(fault.value or 500)
                    decision.status = status
                    decision.code = _STATUS_CODES.get(status, "InjectedFault")
                    decision.message = f"Injected fault: HTTP {status}"
                    if status in (429, 503):
                        decision.retry_after = float(fault.options.get("retry-after", 1))
                    self.injected[f"status-{status}"] += 1
        return decision

    def auth_expired(self, method: str, path: str) -> bool:
        now = self._clock()
        with self._lock:
            for fault in self._faults:
                if fault.kind == "auth-expired" and self._active(fault, now) and fault.matches(method, path):
                    fault.injected += 1
                    self.injected["auth-expired"] += 1
                    return True
        return False

    def sas_early(self) -> float:
        with self._lock:
            values = [f.value or 0.0 for f in self._faults if f.kind == "sas-early"]
        return max(values, default=0.0)

    def op_failure(self, method: str, path: str) -> tuple[str, str] | None:
        """Whether the operation created by this write should end Failed, and with which (code, message)."""
        with self._lock:
            for fault in self._faults:
                if fault.kind == "op-fail" and fault.matches(method, path) and fault.fire():
                    self.injected["op-fail"] += 1
                    code = fault.options.get("code", "InternalError")
                    message = fault.options.get("message", f"Injected operation failure ({code})")
                    return code, message
        return None
