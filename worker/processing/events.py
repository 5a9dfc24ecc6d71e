"""Blob Storage events at processing time: read the blob now, and let its current state decide.

Ordering (docs/messages.md "Ordering: an older event never undoes a newer one"): the event says *which* blob
changed; what the catalog should hold is decided by the blob's **current** state, read when the event is
processed, not by the event's content:

- BlobCreated: the blob is read now. If it exists, its current content is upserted (an older BlobCreated read
  after a newer write ingests the newer content: the same state the newer event produces). If it no longer
  exists, a newer BlobDeleted happened: the event is *superseded* and changes nothing.
- BlobDeleted: if the blob exists now, a newer BlobCreated re-created it: superseded, nothing is deleted.
  Otherwise the item is deleted (an item already gone counts as deleted).

So whatever order events arrive and are redelivered in, the last one processed leaves the catalog matching the
blob, with no record kept on the worker or the item. A superseded event is answered ``succeeded`` with an empty
``items`` list; the log line ``event_superseded`` carries the event's ``sequencer`` and ``eTag``.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Protocol

import structlog

from worker.domain import contract
from worker.domain.errors import WorkerError
from worker.domain.events import BlobEvent, check_item_matches

log = structlog.get_logger(__name__)

BLOB_FIELD = "blob"  # error paths for the blob's content: blob.id, blob.properties.datetime, ...


class BlobSource(Protocol):
    def read_blob(self, url: str) -> bytes | None: ...
    def exists(self, url: str) -> bool: ...


def _superseded(event: BlobEvent, why: str) -> None:
    log.info(
        "event_superseded",
        event_id=event.id,
        event_type=event.event_type,
        container=event.container,
        blob=event.blob,
        sequencer=event.sequencer,
        etag=event.etag,
        why=why,
    )


def resolve(request: contract.Request, source: BlobSource, limits: contract.Limits) -> contract.Request | None:
    """The concrete request for an event request (items read from the blob), or ``None`` when superseded.

    Raises ``InvalidRequest`` (field ``data.url`` for the read, ``blob.*`` for the content) or the fetcher's
    transient errors."""
    event = request.event
    assert event is not None
    if event.kind == "deleted":
        if source.exists(event.url):
            _superseded(event, "the blob exists again: a newer BlobCreated re-created it")
            return None
        return request
    try:
        data = source.read_blob(event.url)
    except WorkerError as exc:  # ItemFetchError: too large, not allowed, HTTP errors; it names the URL already
        if exc.field is None:
            exc.field = "data.url"
        raise
    if data is None:
        _superseded(event, "the blob no longer exists: a newer BlobDeleted removed it")
        return None
    try:
        value = contract.decode_json(data, field=BLOB_FIELD)
    except contract.InvalidRequest as exc:
        raise contract.InvalidRequest(
            f"not a JSON document: {exc.message}", field="data.url", code="ItemNotJson"
        ) from None
    if not isinstance(value, dict):
        raise contract.InvalidRequest("must be a JSON object (a STAC Item)", field=BLOB_FIELD, code="NotAnItem")
    collection = event.collection
    if collection is None:
        collection = value.get("collection")
        if collection is None:
            raise contract.InvalidRequest(
                f"required: mapping {event.mapping.describe()} takes the collection from the item",
                field=f"{BLOB_FIELD}.collection",
            )
        contract.check_collection_id(collection, f"{BLOB_FIELD}.collection")
    item = contract.validate_item(value, collection, BLOB_FIELD, limits, encoded_size=len(data))
    check_item_matches(event, item, BLOB_FIELD)
    return dataclasses.replace(request, collection=collection, items=(item,), item_urls=())


def superseded_result(request: contract.Request, received_at: datetime) -> contract.Result:
    """``succeeded`` with no items: the blob's current state already asks for nothing (see the module doc)."""
    return contract.Result.for_request(request, status="succeeded", items=[], received_at=received_at)
