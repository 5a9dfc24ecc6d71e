"""Operation watcher: every in-flight GeoCatalog operation of a collection resolved by one list read per tick.

Polling each operation with its own ``GET /inma/operations/{id}`` costs one call per operation per poll, from
the ~50 calls/s the subscription has for every pod. The service also lists operations:
``GET /inma/operations?collectionId=<c>&$top=<n>`` answers newest ``creationTime`` first, each entry the full
Operation, the same shape as the single GET, ``error`` included (/work/shared/research/geocatalog_recordings.md
item 15; ``$top``/``$skip``/``collectionId``/``status`` in geocatalog_api.md). So this process reads the page of
a collection once per tick and resolves every operation of its own it finds there.

- **One loop thread per collection** with waiters, started on the first wait and ended after ``idle_exit``
  seconds without one. A tick happens when the earliest waiter is due, never sooner than ``min_interval`` after
  the collection's previous tick: under load a collection costs at most 1 / ``min_interval`` calls per second
  however many operations are in flight, and every operation is seen within ``min_interval`` of ending. With a
  ``rate_limiter`` (this process's share of the budget) the interval also stays at or above
  collections / (``read_share`` x its rate): the reads of all collections together take at most ``read_share``
  of the budget, next to the ingest POSTs' ``write_share`` (``worker.processing.batching``).
- **Due times** follow the recorded durations per operation type (``SCHEDULES``; item 14 of the recordings:
  AddItem ~6.9 s of which Pending 2.3 s, UpdateItem ~2.5 s, DeleteItem ~0.8 s, failures back in 0.7-1.6 s),
  clamped to each waiter's deadline. A ``Retry-After`` on an operation pushes its due time back.
- **Learned first reads**: the service stamps each terminal item operation with ``creationTime`` and
  ``finishTime``; the watcher keeps the last ``learn_window`` such durations per type and outcome, and an
  operation's first reads are due at the shortest recent failure and the shortest recent success (plus
  ``learn_margin``), followed by the static offsets after them. Operations that take 0 s are read at the next
  tick instead of after 1 s, and 2 s ones once at 2 s instead of at 1.0, 1.6 and 2.2 s; a faster operation
  lowers the minimum at once, a slower one only costs the reads the static schedule has after it.
- **Page size** ``$top``: at least ``page_min``, twice this process's waiters and twice the deepest position at
  which one was last found (other pods' and other writers' newer operations come first), at most ``page_max``.
  A due operation not on the page is looked for on up to ``max_pages`` pages, then read by id (``GET
  /inma/operations/{id}``). When the list itself fails, the due operations are read by id for that tick; when
  it is refused for good (400/403/404), this collection is read by id from then on.
- **Same contract as** ``GeoCatalogClient.wait_for_operation``: ``Cancelled`` when ``cancel`` is set (checked
  every ``cancel_check`` seconds by the loop, so blocked callers do not wake on timers themselves),
  ``OperationTimeout`` when the operation is still running at a read at or past the deadline, a read error
  raised to the waiter whose read failed, the terminal Operation stamped with ``submitted_at``.

An operation without ``collection_id`` (a 202 body without it) is polled on its own by the client.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from worker import tracing
from worker.adapters.geocatalog.client import (
    GeoCatalogError,
    Operation,
    OperationTimeout,
    operation_finished,
)
from worker.adapters.ratelimit import RateLimiter
from worker.domain.errors import Cancelled, ErrorKind
from worker.observability.metrics import Metrics

__all__ = ["SCHEDULES", "OperationSource", "OperationWatcher", "PollSchedule"]

log = structlog.get_logger(__name__)


class OperationSource(Protocol):
    """The part of ``GeoCatalogClient`` the watcher reads operations with."""

    def list_operations(
        self, collection: str, *, top: int, skip: int = 0, cancel: threading.Event | None = None
    ) -> tuple[list[Operation], bool]: ...

    def get_operation(self, operation_id: str, *, cancel: threading.Event | None = None) -> Operation: ...

    def wait_for_operation(
        self, op: Operation, *, deadline: float, cancel: threading.Event | None = None
    ) -> Operation: ...


@dataclass(frozen=True)
class PollSchedule:
    """When an operation is due for a read: ``offsets`` seconds after its submission, then every interval
    growing x ``factor`` from the last gap up to ``max_interval``."""

    offsets: tuple[float, ...]
    factor: float = 1.2
    max_interval: float = 5.0

    def __post_init__(self) -> None:
        if len(self.offsets) < 2 or any(b <= a for a, b in zip(self.offsets, self.offsets[1:], strict=False)):
            raise ValueError("PollSchedule.offsets: at least two, strictly increasing")

    def next_after(self, elapsed: float) -> float:
        """The first due offset (seconds since submission) later than ``elapsed``."""
        for offset in self.offsets:
            if offset > elapsed:
                return offset
        t, gap = self.offsets[-1], self.offsets[-1] - self.offsets[-2]
        while t <= elapsed:
            gap = min(self.max_interval, gap * self.factor)
            t += gap
        return t

    def learned(self, firsts: Iterable[float], margin: float) -> PollSchedule:
        """This schedule with its first reads at ``firsts`` (+ ``margin``), then its offsets after the last."""
        heads: list[float] = []
        for f in sorted(firsts):
            if not heads or f + margin > heads[-1]:
                heads.append(f + margin)
        if not heads:
            return self
        offsets = [*heads, *(o for o in self.offsets if o > heads[-1])]
        if len(offsets) < 2:
            offsets.append(offsets[-1] + self.offsets[-1] - self.offsets[-2])
        return PollSchedule(tuple(offsets), self.factor, self.max_interval)


# Fitted to the recorded durations (geocatalog_recordings.md item 14): a first read where failures end
# (0.7-1.6 s), then about one read per 0.6-1 s through the window where successes end.
SCHEDULES: Mapping[str, PollSchedule] = {
    "AddItem": PollSchedule((1.0, 1.6, 2.2, 3.0, 4.0, 5.0, 5.7, 6.4, 7.1, 7.8, 8.5)),
    "UpdateItem": PollSchedule((0.8, 1.6, 2.2, 2.7, 3.3, 4.0, 5.0)),
    "DeleteItem": PollSchedule((0.5, 0.9, 1.3, 1.8, 2.5, 3.5)),
}
DEFAULT_SCHEDULE = PollSchedule((1.0, 2.2, 3.6, 5.4, 7.4))  # other types: the client's own schedule

_REFUSED = (400, 403, 404, 405, 501)  # the list read is not available here: read by id from now on


@dataclass(eq=False)
class _Waiter:
    op: Operation
    submitted: float
    deadline: float
    cancel: threading.Event | None
    due: float
    polls: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    result: Operation | None = None
    error: BaseException | None = None
    trace: tracing.TraceContext | None = field(default_factory=tracing.current_context)  # the waiting batch's


class OperationWatcher:
    """Thread-safe; ``wait_for_operation`` blocks the caller until its operation is terminal (see module doc)."""

    def __init__(
        self,
        client: OperationSource,
        *,
        min_interval: float = 0.25,
        page_min: int = 32,
        page_max: int = 1000,
        max_pages: int = 3,
        schedules: Mapping[str, PollSchedule] = SCHEDULES,
        rate_limiter: RateLimiter | None = None,
        read_share: float = 0.15,
        metrics: Metrics | None = None,
        cancel_check: float = 0.1,
        idle_exit: float = 30.0,
        learn_window: int = 64,
        learn_margin: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min_interval < 0 or page_min < 1 or page_max < page_min or max_pages < 1 or not 0 < read_share <= 1:
            raise ValueError(
                "OperationWatcher: min_interval ≥ 0, 1 ≤ page_min ≤ page_max, max_pages ≥ 1, 0 < read_share ≤ 1"
            )
        self.client = client
        self.min_interval = min_interval
        self.page_min = page_min
        self.page_max = page_max
        self.max_pages = max_pages
        self.schedules = schedules
        self.rate_limiter = rate_limiter
        self.read_share = read_share
        self.metrics = metrics
        self.cancel_check = cancel_check
        self.idle_exit = idle_exit
        self._clock = clock
        self._lock = threading.Lock()
        self._loops: dict[str, _CollectionLoop] = {}
        self._stop = threading.Event()
        self.stats = {"list_reads": 0, "id_reads": 0, "resolved": 0}
        self.learn_window = learn_window  # 0: the static schedules only
        self.learn_margin = learn_margin
        self._learn_lock = threading.Lock()
        self._recent: dict[tuple[str, bool], deque[float]] = {}  # (type, succeeded) → recent server durations
        self._learned: dict[str, tuple[tuple[float, ...], PollSchedule]] = {}  # type → (firsts, schedule)

    def schedule(self, op: Operation) -> PollSchedule:
        learned = self._learned.get(op.type or "")
        if learned is not None:
            return learned[1]
        return self.schedules.get(op.type or "", DEFAULT_SCHEDULE)

    def _observe(self, op: Operation) -> None:
        """Learn from a terminal operation how long the service takes (see "Learned first reads")."""
        seconds = op.server_seconds if self.learn_window > 0 else None
        if seconds is None:
            return
        kind = op.type or ""
        with self._learn_lock:
            recent = self._recent.setdefault((kind, op.succeeded), deque(maxlen=self.learn_window))
            recent.append(seconds)
            firsts = tuple(sorted(round(min(xs), 2) for (k, _), xs in self._recent.items() if k == kind))
            known = self._learned.get(kind)
            if known is None or known[0] != firsts:
                base = self.schedules.get(kind, DEFAULT_SCHEDULE)
                self._learned[kind] = (firsts, base.learned(firsts, self.learn_margin))

    def wait_for_operation(self, op: Operation, *, deadline: float, cancel: threading.Event | None = None) -> Operation:
        """As ``GeoCatalogClient.wait_for_operation``: poll ``op`` until terminal; ``deadline`` is monotonic."""
        now = self._clock()
        submitted = op.submitted_at if op.submitted_at is not None else now
        if op.terminal:
            return operation_finished(op, submitted, 0, self.metrics)
        if op.collection_id is None:
            return self.client.wait_for_operation(op, deadline=deadline, cancel=cancel)
        if self._stop.is_set() or (cancel is not None and cancel.is_set()):
            raise Cancelled(f"cancelled while waiting for operation {op.id}")
        if now >= deadline:
            raise OperationTimeout(
                f"operation {op.id} still {op.status} after {now - submitted:.1f}s (0 polls)", retry_after=1.0
            )
        waiter = _Waiter(op, submitted, deadline, cancel, due=self._next_due(op, submitted, deadline, now))
        with self._lock:
            loop = self._loops.get(op.collection_id)
            if loop is None:
                loop = self._loops[op.collection_id] = _CollectionLoop(self, op.collection_id)
                loop.start()
            loop.add(waiter)
        waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        assert waiter.result is not None
        return waiter.result

    def close(self) -> None:
        """Wake every waiter with ``Cancelled`` and end the loops."""
        self._stop.set()
        with self._lock:
            loops = list(self._loops.values())
        for loop in loops:
            loop.wake()
        for loop in loops:
            loop.join(timeout=5.0)

    def __enter__(self) -> OperationWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- used by the loops

    def _next_due(self, op: Operation, submitted: float, deadline: float, now: float) -> float:
        due = submitted + self.schedule(op).next_after(now - submitted)
        if op.retry_after is not None:
            due = max(due, now + op.retry_after)
        return min(due, deadline)

    def _interval(self) -> float:
        """The least time between two ticks of one collection."""
        if self.rate_limiter is None:
            return self.min_interval
        return max(self.min_interval, len(self._loops) / (self.read_share * self.rate_limiter.rate))

    def _forget(self, loop: _CollectionLoop) -> bool:
        """Called by an idle loop: remove it unless a waiter arrived meanwhile (then it keeps running)."""
        with self._lock, loop.cond:
            if loop.waiters and not self._stop.is_set():
                return False
            if self._loops.get(loop.collection) is loop:
                del self._loops[loop.collection]
            return True


class _CollectionLoop(threading.Thread):
    def __init__(self, watcher: OperationWatcher, collection: str) -> None:
        super().__init__(name=f"gcw-ops-{collection[:40]}", daemon=True)
        self.w = watcher
        self.collection = collection
        self.cond = threading.Condition()
        self.waiters: dict[str, list[_Waiter]] = {}  # operation id → waiters (two callers may share one)
        self.last_tick = float("-inf")
        self.depth = 0  # deepest position (1-based) at which one of ours was found on the last page
        self.listing = True

    def add(self, waiter: _Waiter) -> None:
        with self.cond:
            self.waiters.setdefault(waiter.op.id, []).append(waiter)
            self.cond.notify()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify()

    # -- the loop

    def run(self) -> None:
        w = self.w
        idle_since = w._clock()
        while True:
            with self.cond:
                if w._stop.is_set():
                    self._end_all(lambda x: Cancelled(f"watcher closed while waiting for operation {x.op.id}"))
                    break
                self._drop_cancelled()
                now = w._clock()
                if not self.waiters:
                    if now - idle_since >= w.idle_exit:
                        pass  # leave the lock, then ask the watcher (lock order: watcher, then loop)
                    else:
                        self.cond.wait(w.idle_exit - (now - idle_since))
                        continue
                else:
                    idle_since = now
                    due_at = max(min(x.due for xs in self.waiters.values() for x in xs), self.last_tick + w._interval())
                    if now < due_at:
                        self.cond.wait(min(due_at - now, w.cancel_check))
                        continue
                    due = {i: xs[0].op for i, xs in self.waiters.items() if any(x.due <= now for x in xs)}
            if not self.waiters:
                if w._forget(self):
                    return
                continue
            self.last_tick = now
            try:
                with self.cond:
                    contexts = [x.trace for op_id in due for x in self.waiters.get(op_id, ())]
                with tracing.watch_span(self.collection, contexts):
                    self._tick(due)
            except Exception:  # a bug must not leave callers waiting forever
                log.exception("operation_watcher_tick_crashed", collection=self.collection)
                with self.cond:
                    self._end_all(
                        lambda x: GeoCatalogError(
                            f"internal error while waiting for operation {x.op.id}",
                            code="InternalError",
                            kind=ErrorKind.TRANSIENT,
                        ),
                        only=set(due),
                    )

    def _drop_cancelled(self) -> None:
        for op_id, xs in list(self.waiters.items()):
            for x in [x for x in xs if x.cancel is not None and x.cancel.is_set()]:
                self._end(op_id, x, error=Cancelled(f"cancelled while waiting for operation {op_id}"))

    def _end(
        self, op_id: str, x: _Waiter, *, result: Operation | None = None, error: BaseException | None = None
    ) -> None:
        xs = self.waiters.get(op_id, [])
        if x in xs:
            xs.remove(x)
            if not xs:
                del self.waiters[op_id]
        x.result, x.error = result, error
        x.done.set()

    def _end_all(self, error: Callable[[_Waiter], BaseException], only: set[str] | None = None) -> None:
        for op_id, xs in list(self.waiters.items()):
            if only is None or op_id in only:
                for x in list(xs):
                    self._end(op_id, x, error=error(x))

    # -- one tick

    def _tick(self, due: dict[str, Operation]) -> None:
        w = self.w
        seen: dict[str, Operation] = {}
        if self.listing:
            seen = self._read_pages(set(due))
        missing = [op_id for op_id in due if op_id not in seen]
        failed: dict[str, BaseException] = {}
        for op_id in missing:
            try:
                seen[op_id] = w.client.get_operation(op_id, cancel=w._stop)
                w.stats["id_reads"] += 1
            except GeoCatalogError as exc:
                failed[op_id] = exc
        now = w._clock()
        with self.cond:
            for op_id, exc in failed.items():
                for x in list(self.waiters.get(op_id, [])):
                    self._end(op_id, x, error=exc)
            for op_id, op in seen.items():
                for x in list(self.waiters.get(op_id, [])):
                    self._update(op_id, x, op, now, read=op_id in due)

    def _read_pages(self, wanted: set[str]) -> dict[str, Operation]:
        w = self.w
        with self.cond:
            mine = {op_id for op_id in self.waiters}
        top = min(w.page_max, max(w.page_min, 2 * len(mine), 2 * self.depth))
        seen: dict[str, Operation] = {}
        depth = 0
        try:
            for page in range(w.max_pages):
                ops, more = w.client.list_operations(self.collection, top=top, skip=page * top, cancel=w._stop)
                w.stats["list_reads"] += 1
                for i, op in enumerate(ops):
                    if op.id in mine:
                        seen[op.id] = op
                        depth = page * top + i + 1
                if not more or wanted <= seen.keys():
                    break
        except GeoCatalogError as exc:
            if exc.status in _REFUSED:
                self.listing = False
                log.warning(
                    "operation_list_unavailable",
                    collection=self.collection,
                    status=exc.status,
                    code=exc.code,
                    fallback="GET /inma/operations/{operationId} per operation",
                )
            else:
                log.info("operation_list_failed", collection=self.collection, status=exc.status, code=exc.code)
            return seen
        self.depth = depth
        return seen

    def _update(self, op_id: str, x: _Waiter, op: Operation, now: float, *, read: bool) -> None:
        if read:
            x.polls += 1
        if op.terminal:
            self.w.stats["resolved"] += 1
            self.w._observe(op)
            self._end(op_id, x, result=operation_finished(op, x.submitted, x.polls, self.w.metrics))
            return
        if op.status != x.op.status:
            log.debug("geocatalog_operation_status", operation_id=op_id, status=op.status, polls=x.polls)
        x.op = dataclasses.replace(op, submitted_at=x.submitted)
        if not read:
            return
        if now >= x.deadline:
            gap = self.w.schedule(op).next_after(now - x.submitted) - (now - x.submitted)
            self._end(
                op_id,
                x,
                error=OperationTimeout(
                    f"operation {op_id} still {op.status} after {now - x.submitted:.1f}s ({x.polls} polls)",
                    retry_after=max(1.0, gap),
                ),
            )
            return
        x.due = self.w._next_due(op, x.submitted, x.deadline, now)
