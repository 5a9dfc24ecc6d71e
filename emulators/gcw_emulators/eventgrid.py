"""Blob Storage events shaped exactly as Event Grid delivers them to Service Bus (for the tests and the demo).

Event shapes follow Microsoft's "Azure Blob Storage as an Event Grid source" schema page (docs/messages.md
"Events from Blob Storage"): one event per Service Bus message, the event JSON as the body.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any
from urllib.parse import quote

ACCOUNT = "devstoreaccount1"
_SEQUENCE = itertools.count(1)


def next_sequencer() -> str:
    """A sequencer like Blob Storage's (32 hex digits, increasing): later calls compare greater as strings."""
    return f"{next(_SEQUENCE):032x}"


def blob_event(
    kind: str,
    url: str,
    container: str,
    blob: str,
    *,
    schema: str = "eventgrid",
    event_id: str | None = None,
    sequencer: str | None = None,
    account: str = ACCOUNT,
    etag: str = "0x8DCB1B2C3D4E5F6",
    content_length: int = 512,
) -> dict[str, Any]:
    """A ``Microsoft.Storage.Blob<kind>`` event (``kind`` is ``Created`` or ``Deleted``) in ``schema``
    (``eventgrid`` or ``cloudevents``)."""
    data: dict[str, Any] = {
        "api": "PutBlob" if kind == "Created" else "DeleteBlob",
        "clientRequestId": str(uuid.uuid4()),
        "requestId": str(uuid.uuid4()),
        "contentType": "application/json",
        "blobType": "BlockBlob",
        "url": url,
        "sequencer": sequencer or next_sequencer(),
        "storageDiagnostics": {"batchId": str(uuid.uuid4())},
    }
    if kind == "Created":
        data.update({"eTag": etag, "contentLength": content_length})
    source = (
        f"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
        f"Microsoft.Storage/storageAccounts/{account}"
    )
    subject = f"/blobServices/default/containers/{container}/blobs/{blob}"
    ident = event_id or str(uuid.uuid4())
    if schema == "cloudevents":
        return {
            "source": source,
            "subject": subject,
            "type": f"Microsoft.Storage.Blob{kind}",
            "time": "2024-05-01T10:00:00.1234567Z",
            "id": ident,
            "data": data,
            "specversion": "1.0",
        }
    return {
        "topic": source,
        "subject": subject,
        "eventType": f"Microsoft.Storage.Blob{kind}",
        "eventTime": "2024-05-01T10:00:00.1234567Z",
        "id": ident,
        "data": data,
        "dataVersion": "",
        "metadataVersion": "1",
    }


def blob_url(base: str, container: str, blob: str, account: str = ACCOUNT) -> str:
    """``base`` is the service endpoint without the account (Azurite path style: ``http://127.0.0.1:10000``)."""
    return f"{base.rstrip('/')}/{account}/{container}/{quote(blob)}"


def eventgrid_properties(event: dict[str, Any]) -> dict[str, str]:
    """The application properties Event Grid adds to a Service Bus message (its "message headers")."""
    return {
        "aeg-subscription-name": "STAC-ITEMS",
        "aeg-delivery-count": "0",
        "aeg-event-type": "Notification",
        "aeg-metadata-version": event.get("metadataVersion") or event.get("specversion") or "1",
        "aeg-data-version": event.get("dataVersion", ""),
        "aeg-output-event-id": event["id"],
    }
