"""The baseline: Microsoft's single-item ingestion quickstart, run as a sequential message loop.

For each request message, one at a time: get a SAS token from the SAS API for each storage container the
items' assets use and append it to the hrefs (as the quickstart does with the Planetary Computer SAS API), POST
the items as an ItemCollection, then GET the ``location`` until the operation is no longer Pending/Running,
sleeping ``poll_seconds`` between GETs (the quickstart sleeps 5 s), publish a result, complete the message,
next. It runs as its own process so that its CPU and memory are measured like a worker's:

    python -m benchmarks.baseline --connection-string ... --queue requests --reply-queue replies \
        --geocatalog-url http://127.0.0.1:PORT --token dev-token --sas-api-url http://127.0.0.1:PORT --count 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from azure.servicebus import ServiceBusClient, ServiceBusMessage

API_VERSION = "2026-04-15"


def sign_items(session: requests.Session, sas_api_url: str, items: list[dict[str, Any]]) -> None:
    """Append a SAS token to every Azure blob href (one token request per container, per message)."""
    tokens: dict[tuple[str, str], str] = {}
    for item in items:
        for asset in item.get("assets", {}).values():
            parts = urlsplit(asset["href"])
            if not parts.hostname or not parts.hostname.endswith(".blob.core.windows.net"):
                continue
            key = (parts.hostname.split(".")[0], parts.path.lstrip("/").split("/")[0])
            if key not in tokens:
                r = session.get(f"{sas_api_url}/api/sas/v1/token/{key[0]}/{key[1]}", timeout=30)
                r.raise_for_status()
                tokens[key] = r.json()["token"]
            asset["href"] = "?".join([asset["href"].split("?")[0], tokens[key]])


def ingest(session: requests.Session, args: argparse.Namespace, request: dict[str, Any]) -> str:
    """POST the items, poll the location as the quickstart does; returns the operation's final status."""
    collection = request["collection"]
    items = request["items"]
    sign_items(session, args.sas_api_url, items)
    for item in items:
        item["collection"] = collection
    response = session.post(
        f"{args.geocatalog_url}/stac/collections/{collection}/items?api-version={API_VERSION}",
        json={"type": "FeatureCollection", "features": items},
        timeout=60,
    )
    if response.status_code != 202:
        return "failed"
    location = response.headers["location"]
    while True:
        status = session.get(location, timeout=60).json()["status"]
        if status not in {"Pending", "Running"}:
            return "succeeded" if status == "Succeeded" else "failed"
        time.sleep(args.poll_seconds)


def run(args: argparse.Namespace) -> int:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {args.token}"
    done = 0
    client = ServiceBusClient.from_connection_string(args.connection_string)
    with client, client.get_queue_receiver(args.queue) as receiver, client.get_queue_sender(args.reply_queue) as sender:
        idle_since = time.monotonic()
        while done < args.count and time.monotonic() - idle_since < args.idle_seconds:
            for msg in receiver.receive_messages(max_message_count=1, max_wait_time=1):
                request = json.loads(b"".join(msg.body))
                try:
                    status = ingest(session, args, request)
                except requests.RequestException:
                    status = "failed"
                result = {"request_id": msg.message_id, "status": status}
                sender.send_messages(
                    ServiceBusMessage(
                        json.dumps(result), message_id=f"result-{msg.message_id}", correlation_id=msg.message_id
                    )
                )
                receiver.complete_message(msg)
                done += 1
                idle_since = time.monotonic()
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connection-string", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--reply-queue", required=True)
    parser.add_argument("--geocatalog-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--sas-api-url", required=True)
    parser.add_argument("--poll-seconds", type=float, default=5.0, help="sleep between polls (quickstart: 5)")
    parser.add_argument("--count", type=int, required=True, help="stop after this many messages")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="stop after this long without messages")
    parser.add_argument(
        "--hold",
        action="store_true",
        help="after --count messages, wait until stdin closes (so the runner can read /proc)",
    )
    args = parser.parse_args()
    run(args)
    if args.hold:
        sys.stdin.read()


if __name__ == "__main__":
    main()
