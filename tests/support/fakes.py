"""Fakes shared by the unit and integration tests: an in-memory stand-in for GeoCatalogClient's write/read
interface (``FakeCatalog``) for pure-logic tests (no network), and ``make_item``.

Semantics follow the GeoCatalog emulator's documented choices: a POSTed ItemCollection is ONE operation whose
items are applied individually (partial apply); the operation fails when any item failed, with
``ErrorsInBatchOperation`` for a multi-item POST or the item's own code for a single item; Total* counts are
strings in ``additional_information``. PUT of a missing item fails ``NoRecordsToUpdate``; DELETE of a missing
item fails ``NoRecordsToDelete``.

Items are stored as the live service stores them (Microsoft's recordings, docs/emulator-geocatalog.md): asset
hrefs rewritten to managed storage, ``stac_extensions`` upgraded, ``links`` replaced, ``_msft:ts`` /
``_msft:etag`` added (``live_copy``), so the batcher's "is this what we wrote" logic meets the real shape.
"""

from __future__ import annotations

import copy
import hashlib
import threading
import uuid
from collections import Counter
from collections.abc import Sequence

from gcw_emulators.builders import point, stac_item

from worker.adapters.geocatalog.client import Conflict, Operation, ValidationError

MANAGED_ACCOUNT = "https://managedsa.blob.core.windows.net"


def live_copy(collection: str, item: dict) -> dict:
    """``item`` as the live GeoCatalog gives it back after ingesting it."""
    out = copy.deepcopy(item)
    container = f"{collection}-{hashlib.sha256(collection.encode()).hexdigest()[:8]}"
    prefix = hashlib.sha256(item["id"].encode()).hexdigest()[:3]
    for key, asset in (out.get("assets") or {}).items():
        ext = asset["href"].split("?", 1)[0].rsplit("/", 1)[-1].rpartition(".")[2]
        asset["href"] = f"{MANAGED_ACCOUNT}/{container}/{prefix}/{item['id']}/{key}.{ext}"
    out["stac_extensions"] = [
        e.replace("/projection/v1.0.0/", "/projection/v1.1.0/") for e in item.get("stac_extensions", [])
    ]
    out["links"] = [{"rel": "self", "href": f"/stac/collections/{collection}/items/{item['id']}"}]
    out["_msft:ts"] = "2025-01-01T00:00:00.000000Z"
    out["_msft:etag"] = str(uuid.uuid4())
    return out


class FakeCatalog:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: dict[tuple[str, str], dict] = {}  # as stored (live_copy)
        self.submitted: dict[tuple[str, str], dict] = {}  # the last body written for each item, as sent
        self.calls: Counter[str] = Counter()
        self.post_sizes: list[int] = []
        self.post_ids: list[list[str]] = []
        self.item_faults: dict[str, str] = {}  # item id -> operation error code when it is written
        self.sync_reject: set[str] = set()  # item ids whose presence makes the POST a synchronous 400
        self.op_faults: list[str] = []  # codes popped by the next write operations (whole-op failure)
        self.report_counts = True
        self.sync_conflict = False  # a POST naming an existing item is refused with a synchronous 409
        self.name_failures = True  # like the emulator: the batch message lists "id: Code" pairs

    def _op(self, status: str, code: str | None = None, message: str | None = None, counts=None) -> Operation:
        info = {}
        if counts is not None and self.report_counts:
            total, ok, failed = counts
            info = {
                "TotalItems": str(total),
                "TotalSuccessfulItems": str(ok),
                "TotalFailedItems": str(failed),
                "TotalPendingItems": "0",
            }
        return Operation(
            id=str(uuid.uuid4()),
            status=status,
            type="AddItem",
            error_code=code,
            error_message=message,
            additional_information=info,
        )

    def create_items(self, collection: str, items: Sequence[dict], *, cancel=None) -> Operation:
        with self.lock:
            self.calls["POST"] += 1
            ids = [i["id"] for i in items]
            self.post_sizes.append(len(items))
            self.post_ids.append(ids)
            bad = [i for i in ids if i in self.sync_reject]
            if bad:
                raise ValidationError(f"items[{ids.index(bad[0])}]: invalid", code="StacValidationFailed", status=400)
            if self.sync_conflict and any((collection, i) in self.items for i in ids):
                raise Conflict("POST items returned 409 Conflict", status=409, code="Conflict")
            if self.op_faults:
                code = self.op_faults.pop(0)
                return self._op("Failed", code, f"operation failed: {code}", (len(items), 0, len(items)))
            failures: list[tuple[str, str]] = []
            for item in items:
                key = (collection, item["id"])
                if item["id"] in self.item_faults:
                    failures.append((item["id"], self.item_faults[item["id"]]))
                elif key in self.items:
                    failures.append((item["id"], "ItemAlreadyExistsInCollection"))
                else:
                    self.items[key] = live_copy(collection, item)
                    self.submitted[key] = copy.deepcopy(item)
            if not failures:
                return self._op("Succeeded", counts=(len(items), len(items), 0))
            code = failures[0][1] if len(items) == 1 else "ErrorsInBatchOperation"
            if self.name_failures:
                msg = "; ".join(f"Item '{i}': {c}" for i, c in failures)
            else:
                msg = f"One or more items in a bulk ingestion operation failed ({len(failures)})"
            return self._op("Failed", code, msg, (len(items), len(items) - len(failures), len(failures)))

    def replace_item(self, collection: str, item: dict, *, cancel=None) -> Operation:
        with self.lock:
            self.calls["PUT"] += 1
            if self.op_faults:
                code = self.op_faults.pop(0)
                return self._op("Failed", code, f"operation failed: {code}")
            if item["id"] in self.item_faults:
                return self._op("Failed", self.item_faults[item["id"]], "asset access denied")
            if (collection, item["id"]) not in self.items:
                return self._op("Failed", "NoRecordsToUpdate", "no such item")
            self.items[(collection, item["id"])] = live_copy(collection, item)
            self.submitted[(collection, item["id"])] = copy.deepcopy(item)
            return self._op("Succeeded")

    def delete_item(self, collection: str, item_id: str, *, cancel=None) -> Operation:
        with self.lock:
            self.calls["DELETE"] += 1
            if self.op_faults:
                code = self.op_faults.pop(0)
                return self._op("Failed", code, f"operation failed: {code}")
            if self.items.pop((collection, item_id), None) is None:
                return self._op("Failed", "NoRecordsToDelete", f"Item '{item_id}' does not exist")
            return self._op("Succeeded")

    def get_item(self, collection: str, item_id: str, *, cancel=None) -> dict | None:
        with self.lock:
            self.calls["GET"] += 1
            item = self.items.get((collection, item_id))
            return None if item is None else copy.deepcopy(item)

    def wait_for_operation(self, op: Operation, *, deadline: float, cancel=None) -> Operation:
        return op


def make_item(item_id: str, collection: str = "c1", value: int = 1) -> dict:
    """``stac_item`` as the batching tests write it: a blob-hosted asset (so a live copy rewrites it), a
    ``value`` property to tell versions apart, the projection v1.0.0 extension (upgraded by the live service)."""
    return stac_item(
        item_id,
        collection,
        href=f"https://acct.blob.core.windows.net/ctr/{item_id}.tif",
        asset_type="image/tiff",
        geometry=point(0.0, 0.0),
        datetime="2024-01-01T00:00:00Z",
        properties={"value": value},
        stac_extensions=["https://stac-extensions.github.io/projection/v1.0.0/schema.json"],
    )
