"""Request messages for the benchmarks: realistic STAC items (the demo's templates) with private asset hrefs.

Every item's assets sit on a private storage account, so the worker must sign them (SAS API) before GeoCatalog
can ingest them, exactly as in the demo. Ids are unique per scenario (``prefix``), so scenarios sharing one
emulator never collide.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from gcw_emulators.demo import workload as demo
from gcw_emulators.demo.traffic import Outgoing

COLLECTIONS = demo.COLLECTIONS
PRIVATE_STORAGE = demo.PRIVATE_STORAGE


def _item(template: dict[str, Any], item_id: str) -> dict[str, Any]:
    item = copy.deepcopy(template)
    old = template["id"]
    item["id"] = item_id
    for asset in item["assets"].values():
        asset["href"] = asset["href"].replace(old, item_id)
    return item


def ingest_requests(prefix: str, n_requests: int, items_per_request: int) -> list[Outgoing]:
    """``n_requests`` ingest (upsert) requests of ``items_per_request`` items each, alternating collections."""
    templates = demo.load_templates()
    out: list[Outgoing] = []
    for r in range(n_requests):
        collection = COLLECTIONS[r % len(COLLECTIONS)]
        pool = templates[collection]
        items = [_item(pool[(r + k) % len(pool)], f"{prefix}-{r:06d}-{k:02d}") for k in range(items_per_request)]
        body = {"version": 1, "action": "ingest", "collection": collection, "items": items}
        out.append(Outgoing(message_id=f"{prefix}-{r:06d}", body=json.dumps(body, separators=(",", ":")).encode()))
    return out
