"""The emulated GeoCatalog: collections, items and operations, with lazily applied writes.

Every write validates its body synchronously (``ApiError`` 400/404) and then creates one operation. The
operation's effect is applied when its timeline says it is finished, the first time anyone looks (any call
advances the catalog first). Items of a batch are applied one by one: valid ones are ingested, failing ones
are not, and the operation ends Failed if any item failed.
"""

from __future__ import annotations

import copy
import functools
import heapq
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from gcw_emulators.geocatalog.errors import ApiError
from gcw_emulators.geocatalog.faults import FaultSet
from gcw_emulators.geocatalog.items import (
    collection_not_found,
    item_not_found,
    managed_blob_path,
    managed_href,
    public_access_restricted,
    stored_item,
)
from gcw_emulators.geocatalog.operations import DurationSpec, Operation, rfc3339
from gcw_emulators.geocatalog.sas import BLOB_SUFFIX, SasAuthority, blob_location
from gcw_emulators.geocatalog.validation import (
    check_bbox,
    check_collection_id,
    check_item,
    items_from_body,
    parse_datetime,
)
from worker.domain.secrets import redact

T = TypeVar("T")
SAS_KEYS = {"sig", "se", "st", "sp", "sv", "sr", "skoid", "sktid", "skt", "ske", "sks", "skv", "spr", "srt", "ss"}


def strip_sas(href: str) -> str:
    """The href without SAS parameters: the service copies the asset and never keeps the token."""
    parts = urlsplit(href)
    if not parts.query:
        return href
    return urlunsplit((parts.scheme, parts.netloc, parts.path, _query_without_sas(parts.query), parts.fragment))


@functools.lru_cache(maxsize=4096)
def _query_without_sas(query: str) -> str:
    """A query string without its SAS parameters (the assets of a request share one token: parsed once)."""
    kept = [(k, v) for k, v in parse_qs(query, keep_blank_values=True).items() if k.lower() not in SAS_KEYS]
    return urlencode([(k, x) for k, vs in kept for x in vs])


@functools.lru_cache(maxsize=4096)
def _carries_signature(query: str) -> bool:
    """Whether a query string has a ``sig`` parameter (any case)."""
    return any(k.lower() == "sig" for k in parse_qs(query, keep_blank_values=True))


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _bbox_intersects(a: list[float], b: list[float]) -> bool:
    ha, hb = len(a) // 2, len(b) // 2
    return not (a[ha] < b[0] or b[hb] < a[0] or a[ha + 1] < b[1] or b[hb + 1] < a[1])


def _in_interval(item: dict[str, Any], start: datetime | None, end: datetime | None) -> bool:
    props = item.get("properties", {})
    try:
        lo = datetime.fromisoformat(str(props.get("start_datetime") or props.get("datetime")).replace("Z", "+00:00"))
        hi = datetime.fromisoformat(str(props.get("end_datetime") or props.get("datetime")).replace("Z", "+00:00"))
    except ValueError:
        return False
    return (end is None or lo <= end) and (start is None or hi >= start)


def parse_interval(text: str) -> tuple[datetime | None, datetime | None]:
    if "/" in text:
        a, _, b = text.partition("/")
        start = None if a in ("", "..") else parse_datetime(a, "datetime")
        end = None if b in ("", "..") else parse_datetime(b, "datetime")
        return start, end
    moment = parse_datetime(text, "datetime")
    return moment, moment


class Catalog:
    """Thread-safe state of one emulated GeoCatalog."""

    def __init__(
        self,
        store: Any,
        sas: SasAuthority,
        faults: FaultSet,
        durations: DurationSpec,
        private_hosts: Iterable[str],
        clock: Callable[[], float],
        seed: int = 0,
        max_items_per_post: int = 1000,
        managed_account: str = "emulatormanaged",
    ) -> None:
        self.store = store
        self.sas = sas
        self.faults = faults
        self.durations = durations
        self.private_hosts = {h.strip().lower() for h in private_hosts if h.strip()}
        # the catalog's managed storage account: where ingested assets are copied; never publicly readable
        self.managed_account = managed_account.lower()
        self.managed_host = f"{self.managed_account}{BLOB_SUFFIX}"
        # host:port spellings of this emulator, so hrefs to its own /_blobs store are recognised as its blobs
        self.own_netlocs: set[str] = set()
        self.clock = clock
        self.max_items_per_post = max_items_per_post
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._seq = 0
        self._due: list[tuple[float, int, str]] = []
        # raw netloc of every asset href that arrived carrying a SAS signature (never the token itself), so tests
        # can prove no token was ever attached to a host outside the signing allow-list
        self.signed_asset_netlocs: Counter[str] = Counter()
        self._ended: Counter[str] = Counter()  # terminal operations by status (stats without a full scan)
        # how other modules apply their operation types when due (ingestion.py); an applier that leaves the outcome
        # unset has rescheduled the operation (still Running)
        self.appliers: dict[str, Callable[[Operation], None]] = {}
        for op in store.list_operations():
            if op.outcome is None:
                self._schedule(op)
            else:
                self._ended[op.outcome] += 1

    # ---------------------------------------------------------------- operations timeline
    def _schedule(self, op: Operation) -> None:
        self._seq += 1
        heapq.heappush(self._due, (op.finished, self._seq, op.id))

    def advance(self) -> None:
        """Apply every operation whose finish time has passed, in finish order."""
        with self._lock:
            now = self.clock()
            while self._due and self._due[0][0] <= now:
                _, _, op_id = heapq.heappop(self._due)
                op = self.store.get_operation(op_id)
                if op is not None and op.outcome is None:
                    self._apply(op)
                    if op.outcome is None:
                        continue
                    op.payload = {}  # applied: the item bodies are no longer needed (memory on long soaks)
                    self._ended[op.outcome or "Failed"] += 1
                    self.store.put_operation(op)

    def _new_operation(
        self, op_type: str, collection_id: str | None, payload: dict[str, Any], method: str, path: str, total: int
    ) -> Operation:
        now = self.clock()
        forced_error = self.faults.op_failure(method, path)
        failing = forced_error is not None or self._likely_failure(collection_id or "", payload, now)
        duration, pending = self.durations.sample(self._rng, op_type, failing)
        op = Operation(
            id=str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
            type=op_type,
            collection_id=collection_id,
            created=now,
            started=now + pending,
            finished=now + duration,
            payload=payload,
            forced_error=forced_error,
        )
        if total:
            op.additional_information = {
                "TotalFailedItems": "0",
                "TotalItems": str(total),
                "TotalPendingItems": str(total),
                "TotalSuccessfulItems": "0",
            }
        self.store.put_operation(op)
        self._schedule(op)
        return op

    def _likely_failure(self, cid: str, payload: dict[str, Any], now: float) -> bool:
        """Whether a write will fail as the catalog looks now (failures end within ~1.5 s on the live service)."""
        if "item_id" in payload:
            return self.store.get_item(cid, payload["item_id"]) is None
        mode = payload.get("mode")
        for item in payload.get("items", ()):
            exists = self.store.get_item(cid, item["id"]) is not None
            if exists == (mode == "add") or self._managed_access(item, now) is not None:
                return True
        return False

    def _finish(self, op: Operation, ok: int, failures: list[tuple[str, str, str]], total: int) -> None:
        op.ended = op.finished
        if total:
            op.additional_information = {
                "TotalFailedItems": str(len(failures)),
                "TotalItems": str(total),
                "TotalPendingItems": "0",
                "TotalSuccessfulItems": str(ok),
            }
        if not failures:
            op.outcome = "Succeeded"
            return
        op.outcome = "Failed"
        if total > 1:
            listed = "; ".join(f"{iid}: {code}" for iid, code, _ in failures[:50])
            more = f" (and {len(failures) - 50} more)" if len(failures) > 50 else ""
            op.error = (
                "ErrorsInBatchOperation",
                f"One or more items in a bulk ingestion operation failed: {len(failures)} of {total} "
                f"items failed: {listed}{more}",
            )
        else:
            op.error = (failures[0][1], failures[0][2])

    def _apply(self, op: Operation) -> None:
        payload = op.payload
        cid = op.collection_id or ""
        if op.forced_error is not None:
            op.outcome, op.ended, op.error = "Failed", op.finished, op.forced_error
            if op.additional_information:
                total = op.additional_information["TotalItems"]
                op.additional_information.update(
                    TotalFailedItems=total, TotalPendingItems="0", TotalSuccessfulItems="0"
                )
            return
        applier = self.appliers.get(op.type)
        if applier is not None:
            applier(op)
            return
        if op.type == "AddCollection":
            doc = dict(payload["collection"])
            doc["msft:_created"] = doc["msft:_updated"] = rfc3339(op.finished)  # collections carry them (C01)
            self.store.add_collection(payload["collection"]["id"], doc)
            self._finish(op, 0, [], 0)
            return
        if op.type == "DeleteCollection":
            self.store.delete_collection(cid)
            self._finish(op, 0, [], 0)
            return
        if op.type == "DeleteItem":
            iid = payload["item_id"]
            if self.store.delete_item(cid, iid):
                self._finish(op, 1, [], 1)
            else:
                msg = f"Item '{iid}' does not exist in collection '{cid}' to delete"
                self._finish(op, 0, [(iid, "NoRecordsToDelete", msg)], 1)
            return
        items: list[dict[str, Any]] = payload["items"]
        failures: list[tuple[str, str, str]] = []
        ok = 0
        for item in items:
            failure = self._apply_item(op, cid, item, payload.get("mode", "add"))
            if failure is None:
                ok += 1
            else:
                failures.append(failure)
        self._finish(op, ok, failures, len(items))

    def _apply_item(self, op: Operation, cid: str, item: dict[str, Any], mode: str) -> tuple[str, str, str] | None:
        iid = item["id"]
        submitted = item  # the hrefs the service fetches: those named in the request body
        existing = self.store.get_item(cid, iid)
        if mode == "add" and existing is not None:
            return iid, "ItemAlreadyExistsInCollection", f"Item '{iid}' already exists in collection '{cid}'"
        if mode == "replace" and existing is None:
            return iid, "NoRecordsToUpdate", f"Item '{iid}' does not exist in collection '{cid}' to update"
        if mode == "patch":
            if existing is None:
                return iid, "NoRecordsToPatch", f"Item '{iid}' does not exist in collection '{cid}' to patch"
            base = {k: v for k, v in existing.items() if k not in ("_msft:ts", "_msft:etag", "links")}
            item = _merge_patch(base, item)
            try:
                check_item(item, cid, item_id=iid)
            except ApiError as exc:
                return iid, "PatchValidation", f"Item '{iid}': the patched item is invalid: {exc.message}"
        restricted = self._managed_access(submitted, op.started)
        if restricted is not None:
            return iid, "PublicAccessRestricted", public_access_restricted(restricted)
        denied = self._asset_access(item, op.started)
        if denied is not None:
            return iid, "IngestionAuthenticationFailed", f"Item '{iid}': {denied}"
        assets: dict[str, Any] = {}
        for key, asset in item.get("assets", {}).items():
            self._record_signed(asset["href"])
            copied = dict(asset)
            copied["href"] = self._copy_asset(cid, iid, key, asset)
            assets[key] = copied
        etag = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        self.store.put_item(cid, iid, stored_item(item, assets, rfc3339(op.finished, digits=6), etag))
        return None

    # ---------------------------------------------------------------- managed storage
    def _blob_key(self, href: str) -> str | None:
        """``account/container/path`` of an Azure blob href or of a URL of this emulator's own blob store."""
        parts = urlsplit(href)
        if parts.netloc.lower() in self.own_netlocs and parts.path.startswith("/_blobs/"):
            key = parts.path[len("/_blobs/") :]
            return key if key.count("/") >= 2 else None
        location = blob_location(href)
        if location is None:
            return None
        return f"{location[0]}/{parts.path.lstrip('/')}"

    def _copy_asset(self, cid: str, iid: str, key: str, asset: dict[str, Any]) -> str:
        """Copy one asset into managed storage (its bytes when the source is one of this emulator's blobs, a
        placeholder otherwise) and return the managed href."""
        source = asset["href"]
        container, blob = managed_blob_path(cid, iid, key, source)
        target = f"{self.managed_account}/{container}/{blob}"
        source_key = self._blob_key(source)
        found = self.store.get_blob(source_key) if source_key is not None else None
        if found is not None:
            if source_key != target:
                self.store.put_blob(target, found[0], found[1])
        else:
            where = redact(strip_sas(source))
            note = f"geocatalog emulator placeholder: the service copied {where}\n".encode()
            self.store.put_blob(target, note, "text/plain")
        return managed_href(self.managed_account, container, blob)

    def is_private_account(self, account: str) -> bool:
        account = account.lower()
        return account == self.managed_account or f"{account}{BLOB_SUFFIX}" in self.private_hosts

    def _managed_access(self, item: dict[str, Any], at: float) -> str | None:
        """The first asset href (without its query) in managed storage that carries no valid SAS at ``at``."""
        assets = item.get("assets")
        for asset in assets.values() if isinstance(assets, dict) else ():
            href = asset.get("href", "") if isinstance(asset, dict) else ""
            parts = urlsplit(href)
            key = self._blob_key(href) if isinstance(href, str) else None
            if key is None or key.partition("/")[0].lower() != self.managed_account:
                continue
            container = key.split("/")[1]
            self.sas.early_seconds = self.faults.sas_early()
            if self.sas.check(self.managed_account, container, parts.query, at=at) is not None:
                return redact(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))
        return None

    def _record_signed(self, href: str) -> None:
        parts = urlsplit(href)
        if parts.query and _carries_signature(parts.query):
            self.signed_asset_netlocs[parts.netloc] += 1

    def _asset_access(self, item: dict[str, Any], at: float) -> str | None:
        """Why the service could not copy one of the item's assets at time ``at`` (None when it can)."""
        if not self.private_hosts:
            return None
        self.sas.early_seconds = self.faults.sas_early()
        for key, asset in item.get("assets", {}).items():
            href = asset.get("href", "")
            parts = urlsplit(href)
            host = (parts.hostname or "").lower()
            netloc = parts.netloc.lower().rpartition("@")[2]
            if host not in self.private_hosts and netloc not in self.private_hosts:
                continue
            segments = [s for s in parts.path.split("/") if s]
            container = segments[0] if segments else ""
            reason = self.sas.check(host.split(".")[0], container, parts.query, at=at)
            if reason is not None:
                where = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
                return f"cannot read asset '{key}' at {redact(where)}: {reason} (storage account is private)"
        return None

    # ---------------------------------------------------------------- collections
    def _require_collection(self, cid: str) -> None:
        if self.store.get_collection(cid) is None:
            raise ApiError(404, "ResourceNotFound", collection_not_found(cid))

    def add_collection_now(self, cid: str, doc: dict[str, Any] | None = None) -> None:
        check_collection_id(cid)
        with self._lock:
            self.store.add_collection(cid, self._collection_doc(cid, doc))

    def add_item_now(self, cid: str, item: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an item immediately (no operation), its assets copied into managed storage as an
        ingestion copies them; returns the stored item."""
        with self._lock:
            self._require_collection(cid)
            check_item(item, cid, item_id=item.get("id"))
            iid = item["id"]
            assets = {k: {**a, "href": self._copy_asset(cid, iid, k, a)} for k, a in item.get("assets", {}).items()}
            etag = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
            stored = stored_item(item, assets, rfc3339(self.clock(), digits=6), etag)
            self.store.put_item(cid, iid, stored)
            return stored

    @staticmethod
    def _collection_doc(cid: str, doc: dict[str, Any] | None) -> dict[str, Any]:
        base = {
            "type": "Collection",
            "id": cid,
            "stac_version": "1.0.0",
            "description": f"Collection {cid}",
            "license": "proprietary",
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
            "links": [],
        }
        base.update(doc or {})
        base["id"] = cid
        return base

    def create_collection(self, body: Any, path: str) -> Operation:
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise ApiError(
                400, "StacValidationFailed", "body: must be a STAC Collection with a string 'id'", target="id"
            )
        cid = body["id"]
        check_collection_id(cid)
        with self._lock:
            self.advance()
            if self.store.get_collection(cid) is not None:
                raise ApiError(409, "CollectionAlreadyExists", f"Collection '{cid}' already exists", target="id")
            payload = {"collection": self._collection_doc(cid, body)}
            return self._new_operation("AddCollection", cid, payload, "POST", path, 0)

    def delete_collection(self, cid: str, path: str) -> Operation:
        with self._lock:
            self.advance()
            self._require_collection(cid)
            return self._new_operation("DeleteCollection", cid, {}, "DELETE", path, 0)

    def get_collection(self, cid: str) -> dict[str, Any]:
        with self._lock:
            self.advance()
            doc = self.store.get_collection(cid)
        if doc is None:
            raise ApiError(404, "ResourceNotFound", collection_not_found(cid))
        return doc

    def list_collections(self) -> list[dict[str, Any]]:
        with self._lock:
            self.advance()
            return self.store.list_collections()

    def update_collection(self, cid: str, change: Callable[[dict[str, Any]], T]) -> tuple[dict[str, Any], T]:
        """Apply ``change`` to a copy of the stored collection document and store it (nothing is stored when
        ``change`` raises); returns the new document and what ``change`` returned. Synchronous writes
        (configuration, collection assets, PUT) go through here."""
        with self._lock:
            self.advance()
            stored = self.store.get_collection(cid)
            if stored is None:
                raise ApiError(404, "ResourceNotFound", collection_not_found(cid))
            doc = copy.deepcopy(stored)
            result = change(doc)
            self.store.add_collection(cid, doc)
            return doc, result

    def read_href(self, href: str) -> tuple[bytes, str] | None:
        """The bytes and content type of the blob an href names, when this emulator stores it."""
        key = self._blob_key(href)
        with self._lock:
            return self.store.get_blob(key) if key is not None else None

    # ---------------------------------------------------------------- item writes
    def create_items(self, cid: str, body: Any, path: str) -> Operation:
        with self._lock:
            self.advance()
            self._require_collection(cid)
            items = items_from_body(body, cid, self.max_items_per_post)
            return self._new_operation("AddItem", cid, {"items": items, "mode": "add"}, "POST", path, len(items))

    def replace_item(self, cid: str, iid: str, body: Any, path: str) -> Operation:
        with self._lock:
            self.advance()
            self._require_collection(cid)
            check_item(body, cid, item_id=iid)
            return self._new_operation("UpdateItem", cid, {"items": [body], "mode": "replace"}, "PUT", path, 1)

    def patch_item(self, cid: str, iid: str, body: Any, path: str) -> Operation:
        with self._lock:
            self.advance()
            self._require_collection(cid)
            if not isinstance(body, dict):
                raise ApiError(400, "PatchValidation", "body: a merge patch must be a JSON object", target="body")
            if "id" in body and body["id"] != iid:
                raise ApiError(
                    400,
                    "PatchValidation",
                    f"id: body id {body['id']!r} does not match {iid!r} in the path",
                    target="id",
                )
            if "collection" in body and body["collection"] != cid:
                raise ApiError(400, "PatchValidation", f"collection: must be {cid!r}", target="collection")
            patch = dict(body, id=iid)
            return self._new_operation("UpdateItem", cid, {"items": [patch], "mode": "patch"}, "PATCH", path, 1)

    def delete_item(self, cid: str, iid: str, path: str) -> Operation:
        with self._lock:
            self.advance()
            self._require_collection(cid)
            return self._new_operation("DeleteItem", cid, {"item_id": iid}, "DELETE", path, 1)

    # ---------------------------------------------------------------- reads
    def get_item(self, cid: str, iid: str) -> dict[str, Any]:
        with self._lock:
            self.advance()
            self._require_collection(cid)
            item = self.store.get_item(cid, iid)
        if item is None:
            raise ApiError(404, "ResourceNotFound", item_not_found(cid, iid))
        return item

    def find_items(
        self,
        collections: list[str] | None,
        ids: list[str] | None = None,
        bbox: list[float] | None = None,
        interval: tuple[datetime | None, datetime | None] | None = None,
    ) -> list[dict[str, Any]]:
        with self._lock:
            self.advance()
            if collections:
                for cid in collections:
                    self._require_collection(cid)
                pool = [i for cid in collections for i in self.store.list_items(cid)]
            else:
                pool = list(self.store.list_items(None))
        if bbox is not None:
            check_bbox(bbox, "bbox")
        wanted = set(ids) if ids else None
        out = []
        for item in pool:
            if wanted is not None and item.get("id") not in wanted:
                continue
            if bbox is not None and not _bbox_intersects(item.get("bbox", bbox), bbox):
                continue
            if interval is not None and not _in_interval(item, *interval):
                continue
            out.append(item)
        return out

    # ---------------------------------------------------------------- operations API
    def get_operation(self, op_id: str) -> tuple[dict[str, Any], Operation]:
        with self._lock:
            self.advance()
            op = self.store.get_operation(op_id)
            if op is None:
                raise ApiError(404, "OperationNotFound", f"Operation '{op_id}' does not exist", target="operationId")
            return op.to_json(self.clock()), op

    def list_operations(
        self, collection_id: str | None, status: str | None, *, skip: int = 0, top: int | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """The operations (of a collection, in a status) newest first, ``top`` of them from ``skip`` as the service
        serves them, and how many there are in all (only the page is rendered: the store keeps every operation)."""
        with self._lock:
            self.advance()
            now = self.clock()
            matches = []
            for op in self.store.list_operations():
                if collection_id and op.collection_id != collection_id:
                    continue
                if status and op.status_at(now).lower() != status.lower():
                    continue
                matches.append(op)
            matches.reverse()  # newest first
            end = len(matches) if top is None else skip + top
            return [op.to_json(now) for op in matches[skip:end]], len(matches)

    def _cancel(self, op: Operation, now: float) -> None:
        op.outcome = "Canceled"
        op.ended = now
        op.error = (
            "CanceledOperation",
            f"Operation '{op.id}' for collection '{op.collection_id}' has been cancelled",
        )
        op.payload = {}  # counters are kept as they were: a canceled op leaves its items pending (T07)
        self._ended["Canceled"] += 1
        self.store.put_operation(op)

    def cancel_operation(self, op_id: str) -> None:
        with self._lock:
            self.advance()
            op = self.store.get_operation(op_id)
            if op is None:
                raise ApiError(404, "OperationNotFound", f"Operation '{op_id}' does not exist", target="operationId")
            if op.outcome is not None:
                raise ApiError(
                    409,
                    "OperationIsCanceled" if op.outcome == "Canceled" else "OperationAlreadyFinished",
                    f"Operation '{op_id}' already ended {op.outcome}",
                    target="operationId",
                )
            self._cancel(op, self.clock())

    def cancel_all(self) -> int:
        with self._lock:
            self.advance()
            now = self.clock()
            ops = [self.store.get_operation(op_id) for _, _, op_id in sorted(self._due)]
            ops = [op for op in ops if op is not None and op.outcome is None]
            for op in ops:
                self._cancel(op, now)
            return len(ops)

    # ---------------------------------------------------------------- stats and blobs
    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._lock:
            self.advance()
            now = self.clock()
            ops = Counter(self._ended)
            for _, _, op_id in self._due:
                op = self.store.get_operation(op_id)
                if op is not None and op.outcome is None:
                    ops[op.status_at(now)] += 1
            return self.store.item_counts(), {status: n for status, n in ops.items() if n}

    def put_blob(self, key: str, data: bytes, content_type: str) -> None:
        with self._lock:
            self.store.put_blob(key, data, content_type)

    def get_blob(self, key: str) -> tuple[bytes, str] | None:
        with self._lock:
            return self.store.get_blob(key)

    def asset_bytes(self, href: str) -> bytes | None:
        """The bytes an asset href names in this emulator's blob store (managed storage or its own /_blobs), if
        any: what the tiler reads."""
        key = self._blob_key(href)
        found = self.get_blob(key) if key is not None else None
        return found[0] if found is not None else None
