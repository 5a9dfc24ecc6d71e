"""Merging concurrent ingest requests per collection into one ItemCollection POST, and resolving failures.

The GeoCatalog budget (~50 STAC API calls/s per subscription, shared by every pod) is the real limit, so the
figure to minimise is calls per item. ``Batcher.submit`` is called by many request threads at once; submissions
for the same ``(collection, mode)`` that arrive within ``linger`` seconds are merged into one POST (bounded by
``max_items`` and ``max_bytes``), and ONE poll loop waits for the merged operation on a flush thread. Callers
block on an event and honour their ``cancel`` event.

When the budget is the bottleneck, batches grow instead of POSTs queueing (docs/benchmarks.md): ingest POSTs
start at most at ``write_share`` of the client's current rate-limiter rate (a batch that is not full waits for
its slot with the batch still open), and while POSTs wait for a slot, or the limiter has a queue, a batch may
grow from ``max_items`` up to ``max_items_backlog`` (the emulator's limit is 1,000 per POST; the service
documents none, and a ``PostItemCollectionSizeExceeded`` lowers the cap to half the rejected size).

When a merged operation fails, every submission must still get its own exact outcome. The emulator (and
possibly the service) applies the items of an ItemCollection individually: a failed batch may have ingested
some of its items, so blindly re-submitting would report "already exists" for items our own batch just wrote.
Resolution of a failed multi-item operation therefore goes:

1. Transient failure (5xx/throttling/network after the client's retries, operation timeout, an operation that
   failed with a transient code such as ``InternalError``) → every item gets that transient error; the
   processor retries the request later. Nothing is bisected.
2. Synchronous rejection (400) or a whole-operation failure (a code other than the per-item ones): nothing was
   applied, so the group is bisected: first split into its member submissions, then a failing multi-item
   submission is split in halves, recursively (depth ≤ log2(max_items) + 1).
3. Per-item failure (``ErrorsInBatchOperation``/``ItemAlreadyExistsInCollection``, or counts showing some items
   failed): *probe* each item with a GET (reads, in parallel). Present and equal to what we sent → succeeded
   (our batch wrote it, or an identical copy was already there: in upsert mode that is the desired state, with
   no write at all). Present but different → it pre-existed: upsert replaces it with PUT, create fails it with
   ``ItemAlreadyExistsInCollection``. Absent → it failed for its own reason: re-POST it alone to learn its exact
   error (or bisect the absent ones when the operation's counts show it stopped part-way).

Create mode and our own writes: an item that exists only because our own failed batch created it must not be
reported as a conflict. After a probe, ``TotalFailedItems`` tells how many present items pre-existed; when that
is zero every present item is ours, when it equals the number of present items every one is a conflict, and in
between the content comparison decides (an identical pre-existing item then counts as ours: the catalog holds
exactly what was asked for). ``trust_identical=True`` (the processor sets it on redeliveries) applies the same
content rule to a single create that finds its item already there, since an earlier attempt may have written it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

import structlog

from worker import tracing
from worker.adapters.geocatalog.client import Conflict, EncodedItems, Operation, encode_item
from worker.adapters.ratelimit import RateLimiter
from worker.domain.errors import Cancelled, ErrorKind, PermanentError, TransientError, WorkerError
from worker.domain.secrets import redact
from worker.domain.stored import same_content

log = structlog.get_logger(__name__)

Mode = Literal["upsert", "create"]
T = TypeVar("T")
R = TypeVar("R")

ALREADY_EXISTS = "ItemAlreadyExistsInCollection"
ERRORS_IN_BATCH = "ErrorsInBatchOperation"
SIZE_EXCEEDED = "PostItemCollectionSizeExceeded"
# Operation error codes that mean "try again later", not "this item is bad".
TRANSIENT_OPERATION_CODES = frozenset(
    {
        "InternalError",
        "InternalIntermitentError",  # sic, as the service spells it
        "InternalIntermittentError",
        "CogTransformationTimeout",
        "IngestionResourceTimeout",
        "IngestionResourceConnectionFailed",
        "OperationTimeout",
        "CanceledOperation",
        "OperationIsCanceled",
        "ServiceUnavailable",
        "TooManyRequests",
        "Throttled",
    }
)
_PER_ITEM_CODES = frozenset({ERRORS_IN_BATCH, ALREADY_EXISTS})


CANCEL_CHECK_SECONDS = 0.05  # how often the cancel watcher looks at the cancel events of blocked submit() calls


class OperationFailed(PermanentError):
    """A GeoCatalog operation ended Failed/Canceled; ``code`` is the service's error code. Build it with
    ``operation_failure``, which picks ``TransientOperationFailure`` for the codes worth retrying."""

    code = "OperationFailed"

    def __init__(self, code: str | None, message: str | None, *, operation_id: str | None = None) -> None:
        code = code or "OperationFailed"
        text = redact(message or f"operation ended with {code}")
        if operation_id:
            text = f"{text} (operation {operation_id})"
        super().__init__(text, code=code)
        self.operation_id = operation_id


class TransientOperationFailure(TransientError, OperationFailed):
    """An operation that ended with a transient code (``InternalError``, a timeout, ``CanceledOperation``)."""


def operation_failure(code: str | None, message: str | None, *, operation_id: str | None = None) -> OperationFailed:
    """The failure of an operation that ended with ``code``, of the class its kind needs."""
    cls = TransientOperationFailure if classify_operation_code(code) is ErrorKind.TRANSIENT else OperationFailed
    return cls(code, message, operation_id=operation_id)


def classify_operation_code(code: str | None) -> ErrorKind:
    """The kind of a failed operation's error code: transient codes retry, the rest is the item's answer."""
    if code in TRANSIENT_OPERATION_CODES:
        return ErrorKind.TRANSIENT
    return ErrorKind.PERMANENT


class OperationWaiter(Protocol):
    """Waits for an operation to end: ``GeoCatalogClient`` (one GET per operation per poll) or
    ``worker.adapters.geocatalog.watcher.OperationWatcher`` (one list read per collection per tick)."""

    def wait_for_operation(
        self, op: Operation, *, deadline: float, cancel: threading.Event | None = None
    ) -> Operation: ...


class CatalogClient(Protocol):
    """The part of ``worker.adapters.geocatalog.client.GeoCatalogClient`` the batcher uses."""

    def create_items(
        self, collection: str, items: EncodedItems, *, cancel: threading.Event | None = None
    ) -> Operation: ...
    def replace_item(self, collection: str, item: dict, *, cancel: threading.Event | None = None) -> Operation: ...
    def get_item(self, collection: str, item_id: str, *, cancel: threading.Event | None = None) -> dict | None: ...
    def wait_for_operation(
        self, op: Operation, *, deadline: float, cancel: threading.Event | None = None
    ) -> Operation: ...


@dataclass(frozen=True)
class BatchSettings:
    max_items: int = 100  # items per merged POST
    max_bytes: int = 4 * 1024 * 1024  # serialized item bytes per merged POST
    linger: float = 0.03  # seconds a new batch waits for more submissions
    operation_timeout: float = 600.0  # deadline of each poll loop
    probe_concurrency: int = 8  # parallel GETs / single re-submits while resolving a failure
    max_flushes: int = 64  # flush threads (batches in flight at once; 32 capped 2 s operations at ~14 POSTs/s)
    budget_linger_max: float = 2.0  # while the client's rate limiter is backed up, keep a batch open up to this
    max_items_backlog: int = 1000  # items per POST while the budget is the bottleneck (the emulator's limit)
    write_share: float = 0.3  # share of the limiter's rate that ingest POSTs may start at (the rest: reads)

    def __post_init__(self) -> None:
        if self.max_items < 1 or self.max_bytes < 1 or self.linger < 0 or self.operation_timeout <= 0:
            raise ValueError("BatchSettings: max_items/max_bytes ≥ 1, linger ≥ 0, operation_timeout > 0")
        if not 0 < self.write_share <= 1:
            raise ValueError("BatchSettings: 0 < write_share ≤ 1")


@dataclass(frozen=True)
class OpRecord:
    id: str
    status: str


@dataclass
class ItemResult:
    id: str
    succeeded: bool
    error: WorkerError | None = None


@dataclass
class SubmitResult:
    items: list[ItemResult]  # in submission order
    operations: list[OpRecord]  # every operation that touched this submission's items, first seen first

    @property
    def all_succeeded(self) -> bool:
        return all(i.succeeded for i in self.items)


# ------------------------------------------------------------------------------------------ internals


@dataclass(eq=False)
class _Entry:
    sub: _Submission
    item: dict
    encoded: bytes  # the item's JSON, encoded once: its size here, its part of the POST body (``EncodedItems``)
    result: ItemResult | None = None

    @property
    def size(self) -> int:
        return len(self.encoded)

    @property
    def id(self) -> str:
        return str(self.item.get("id"))


@dataclass(eq=False)
class _Submission:
    request_id: str
    trust_identical: bool
    entries: list[_Entry] = field(default_factory=list)
    remaining: int = 0  # entries without an outcome yet (guarded by Batcher._lock)
    batches: list[_Batch] = field(default_factory=list)
    ops: dict[str, str] = field(default_factory=dict)
    # set once by the flush that answers the last entry, then ``done``; ``done`` is also set to wake a cancelled
    # caller (an Event, not a Future: one lock and condition per request fewer)
    result: SubmitResult | None = None
    done: threading.Event = field(default_factory=threading.Event)
    trace: tracing.TraceContext | None = field(default_factory=tracing.current_context)  # the submitting request's


@dataclass(eq=False)
class _Batch:
    """Entries bound for one POST; a large submission spans several batches."""

    collection: str
    mode: Mode
    entries: list[_Entry] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    n_bytes: int = 0
    closed: bool = False
    full: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class _Counts:
    total: int
    successful: int
    failed: int
    pending: int


def _counts(op: Operation) -> _Counts | None:
    info = op.additional_information or {}
    try:
        return _Counts(
            int(info["TotalItems"]),
            int(info["TotalSuccessfulItems"]),
            int(info["TotalFailedItems"]),
            int(info.get("TotalPendingItems", 0)),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _named_failures(op: Operation, entries: list[_Entry], counts: _Counts | None) -> dict[str, str] | None:
    """``{item id: code}`` when the failed operation's message names exactly ``TotalFailedItems`` of our items.

    The emulator lists ``id: Code`` pairs in its ``ErrorsInBatchOperation`` message; the real service's format is
    not documented, so this is only a shortcut: whenever the names do not add up, the caller probes instead.
    """
    message = op.error_message or ""
    if counts is None or counts.pending or counts.total != len(entries) or not counts.failed or not message:
        return None
    found: dict[str, str] = {}
    for e in entries:
        m = re.search(r"(?<![\w.+,()-])'?" + re.escape(e.id) + r"'?: ([A-Za-z]+)", message)
        if m:
            found[e.id] = m.group(1)
    return found if len(found) == counts.failed else None


def parallel_map(fn: Callable[[T], R], xs: Sequence[T], max_workers: int) -> list[R]:
    """``[fn(x) for x in xs]`` on up to ``max_workers`` short-lived threads (a fresh pool: no nested deadlock)."""
    if len(xs) <= 1 or max_workers <= 1:
        return [fn(x) for x in xs]
    with ThreadPoolExecutor(max_workers=min(max_workers, len(xs)), thread_name_prefix="gcw-resolve") as pool:
        return list(pool.map(tracing.carry_context(fn), xs))


class _Resolution:
    """Resolving one closed batch: submit, wait, and on failure split/probe until every entry has a result."""

    def __init__(
        self,
        client: CatalogClient,
        settings: BatchSettings,
        batch: _Batch,
        *,
        operations: OperationWaiter,
        ops_lock: threading.Lock,
        stop: threading.Event,
        lower_cap: Callable[[int], None],
    ) -> None:
        self.client = client
        self.operations = operations
        self.lower_cap = lower_cap  # a POST of this many items was too large for the service
        self.settings = settings
        self.collection = batch.collection
        self.mode = batch.mode
        self.lock = ops_lock  # shared: a large submission's entries may be resolved by several batches
        self.cancel = stop  # the batcher closing: every call of the resolution gives up
        self.posts = 0

    # -- recording

    def _record_op(self, entries: Iterable[_Entry], op: Operation) -> None:
        with self.lock:
            for e in entries:
                e.sub.ops[op.id] = op.status

    def _ok(self, entry: _Entry) -> None:
        entry.result = ItemResult(entry.id, True)

    def _fail(self, entries: Iterable[_Entry], error: WorkerError) -> None:
        for e in entries:
            e.result = ItemResult(e.id, False, error)

    # -- calls

    def _deadline(self) -> float:
        return time.monotonic() + self.settings.operation_timeout

    def _wait(self, op: Operation) -> Operation:
        if op.terminal:
            return op
        return self.operations.wait_for_operation(op, deadline=self._deadline(), cancel=self.cancel)

    def _post(self, entries: list[_Entry]) -> Operation:
        with self.lock:
            self.posts += 1
        items = EncodedItems([e.item for e in entries], [e.encoded for e in entries])
        op = self.client.create_items(self.collection, items, cancel=self.cancel)
        self._record_op(entries, op)
        op = self._wait(op)
        self._record_op(entries, op)
        return op

    # -- the algorithm

    def resolve(self, entries: list[_Entry], *, depth: int = 0) -> None:
        try:
            op = self._post(entries)
        except Conflict as e:
            # A synchronous 409: like the asynchronous ItemAlreadyExistsInCollection, but nothing was applied.
            if len(entries) == 1:
                self._single_failure(entries[0], operation_failure(ALREADY_EXISTS, e.message), possibly_ours=False)
            else:
                self._split(entries, depth)
            return
        except WorkerError as e:
            if e.kind is ErrorKind.INVALID and len(entries) > 1 and e.code == SIZE_EXCEEDED:
                # Too many items for one POST (nothing applied): halves, and later batches stay below this size.
                self.lower_cap(len(entries))
                mid = len(entries) // 2
                halves = [entries[:mid], entries[mid:]]
                parallel_map(lambda p: self.resolve(p, depth=depth + 1), halves, self.settings.probe_concurrency)
            elif e.kind is ErrorKind.INVALID and len(entries) > 1:
                # A synchronous rejection applied nothing: bisect to find the item(s) it is about.
                self._split(entries, depth)
            else:
                self._fail(entries, e)
            return
        if op.succeeded:
            for e in entries:
                self._ok(e)
            return
        error = operation_failure(op.error_code, op.error_message, operation_id=op.id)
        log.info(
            "batch_operation_failed",
            collection=self.collection,
            operation_id=op.id,
            error_code=op.error_code,
            items=len(entries),
            depth=depth,
        )
        if error.kind is ErrorKind.TRANSIENT:
            self._fail(entries, error)
        elif len(entries) == 1:
            self._single_failure(entries[0], error, possibly_ours=False)
        else:
            counts = _counts(op)
            per_item = op.error_code in _PER_ITEM_CODES or (counts is not None and 0 < counts.failed < counts.total)
            if not per_item:
                self._split(entries, depth)
                return
            named = _named_failures(op, entries, counts)
            if named is not None:
                self._resolve_named(entries, named, depth)
                return
            absent = self._probe(entries, counts)
            if not absent:
                return
            if counts is not None and counts.pending == 0:
                # Every absent item failed on its own: one POST each tells its exact error.
                parallel_map(lambda e: self.resolve([e], depth=depth + 1), absent, self.settings.probe_concurrency)
            else:
                self._split(absent, depth)

    def _resolve_named(self, entries: list[_Entry], named: dict[str, str], depth: int) -> None:
        """The operation's message named exactly the failed items: the others were applied, no probe needed."""
        exists = [e for e in entries if named.get(e.id) == ALREADY_EXISTS]
        others = [e for e in entries if e.id in named and named[e.id] != ALREADY_EXISTS]
        for e in entries:
            if e.id not in named:
                self._ok(e)
        if self.mode == "upsert" and exists:
            again = self._probe(exists, None)  # identical → done; different → PUT
            others.extend(again)  # vanished since (a race): re-POST
        for e in exists if self.mode == "create" else ():
            self._single_failure(e, self._conflict(e), possibly_ours=False)
        # One POST each tells the exact error message (the batch message has only the code).
        parallel_map(lambda e: self.resolve([e], depth=depth + 1), others, self.settings.probe_concurrency)

    def _split(self, entries: list[_Entry], depth: int) -> None:
        """Member submissions separately; a single submission's items in halves."""
        groups: dict[int, list[_Entry]] = {}
        for e in entries:
            groups.setdefault(id(e.sub), []).append(e)
        if len(groups) > 1:
            parts = list(groups.values())
        elif len(entries) > 1:
            mid = len(entries) // 2
            parts = [entries[:mid], entries[mid:]]
        else:
            parts = [entries]
        parallel_map(lambda p: self.resolve(p, depth=depth + 1), parts, self.settings.probe_concurrency)

    def _probe(self, entries: list[_Entry], counts: _Counts | None) -> list[_Entry]:
        """GET each item after a failed per-item operation; resolve present ones, return the absent ones."""

        def get(e: _Entry) -> tuple[_Entry, dict | None, WorkerError | None]:
            try:
                return e, self.client.get_item(self.collection, e.id, cancel=self.cancel), None
            except WorkerError as err:
                return e, None, err

        seen = parallel_map(get, entries, self.settings.probe_concurrency)
        absent = [e for e, stored, err in seen if stored is None and err is None]
        present = [(e, stored) for e, stored, err in seen if stored is not None]
        for e, _, err in seen:
            if err is not None:
                self._fail([e], err)
        # How many present items pre-existed (failed in the op) rather than being written by it.
        pre_existing = None if counts is None else max(0, counts.failed - len(absent))
        to_put: list[_Entry] = []
        for e, stored in present:
            assert stored is not None
            if self.mode == "upsert":
                if same_content(stored, e.item):
                    self._ok(e)
                else:
                    to_put.append(e)
            elif pre_existing == 0:
                self._ok(e)  # every present item was written by our own operation
            elif e.sub.trust_identical and same_content(stored, e.item):
                self._ok(e)  # a retry: an earlier attempt of this request wrote it
            elif pre_existing is not None and pre_existing >= len(present):
                self._fail([e], self._conflict(e))
            elif same_content(stored, e.item):
                self._ok(e)  # ours, or an identical copy: the catalog holds what was asked for
            else:
                self._fail([e], self._conflict(e))
        if to_put:
            parallel_map(self._put, to_put, self.settings.probe_concurrency)
        return absent

    def _conflict(self, e: _Entry) -> OperationFailed:
        return operation_failure(ALREADY_EXISTS, f"Item '{e.id}' already exists in collection '{self.collection}'")

    def _single_failure(self, e: _Entry, error: OperationFailed, *, possibly_ours: bool) -> None:
        if error.code != ALREADY_EXISTS:
            self._fail([e], error)
        elif self.mode == "upsert":
            # Read before rewriting: an unchanged item (a redelivery, a replay) is not written (and its assets
            # not copied) a second time; a vanished one is created by the PUT.
            for gone in self._probe([e], None):
                self._put(gone)
        elif possibly_ours or e.sub.trust_identical:
            try:
                stored = self.client.get_item(self.collection, e.id, cancel=self.cancel)
            except WorkerError as err:
                self._fail([e], err)
                return
            if stored is not None and same_content(stored, e.item):
                self._ok(e)
            else:
                self._fail([e], error)
        else:
            self._fail([e], error)

    def _put(self, e: _Entry) -> None:
        try:
            op = self.client.replace_item(self.collection, e.item, cancel=self.cancel)
            self._record_op([e], op)
            op = self._wait(op)
            self._record_op([e], op)
        except WorkerError as err:
            self._fail([e], err)
            return
        if op.succeeded:
            self._ok(e)
        else:
            self._fail([e], operation_failure(op.error_code, op.error_message, operation_id=op.id))


class Batcher:
    """Merges concurrent ``submit`` calls per (collection, mode) into shared POSTs; thread-safe."""

    def __init__(
        self, client: CatalogClient, settings: BatchSettings | None = None, *, operations: OperationWaiter | None = None
    ) -> None:
        self.client = client
        self.operations: OperationWaiter = operations or client
        self.settings = settings or BatchSettings()
        self._lock = threading.Lock()
        self._ops_lock = threading.Lock()
        self._open: dict[tuple[str, str], _Batch] = {}
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=self.settings.max_flushes, thread_name_prefix="gcw-batch")
        self.stats = {"batches": 0, "posts": 0, "submissions": 0}
        self._limiter: RateLimiter | None = getattr(client, "rate_limiter", None)
        self._next_write = 0.0  # monotonic time of the next ingest POST slot (guarded by _lock)
        self._cap = max(self.settings.max_items, self.settings.max_items_backlog)  # learned from size errors
        self._waiters_lock = threading.Lock()
        self._waiters: dict[int, tuple[threading.Event, threading.Event]] = {}
        self._watcher = threading.Thread(target=self._watch_cancels, name="gcw-batch-cancel", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        """Stop: in-flight poll loops end with ``Cancelled`` (their requests retry), no new batches start."""
        self._stop.set()
        with self._lock:
            for batch in self._open.values():
                batch.full.set()
        self._pool.shutdown(wait=True, cancel_futures=False)

    def __enter__(self) -> Batcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(
        self,
        collection: str,
        items: Sequence[dict],
        *,
        mode: Mode = "upsert",
        cancel: threading.Event | None = None,
        request_id: str = "",
        trust_identical: bool = False,
    ) -> SubmitResult:
        """Ingest ``items`` (already validated and signed); blocks until every item has an outcome.

        Raises ``Cancelled`` when ``cancel`` is set first (entries not yet sent are withdrawn; a batch already
        sent completes for the others and this caller just stops waiting).
        """
        if self._stop.is_set():
            raise Cancelled("batcher is closed")
        sub = _Submission(request_id=request_id, trust_identical=trust_identical)
        sub.entries = [_Entry(sub, item, encode_item(item)) for item in items]
        if not sub.entries:
            return SubmitResult([], [])
        sub.remaining = len(sub.entries)
        done = sub.done
        cancel = cancel or threading.Event()
        # The caller sleeps until its result or until the one cancel watcher wakes it: with hundreds of requests
        # in flight, a timed wait per caller was the worker's largest CPU cost (benchmarks: docs/benchmarks.md).
        with self._waiters_lock:
            self._waiters[id(sub)] = (cancel, done)
        if self._stop.is_set():  # closed after the check above, maybe after the watcher's last sweep
            done.set()
        try:
            self._enqueue(collection, mode, sub)
            done.wait()
        finally:
            with self._waiters_lock:
                self._waiters.pop(id(sub), None)
        result = sub.result
        if result is None:
            self._withdraw(sub)
            raise Cancelled(f"cancelled while waiting for the ingest of request {request_id}")
        return result

    def _watch_cancels(self) -> None:
        """One thread for every blocked ``submit``: wakes those whose cancel event is set, and all on close."""
        while not self._stop.wait(CANCEL_CHECK_SECONDS):
            with self._waiters_lock:
                waiters = list(self._waiters.values())
            for cancel, done in waiters:
                if cancel.is_set():
                    done.set()
        with self._waiters_lock:
            for _, done in self._waiters.values():
                done.set()

    def _withdraw(self, sub: _Submission) -> None:
        with self._lock:
            for batch in sub.batches:
                if not batch.closed:
                    mine = [e for e in batch.entries if e.sub is sub]
                    batch.entries = [e for e in batch.entries if e.sub is not sub]
                    batch.n_bytes -= sum(e.size for e in mine)
                    batch.ids.difference_update(e.id for e in mine)

    def _lower_cap(self, rejected: int) -> None:
        with self._lock:
            if rejected // 2 < self._cap:
                self._cap = max(1, rejected // 2)
                log.warning("batch_size_cap_lowered", items=self._cap, rejected=rejected, code=SIZE_EXCEEDED)

    def _item_limit_locked(self) -> int:
        """Items per POST: ``max_items``, or up to ``max_items_backlog`` while the budget is the bottleneck."""
        s = self.settings
        backed_up = time.monotonic() < self._next_write or (self._limiter is not None and self._limiter.delay() > 0)
        return min(self._cap, max(s.max_items, s.max_items_backlog) if backed_up else s.max_items)

    def _write_slot(self) -> float:
        """Reserve the next ingest POST slot at ``write_share`` of the limiter's rate; seconds until it."""
        if self._limiter is None:
            return 0.0
        interval = 1.0 / (self._limiter.rate * self.settings.write_share)
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_write)
            self._next_write = slot + interval
        return slot - now

    def _enqueue(self, collection: str, mode: Mode, sub: _Submission) -> None:
        key = (collection, mode)
        s = self.settings
        with self._lock:
            self.stats["submissions"] += 1
            max_items = self._item_limit_locked()
            for entry in sub.entries:
                batch = self._open.get(key)
                if (
                    batch is not None
                    and batch.entries
                    and (
                        len(batch.entries) + 1 > max_items
                        or batch.n_bytes + entry.size > s.max_bytes
                        or entry.id in batch.ids
                    )
                ):
                    # Does not fit (or would put one id twice in one POST): send the open batch, start another.
                    self._close_locked(batch)
                    batch = None
                if batch is None:
                    batch = _Batch(collection, mode)
                    self._open[key] = batch
                    self.stats["batches"] += 1
                    self._pool.submit(self._flush, batch)
                batch.entries.append(entry)
                batch.ids.add(entry.id)
                batch.n_bytes += entry.size
                if not sub.batches or sub.batches[-1] is not batch:
                    sub.batches.append(batch)
                if len(batch.entries) >= max_items or batch.n_bytes >= s.max_bytes:
                    self._close_locked(batch)

    def _close_locked(self, batch: _Batch) -> None:
        batch.closed = True
        if self._open.get((batch.collection, batch.mode)) is batch:
            del self._open[(batch.collection, batch.mode)]
        batch.full.set()

    def _flush(self, batch: _Batch) -> None:
        batch.full.wait(self.settings.linger)
        limiter = self._limiter
        if limiter is not None:
            # Under the GeoCatalog budget the POST would only queue for a token, or for its write slot: spend
            # that time with the batch still open, so that it carries more items and calls per item fall as load
            # rises. A batch that filled up goes at once, its slot taken all the same (it tells later batches
            # that the budget is the bottleneck, so they may grow).
            slot = self._write_slot()
            if not batch.full.is_set():
                delay = min(max(slot, limiter.delay()), self.settings.budget_linger_max)
                if delay > 0:
                    batch.full.wait(delay)
        with self._lock:
            if not batch.closed:
                self._close_locked(batch)
            entries = list(batch.entries)
        if not entries:
            return
        res = _Resolution(
            self.client,
            self.settings,
            batch,
            operations=self.operations,
            ops_lock=self._ops_lock,
            stop=self._stop,
            lower_cap=self._lower_cap,
        )
        try:
            if self._stop.is_set():
                raise Cancelled("batcher closed before the batch was sent")
            with tracing.batch_span(batch.collection, batch.mode, [x.sub.trace for x in entries]):
                res.resolve(entries)
        except WorkerError as e:
            res._fail([x for x in entries if x.result is None], e)
        except Exception as e:  # a bug must not leave callers waiting forever
            log.exception("batch_flush_crashed", collection=batch.collection)
            res._fail(
                [x for x in entries if x.result is None],
                TransientError(f"internal error while ingesting: {type(e).__name__}", code="InternalError"),
            )
        finally:
            finished: list[_Submission] = []
            with self._lock:
                self.stats["posts"] += res.posts
                for x in entries:
                    if x.result is None:  # defensive: every entry gets an answer
                        x.result = ItemResult(x.id, False, TransientError("no outcome", code="InternalError"))
                    x.sub.remaining -= 1
                    if x.sub.remaining == 0:
                        finished.append(x.sub)
            for sub in finished:
                sub.result = SubmitResult(
                    [x.result for x in sub.entries if x.result is not None],
                    [OpRecord(i, st) for i, st in sub.ops.items()],
                )
                sub.done.set()
        log.info(
            "batch_flushed",
            collection=batch.collection,
            mode=batch.mode,
            requests=len({id(x.sub) for x in entries}),
            items=len(entries),
            posts=res.posts,
            failed=sum(1 for x in entries if x.result is not None and not x.result.succeeded),
        )
