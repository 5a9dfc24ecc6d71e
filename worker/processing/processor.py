"""One parsed request → one ``Outcome``: the result to publish plus the settle decision. No Service Bus types here.

Classification (every failure is a ``WorkerError`` with a ``kind``):

- all items succeeded → result ``succeeded``, COMPLETE.
- request invalid (fetched item malformed, claim-check host not allowed, ...) → result ``invalid``,
  DEAD_LETTER ``InvalidRequest``.
- transient (throttling, 5xx, network, operation timeout, transient operation code, SAS fetch 5xx) with
  attempts left → no result, RETRY with ``retry_after``; at ``attempt >= max_attempts`` → result ``failed``,
  DEAD_LETTER ``RetriesExhausted``.
- permanent item failures, at least one item succeeded → result ``failed`` with per-item errors, COMPLETE.
- permanent failures and no item succeeded (incl. auth after refresh) → result ``failed``, DEAD_LETTER
  ``IngestFailed`` (ingest) / ``DeleteFailed`` (delete).
- cancelled (lock lost, shutdown) → no result, RETRY with ``retry_after`` 0.
- a configuration fault (``ConfigurationFault``: 401/403 after a token refresh, ...) and no item succeeded → no
  result, HOLD with ``reason`` = the fault's cause: the runtime keeps the message (lock renewed), holds intake
  and processes it again once the fault clears; nothing is answered or dead-lettered. When some items did
  succeed, the request is retried (RETRY) instead, so the next attempt trusts what this one wrote.

A ``failed`` result is always published: the failure is the answer. The request is also dead-lettered when
nothing at all succeeded, so an operator sees it (with the details) in the dead-letter queue; a partial failure
is answered and completed, since replaying it would only repeat the same per-item errors.

Before giving up on a transient failure the processor retries the affected items in-process
(``transient_retries`` times, ``transient_retry_delay`` apart, honouring ``cancel``); only the items that failed
are re-submitted. A retry (in-process or a redelivery, ``attempt > 1``) submits with ``trust_identical`` so a
create-mode item written by the earlier attempt is not reported as a conflict (see ``worker.processing.batching``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import structlog

from worker.adapters.geocatalog.client import Operation
from worker.domain import contract, wire
from worker.domain.errors import Cancelled, ConfigurationFault, ErrorKind, PermanentError, WorkerError
from worker.domain.retry_policy import RequestRetryPolicy
from worker.domain.secrets import redact
from worker.domain.stored import with_digest
from worker.observability.logging import request_context
from worker.processing import events
from worker.processing.batching import Batcher, ItemResult, OperationWaiter, OpRecord, operation_failure, parallel_map

log = structlog.get_logger(__name__)

MAX_DESCRIPTION = wire.MAX_DESCRIPTION
NO_RECORDS_TO_DELETE = "NoRecordsToDelete"


class Settle(StrEnum):
    COMPLETE = "complete"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    HOLD = "hold"  # a configuration fault: keep the message, hold intake until the fault clears


@dataclass(frozen=True)
class Outcome:
    result: contract.Result | None  # None only with RETRY (nothing is published for a retry)
    settle: Settle
    reason: str | None = None  # dead-letter reason code, short and stable
    description: str | None = None  # ≤ 4096 chars: what failed, where, after how many attempts; no secrets
    retry_after: float | None = None  # for RETRY: seconds until the next attempt
    # The circuit breaker's signal: True when GeoCatalog answered (success or a definite failure), False when it
    # failed transiently, None when the outcome says nothing about it (invalid input, cancellation).
    service_ok: bool | None = None


@dataclass(frozen=True)
class ProcessingSettings:
    retry: RequestRetryPolicy = field(default_factory=RequestRetryPolicy)  # attempts, backoff, exhaustion
    transient_retries: int = 1  # in-process re-tries of transient item failures before answering RETRY
    transient_retry_delay: float = 1.0
    operation_timeout: float = 600.0  # poll deadline of each delete operation
    delete_concurrency: int = 8
    fetch_concurrency: int = 8
    content_digest: bool = True  # stamp properties["gcw:digest"] before submitting (worker.domain.stored)
    limits: contract.Limits = field(default_factory=lambda: contract.DEFAULT_LIMITS)


class Fetcher(Protocol):
    def fetch(self, url: str) -> dict: ...
    def read_blob(self, url: str) -> bytes | None: ...
    def exists(self, url: str) -> bool: ...


class Signer(Protocol):
    def sign_item(self, item: dict) -> dict: ...


class DeleteClient(Protocol):
    """The part of ``worker.adapters.geocatalog.client.GeoCatalogClient`` the processor calls itself."""

    def delete_item(self, collection: str, item_id: str, *, cancel: threading.Event | None = None) -> Operation: ...

    def wait_for_operation(
        self, op: Operation, *, deadline: float, cancel: threading.Event | None = None
    ) -> Operation: ...


def _error_dict(error: WorkerError) -> dict[str, str]:
    return {"code": error.code, "message": redact(str(error))}


class Processor:
    """Thread-safe: ``process`` may be called from many threads at once (the batcher merges their ingests)."""

    def __init__(
        self,
        geocatalog: DeleteClient,
        signer: Signer | None,
        fetcher: Fetcher | None,
        batcher: Batcher,
        settings: ProcessingSettings | None = None,
        *,
        operations: OperationWaiter | None = None,
    ) -> None:
        self.geocatalog = geocatalog
        self.operations: OperationWaiter = operations or geocatalog
        self.signer = signer
        self.fetcher = fetcher
        self.batcher = batcher
        self.settings = settings or ProcessingSettings()

    # ------------------------------------------------------------------------------------------ entry point

    def process(
        self, request: contract.Request, cancel: threading.Event, *, received_at: datetime | None = None
    ) -> Outcome:
        received_at = received_at or datetime.now(UTC)
        with request_context(
            message_id=request.request_id,
            correlation_id=request.correlation_id,
            collection=request.collection,
            action=request.action,
            attempt=self.settings.retry.attempt(request.meta),
        ):
            return self._process(request, cancel, received_at)

    def _process(self, request: contract.Request, cancel: threading.Event, received_at: datetime) -> Outcome:
        fetched: dict[int, str] = {}  # item_urls index -> fetched item id (for a whole-request failure's items)
        try:
            if request.event is not None:  # a Blob Storage event: read the blob now (worker.processing.events)
                resolved = self._resolve_event(request)
                if resolved is None:
                    log.info("request_finished", status="succeeded", settle=Settle.COMPLETE, superseded=True)
                    return Outcome(events.superseded_result(request, received_at), Settle.COMPLETE)
                request = resolved
            if request.action == "ingest":
                results, ops = self._ingest(request, cancel, fetched)
            else:
                results, ops = self._delete(request, cancel)
        except WorkerError as e:
            if isinstance(e, Cancelled) or cancel.is_set():
                log.info("request_cancelled")
                return Outcome(None, Settle.RETRY, retry_after=0.0, service_ok=None)
            outcome = self._request_failure(request, e, received_at, fetched)
            log.info(
                "request_finished",
                status=outcome.result and outcome.result.status,
                settle=outcome.settle,
                reason=outcome.reason,
                error_code=e.code,
            )
            return outcome
        if cancel.is_set() and any(isinstance(r.error, Cancelled) for r in results):
            return Outcome(None, Settle.RETRY, retry_after=0.0, service_ok=None)
        outcome = self._item_outcome(request, results, ops, received_at)
        log.info(
            "request_finished",
            status=outcome.result.status if outcome.result else None,
            settle=outcome.settle,
            reason=outcome.reason,
            items=len(results),
            failed=sum(1 for r in results if not r.succeeded),
            error_code=outcome.result.error["code"] if outcome.result and outcome.result.error else None,
        )
        return outcome

    def _resolve_event(self, request: contract.Request) -> contract.Request | None:
        if self.fetcher is None:
            raise PermanentError("a Blob Storage event needs an item fetcher", code="NoFetcher")
        return events.resolve(request, self.fetcher, self.settings.limits)

    # ------------------------------------------------------------------------------------------ ingest

    def _load_items(
        self, request: contract.Request, cancel: threading.Event, fetched: dict[int, str] | None = None
    ) -> list[dict]:
        """The request's items; claim-check items are fetched, and each fetched id is recorded in ``fetched``."""
        if not request.item_urls:
            return list(request.items)
        if self.fetcher is None:
            raise PermanentError("claim-check item_urls given but no item fetcher is configured", code="NoFetcher")
        limits = self.settings.limits

        def fetch(pair: tuple[int, str]) -> dict:
            i, url = pair
            if cancel.is_set():
                raise Cancelled("cancelled before fetching items")
            assert self.fetcher is not None
            raw = self.fetcher.fetch(url)
            item = contract.validate_item(raw, request.collection, f"item_urls[{i}]", limits)
            if fetched is not None:
                fetched[i] = str(item["id"])  # distinct keys per thread: safe without a lock
            return item

        items = parallel_map(fetch, list(enumerate(request.item_urls)), self.settings.fetch_concurrency)
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            item_id = item["id"]
            if item_id in seen:
                raise contract.InvalidRequest(
                    f"duplicate item id {item_id!r} (also at item_urls[{seen[item_id]}])", field=f"item_urls[{i}].id"
                )
            seen[item_id] = i
        return items

    def _ingest(
        self, request: contract.Request, cancel: threading.Event, fetched: dict[int, str] | None = None
    ) -> tuple[list[ItemResult], list[OpRecord]]:
        items = self._load_items(request, cancel, fetched)
        if self.settings.content_digest:
            items = [with_digest(it) for it in items]
        signed = [self.signer.sign_item(it) for it in items] if self.signer is not None else items
        trust = self.settings.retry.is_retry(request.meta)

        def submit(subset: list[dict], retrying: bool) -> tuple[list[ItemResult], list[OpRecord]]:
            res = self.batcher.submit(
                request.collection,
                subset,
                mode=request.mode,
                cancel=cancel,
                request_id=request.request_id,
                trust_identical=trust or retrying,
            )
            return res.items, res.operations

        return self._with_retries(signed, lambda it: str(it["id"]), submit, cancel)

    # ------------------------------------------------------------------------------------------ delete

    def _delete_one(self, collection: str, item_id: str, cancel: threading.Event) -> tuple[ItemResult, OpRecord | None]:
        try:
            op = self.geocatalog.delete_item(collection, item_id, cancel=cancel)
            if not op.terminal:
                op = self.operations.wait_for_operation(
                    op, deadline=time.monotonic() + self.settings.operation_timeout, cancel=cancel
                )
        except WorkerError as e:
            return ItemResult(item_id, False, e), None
        ref = OpRecord(op.id, op.status)
        if op.succeeded or op.error_code == NO_RECORDS_TO_DELETE:
            return ItemResult(item_id, True), ref
        return ItemResult(item_id, False, operation_failure(op.error_code, op.error_message, operation_id=op.id)), ref

    def _delete(self, request: contract.Request, cancel: threading.Event) -> tuple[list[ItemResult], list[OpRecord]]:
        def submit(ids: list[str], retrying: bool) -> tuple[list[ItemResult], list[OpRecord]]:
            pairs = parallel_map(
                lambda i: self._delete_one(request.collection, i, cancel), ids, self.settings.delete_concurrency
            )
            return [p[0] for p in pairs], [p[1] for p in pairs if p[1] is not None]

        return self._with_retries(list(request.item_ids), str, submit, cancel)

    # ------------------------------------------------------------------------------------------ shared

    def _with_retries(
        self, things: list, key: Any, submit: Any, cancel: threading.Event
    ) -> tuple[list[ItemResult], list[OpRecord]]:
        """Submit all; re-submit only the transiently failed ones up to ``transient_retries`` times."""
        results, ops = submit(things, False)
        by_id: dict[str, ItemResult] = {r.id: r for r in results}
        all_ops: dict[str, OpRecord] = {o.id: o for o in ops}
        for _ in range(self.settings.transient_retries):
            again = [t for t in things if _is_transient(by_id.get(key(t)))]
            if not again or cancel.is_set():
                break
            hints = [_err(by_id[key(t)]).retry_after or 0.0 for t in again]
            delay = max([self.settings.transient_retry_delay, *hints])
            if (
                delay > self.settings.retry.max_seconds / 10
            ):  # a long Retry-After: let the broker hold the message instead
                break
            if cancel.wait(delay):
                break
            results, ops = submit(again, True)
            by_id.update({r.id: r for r in results})
            all_ops.update({o.id: o for o in ops})
        return [by_id[key(t)] for t in things], list(all_ops.values())

    def _failed_reason(self, request: contract.Request) -> str:
        return "IngestFailed" if request.action == "ingest" else "DeleteFailed"

    def _request_failure(
        self,
        request: contract.Request,
        e: WorkerError,
        received_at: datetime,
        fetched: dict[int, str] | None = None,
    ) -> Outcome:
        """A failure that hit the whole request before any per-item outcome existed.

        A ``failed`` result still has one entry per requested item (``_requested_ids``)."""
        attempt = self.settings.retry.attempt(request.meta)
        if isinstance(e, ConfigurationFault):
            return _hold(request, e, attempt)
        if e.kind is ErrorKind.INVALID:
            result = contract.Result.for_request(
                request, status="invalid", items=[], error=_error_dict(e), received_at=received_at
            )
            return Outcome(
                result,
                Settle.DEAD_LETTER,
                "InvalidRequest",
                _describe(request, f"invalid request: {e.code}: {e}", attempt),
                service_ok=None,
            )
        if e.kind is ErrorKind.TRANSIENT and not self.settings.retry.exhausted(request.meta):
            retry_after = self.settings.retry.delay(request.meta, e.retry_after)
            return Outcome(None, Settle.RETRY, retry_after=retry_after, service_ok=False)
        reason = "RetriesExhausted" if e.kind is ErrorKind.TRANSIENT else self._failed_reason(request)
        items = [contract.ItemOutcome(i, "failed", _error_dict(e)) for i in _requested_ids(request, fetched or {})]
        result = contract.Result.for_request(
            request, status="failed", items=items, error=_error_dict(e), received_at=received_at
        )
        description = _describe(request, f"{e.code}: {e}", attempt)
        return Outcome(result, Settle.DEAD_LETTER, reason, description, service_ok=reason != "RetriesExhausted")

    def _item_outcome(
        self, request: contract.Request, results: list[ItemResult], ops: list[OpRecord], received_at: datetime
    ) -> Outcome:
        attempt = self.settings.retry.attempt(request.meta)
        failed = [r for r in results if not r.succeeded]
        faults = [r.error for r in failed if isinstance(r.error, ConfigurationFault)]
        if faults:
            if len(failed) == len(results):
                return _hold(request, faults[0], attempt)
            return Outcome(None, Settle.RETRY, retry_after=self.settings.retry.delay(request.meta), service_ok=None)
        transient = [r for r in failed if _is_transient(r)]
        if transient and not self.settings.retry.exhausted(request.meta):
            hint = max((r.error.retry_after or 0.0) for r in transient if r.error is not None)
            return Outcome(
                None, Settle.RETRY, retry_after=self.settings.retry.delay(request.meta, hint), service_ok=False
            )
        items = [
            contract.ItemOutcome(r.id, "succeeded")
            if r.succeeded
            else contract.ItemOutcome(r.id, "failed", _error_dict(_err(r)))
            for r in results
        ]
        operations = [contract.OperationRef(o.id, o.status) for o in ops]
        if not failed:
            result = contract.Result.for_request(
                request, status="succeeded", items=items, operations=operations, received_at=received_at
            )
            return Outcome(result, Settle.COMPLETE, service_ok=True)
        first = _err(failed[0])
        summary = {
            "code": first.code if len({_err(r).code for r in failed}) == 1 else "ItemsFailed",
            "message": redact(f"{len(failed)} of {len(results)} items failed; first: {failed[0].id}: {first}"),
        }
        result = contract.Result.for_request(
            request, status="failed", items=items, operations=operations, error=summary, received_at=received_at
        )
        details = "; ".join(f"{r.id}: {_err(r).code}: {_err(r)}" for r in failed)
        if transient:
            return Outcome(
                result,
                Settle.DEAD_LETTER,
                "RetriesExhausted",
                _describe(request, f"{len(failed)} of {len(results)} items failed: {details}", attempt),
                service_ok=False,
            )
        if len(failed) == len(results):
            return Outcome(
                result,
                Settle.DEAD_LETTER,
                self._failed_reason(request),
                _describe(request, f"all {len(results)} items failed: {details}", attempt),
                service_ok=True,
            )
        return Outcome(result, Settle.COMPLETE, service_ok=True)


def _requested_ids(request: contract.Request, fetched: dict[int, str]) -> list[str]:
    """One id per requested item: inline item ids, delete ids, or for ``item_urls`` the fetched item's id when it
    was fetched, else ``item_urls[<index>]`` (never a valid item id, so it cannot be mistaken for one; also used
    for a fetched id that repeats an earlier entry's, so entries stay distinct)."""
    if request.action != "ingest":
        return list(request.item_ids)
    if not request.item_urls:
        return [str(i.get("id")) for i in request.items]
    ids: list[str] = []
    seen: set[str] = set()
    for i in range(len(request.item_urls)):
        item_id = fetched.get(i)
        if item_id is None or item_id in seen:
            item_id = f"item_urls[{i}]"
        seen.add(item_id)
        ids.append(item_id)
    return ids


def _hold(request: contract.Request, fault: ConfigurationFault, attempt: int) -> Outcome:
    return Outcome(None, Settle.HOLD, str(fault.cause), _describe(request, f"{fault.code}: {fault}", attempt))


def _err(r: ItemResult) -> WorkerError:
    return r.error or WorkerError("failed without an error", code="Unknown")


def _is_transient(r: ItemResult | None) -> bool:
    return r is not None and not r.succeeded and r.error is not None and r.error.kind is ErrorKind.TRANSIENT


def _describe(request: contract.Request, what: str, attempt: int) -> str:
    head = (
        f"{request.action} request {request.request_id} for collection '{request.collection}' "
        f"after {attempt} attempt(s): "
    )
    text = redact(head + what)
    if len(text) > MAX_DESCRIPTION:
        text = text[: MAX_DESCRIPTION - 20] + " ...(truncated)"
    return text
