"""The demo's workload: realistic STAC items (shipped in ``data/``) turned into request messages.

Items come from two templates in the style of public collections: Sentinel-2 L2A scenes (imagery, many
assets) and annual land-use/land-cover tiles. Their assets live on a *private* storage account, so GeoCatalog
can copy them only when the worker has signed the hrefs. The workload is deterministic for a given seed.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

SENTINEL = "sentinel-2-l2a-demo"
LAND_COVER = "land-cover-annual-demo"
MISSING = "naip-demo"  # does not exist when the demo starts: its request is dead-lettered, then replayed
PRIVATE_STORAGE = "demostorage.blob.core.windows.net"
UNSIGNABLE_STORAGE = "archive.contoso.internal"  # private, and not on the worker's signing allow-list

COLLECTIONS = (SENTINEL, LAND_COVER)


def load_templates() -> dict[str, list[dict[str, Any]]]:
    """The shipped sample items, by collection."""
    data = resources.files("gcw_emulators.demo") / "data"
    out: dict[str, list[dict[str, Any]]] = {}
    for name in ("sentinel-2-l2a.json", "land-cover-annual.json"):
        features = json.loads((data / name).read_text())["features"]
        out[features[0]["collection"]] = features
    return out


@dataclass
class DemoRequest:
    """One request message of the workload, with what the demo expects to happen to it."""

    message_id: str
    body: dict[str, Any]
    expect: str  # succeeded | failed | invalid
    kind: str  # ingest | upsert | delete | malformed | geocatalog-failure | missing-collection
    raw: bytes | None = None  # when set, sent as is instead of ``body`` (the malformed request)
    item_ids: list[str] = field(default_factory=list)

    def payload(self) -> bytes:
        return self.raw if self.raw is not None else json.dumps(self.body, separators=(",", ":")).encode()


def _variant(template: dict[str, Any], n: int, rng: random.Random) -> dict[str, Any]:
    item = copy.deepcopy(template)
    item["id"] = f"{template['id']}-d{n:05d}"
    props = item["properties"]
    if "eo:cloud_cover" in props:
        props["eo:cloud_cover"] = round(rng.uniform(0, 60), 2)
    for asset in item["assets"].values():
        asset["href"] = asset["href"].replace(template["id"], item["id"])
    return item


def build_workload(n_requests: int, seed: int = 7) -> tuple[list[DemoRequest], list[DemoRequest]]:
    """Two phases: ingests plus three special requests, then upserts and deletes of phase-1 items.

    The total is ``n_requests`` (at least 6).
    """
    rng = random.Random(seed)
    templates = load_templates()
    phase1: list[DemoRequest] = []
    ingested: list[tuple[str, dict[str, Any]]] = []
    n_rest = max(2, n_requests // 4)  # phase 2: upserts and deletes
    n_ingest = max(1, n_requests - 3 - n_rest)
    counter = 0
    for i in range(n_ingest):
        collection = COLLECTIONS[i % len(COLLECTIONS)]
        items = []
        for _ in range(rng.choice((1, 1, 1, 2, 3, 5))):
            counter += 1
            items.append(_variant(rng.choice(templates[collection]), counter, rng))
        ingested.extend((collection, item) for item in items)
        phase1.append(
            DemoRequest(
                message_id=f"demo-ingest-{i:05d}",
                body={"version": 1, "action": "ingest", "collection": collection, "items": items},
                expect="succeeded",
                kind="ingest",
                item_ids=[it["id"] for it in items],
            )
        )
    phase1.append(
        DemoRequest(
            message_id="demo-malformed",
            body={},
            raw=b'{"version": 1, "action": "ingest", "collection": "sentinel-2-l2a-demo", "items": [{"type": "Feat',
            expect="invalid",
            kind="malformed",
        )
    )
    bad = _variant(templates[SENTINEL][0], 99_999, rng)
    bad["assets"]["B02"]["href"] = f"https://{UNSIGNABLE_STORAGE}/archive/{bad['id']}/B02.tif"
    phase1.append(
        DemoRequest(
            message_id="demo-geocatalog-failure",
            body={"version": 1, "action": "ingest", "collection": SENTINEL, "items": [bad]},
            expect="failed",
            kind="geocatalog-failure",
            item_ids=[bad["id"]],
        )
    )
    naip = _variant(templates[SENTINEL][1], 99_998, rng)
    naip["collection"] = MISSING
    phase1.append(
        DemoRequest(
            message_id="demo-missing-collection",
            body={"version": 1, "action": "ingest", "collection": MISSING, "items": [naip]},
            expect="failed",
            kind="missing-collection",
            item_ids=[naip["id"]],
        )
    )
    rng.shuffle(phase1)

    phase2: list[DemoRequest] = []
    picks = rng.sample(ingested, k=min(len(ingested), n_rest))
    for j, (collection, item) in enumerate(picks):
        if j % 2 == 0:
            changed = copy.deepcopy(item)
            changed["properties"]["demo:revision"] = 2
            phase2.append(
                DemoRequest(
                    message_id=f"demo-upsert-{j:05d}",
                    body={"version": 1, "action": "ingest", "collection": collection, "items": [changed]},
                    expect="succeeded",
                    kind="upsert",
                    item_ids=[item["id"]],
                )
            )
        else:
            phase2.append(
                DemoRequest(
                    message_id=f"demo-delete-{j:05d}",
                    body={"version": 1, "action": "delete", "collection": collection, "item_ids": [item["id"]]},
                    expect="succeeded",
                    kind="delete",
                    item_ids=[item["id"]],
                )
            )
    return phase1, phase2
