"""Demo stage 6: a pipeline drops items into Blob Storage; Event Grid tells the worker; the catalog follows.

Microsoft's Azurite plays Blob Storage (installed from npm into ``.tools/`` on first use, HTTPS with a
self-signed certificate the worker trusts); the events are shaped exactly as Event Grid delivers them to Service
Bus (``gcw_emulators.eventgrid``). The stage is skipped, saying why, where Node.js and npm are not available.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import click
from azure.servicebus import ServiceBusMessage

from gcw_emulators.azurite import ACCOUNT, Azurite, AzuriteUnavailable, tools_dir
from gcw_emulators.builders import stac_item
from gcw_emulators.cluster import Cluster, wait_until
from gcw_emulators.demo.traffic import ResultCollector
from gcw_emulators.eventgrid import blob_event, eventgrid_properties
from gcw_emulators.geocatalog.errors import ApiError

COLLECTION = "storage-drops-demo"
DROPS = "stac-drops"
ASSETS = "stac-assets"


def _event_message(event: dict) -> ServiceBusMessage:
    return ServiceBusMessage(
        json.dumps(event).encode(),
        application_properties=eventgrid_properties(event),  # type: ignore[arg-type]
        content_type="application/json" if "eventType" in event else "application/cloudevents+json",
    )


def storage_stage(cluster: Cluster, collector: ResultCollector, echo: Callable[[str], None], timeout: float) -> bool:
    """Upload → ingested, blob deleted → item deleted. True when it worked or was skipped."""
    echo(click.style("\n6. a pipeline drops items into storage (Azurite + Event Grid events)", bold=True))
    assert cluster.geocatalog is not None
    try:
        echo("  starting Azurite (installed from npm into .tools/ on first use) ...")
        azurite = Azurite(cluster.log_dir / "azurite", tools=tools_dir()).start()
    except AzuriteUnavailable as exc:
        echo(f"  skipped: {exc}; with Node.js 20 and npm this stage runs too")
        return True
    try:
        for container in (DROPS, ASSETS):
            azurite.create_container(container)
        cluster.geocatalog.create_collection(COLLECTION)
        tokens = {c: azurite.container_sas(c) for c in (DROPS, ASSETS)}
        for worker in list(cluster.workers):  # the earlier stages' workers take no events: this one does
            cluster.terminate(worker)
        worker = cluster.start_worker(
            env={"REQUESTS_CA_BUNDLE": str(azurite.cert)},
            item_url_host=[azurite.host],
            storage_host=[azurite.host],
            sign_host=[azurite.host],
            storage_credential="sas",
            static_sas=[f"{ACCOUNT}/{c}={t}" for c, t in tokens.items()],
            event_mapping=[f"container={DROPS},prefix=items/,suffix=.json,collection={COLLECTION}"],
        )
        cluster.wait_ready(worker)
        echo(f"  worker pid {worker.pid}: --event-mapping container={DROPS},prefix=items/,suffix=.json,collection=...")

        names = [f"drop-{n}" for n in range(3)]
        events = []
        for n, name in enumerate(names):
            item = stac_item(name, COLLECTION, href=azurite.blob_url(ASSETS, f"{name}.tif"))
            url = azurite.upload(DROPS, f"items/{name}.json", item)
            events.append(
                blob_event("Created", url, DROPS, f"items/{name}.json", schema="cloudevents" if n % 2 else "eventgrid")
            )
        echo(f"  uploaded {len(names)} STAC items to {DROPS}/items/ and sent their BlobCreated events")
        cluster.send_messages([_event_message(e) for e in events])
        ok = _answered(collector, [e["id"] for e in events], "succeeded", timeout)
        stored = [name for name in names if _exists(cluster, name)]
        ok = ok and stored == names
        signed = cluster.geocatalog.stats()["signed_asset_hosts"].get(azurite.host, 0)
        echo(f"  ingested: {', '.join(stored) or 'nothing'} (asset hrefs signed with the container's SAS: {signed})")

        azurite.delete(DROPS, f"items/{names[0]}.json")
        deleted = blob_event(
            "Deleted", azurite.blob_url(DROPS, f"items/{names[0]}.json"), DROPS, f"items/{names[0]}.json"
        )
        cluster.send_messages([_event_message(deleted)])
        ok = _answered(collector, [deleted["id"]], "succeeded", timeout) and ok
        left = cluster.geocatalog.stats()["items"].get(COLLECTION, 0)
        echo(f"  blob {names[0]}.json deleted -> item deleted; {left} items left in {COLLECTION}")
        ok = ok and left == len(names) - 1
        echo("  " + ("storage stage passed" if ok else click.style("storage stage FAILED", fg="red")))
        return ok
    finally:
        azurite.stop()


def _exists(cluster: Cluster, item_id: str) -> bool:
    assert cluster.geocatalog is not None
    try:
        cluster.geocatalog.catalog.get_item(COLLECTION, item_id)
    except ApiError:
        return False
    return True


def _answered(collector: ResultCollector, ids: list[str], status: str, timeout: float) -> bool:
    def done() -> bool:
        got = collector.snapshot()
        return all(i in got for i in ids)

    if not wait_until(done, timeout):
        return False
    got = collector.snapshot()
    return all(got[i].result.get("status") == status for i in ids)
