"""The strong baseline: the asyncio worker a competent engineer writes in an afternoon.

What it does, per request message, with up to ``--concurrency`` messages in flight in one process:
receive with ``azure.servicebus.aio`` (peek-lock, an ``AutoLockRenewer`` keeps the locks), sign asset hrefs with
SAS tokens from the SAS API cached per (account, container) until shortly before they expire, POST the items as
one ItemCollection with aiohttp, poll the operation's ``location`` every second (or after ``Retry-After`` when
the service sends one), retrying 429/5xx answers after their ``Retry-After`` a few times, then publish a result
to the reply queue and complete the message. No batching across requests, no shared budget, no probe of what
already landed: exactly what the worker adds on top is missing here, so the comparison measures that.

It speaks the same result shape as the quickstart baseline (``benchmarks.baseline``) and takes the same flags
plus ``--concurrency``; it runs as its own process so that its CPU and memory are measured like a worker's:

    python -m benchmarks.peer --connection-string ... --queue requests --reply-queue replies \
        --geocatalog-url http://127.0.0.1:PORT --token dev-token --sas-api-url http://127.0.0.1:PORT --count 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import AutoLockRenewer, ServiceBusClient, ServiceBusReceiver, ServiceBusSender

API_VERSION = "2026-04-15"
RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})
MAX_TRIES = 6


@dataclass
class SasCache:
    """SAS tokens per (account, container), shared by every in-flight request; one fetch per key at a time."""

    http: aiohttp.ClientSession
    sas_api_url: str
    tokens: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)

    async def token(self, account: str, container: str) -> str:
        key = (account, container)
        cached = self.tokens.get(key)
        if cached and cached[1] - 300 > time.time():
            return cached[0]
        async with self.locks.setdefault(key, asyncio.Lock()):
            cached = self.tokens.get(key)
            if cached and cached[1] - 300 > time.time():
                return cached[0]
            async with self.http.get(f"{self.sas_api_url}/api/sas/v1/token/{account}/{container}") as r:
                r.raise_for_status()
                body = await r.json()
            expiry = datetime.fromisoformat(body["msft:expiry"].replace("Z", "+00:00")).astimezone(UTC).timestamp()
            self.tokens[key] = (body["token"], expiry)
            return body["token"]

    async def sign(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            for asset in item.get("assets", {}).values():
                parts = urlsplit(asset["href"])
                if not parts.hostname or not parts.hostname.endswith(".blob.core.windows.net"):
                    continue
                token = await self.token(parts.hostname.split(".")[0], parts.path.lstrip("/").split("/")[0])
                asset["href"] = f"{asset['href'].split('?')[0]}?{token}"


def retry_after(headers: Any, default: float) -> float:
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default


async def call(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, Any, Any]:
    """One HTTP call with a few retries of 429/5xx and connection errors, honouring Retry-After."""
    delay = 0.5
    for attempt in range(MAX_TRIES):
        try:
            async with http.request(method, url, **kwargs) as r:
                if r.status in RETRYABLE and attempt < MAX_TRIES - 1:
                    await asyncio.sleep(retry_after(r.headers, delay))
                    delay *= 2
                    continue
                body = await r.json(content_type=None) if r.content_length != 0 else None
                return r.status, r.headers, body
        except aiohttp.ClientError:
            if attempt == MAX_TRIES - 1:
                raise
            await asyncio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


async def ingest(http: aiohttp.ClientSession, sas: SasCache, args: argparse.Namespace, request: dict[str, Any]) -> str:
    collection = request["collection"]
    items = request["items"]
    await sas.sign(items)
    for item in items:
        item["collection"] = collection
    status, headers, _ = await call(
        http,
        "POST",
        f"{args.geocatalog_url}/stac/collections/{collection}/items?api-version={API_VERSION}",
        json={"type": "FeatureCollection", "features": items},
    )
    if status != 202:
        return "failed"
    location = headers["location"]
    while True:
        status, headers, body = await call(http, "GET", location)
        if status != 200:
            return "failed"
        if body["status"] not in {"Pending", "Running"}:
            return "succeeded" if body["status"] == "Succeeded" else "failed"
        await asyncio.sleep(retry_after(headers, 1.0))


@dataclass
class Peer:
    args: argparse.Namespace
    http: aiohttp.ClientSession
    sas: SasCache
    receiver: ServiceBusReceiver
    sender: ServiceBusSender
    renewer: AutoLockRenewer
    slots: asyncio.Semaphore
    # the aio sender's link must not be opened by many tasks at once (the SDK races on it), and one link
    # sends one message at a time anyway
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    done: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, msg: Any) -> None:
        try:
            request = json.loads(b"".join(msg.body))
            try:
                status = await ingest(self.http, self.sas, self.args, request)
            except (aiohttp.ClientError, KeyError, ValueError):
                status = "failed"
            result = {"request_id": msg.message_id, "status": status}
            async with self.send_lock:
                await self.sender.send_messages(
                    ServiceBusMessage(
                        json.dumps(result), message_id=f"result-{msg.message_id}", correlation_id=msg.message_id
                    )
                )
            await self.receiver.complete_message(msg)
            self.done += 1
        finally:
            self.slots.release()

    async def run(self) -> None:
        idle_since = time.monotonic()
        while self.done + len(self.tasks) < self.args.count or self.tasks:
            if time.monotonic() - idle_since > self.args.idle_seconds:
                break
            free = self.args.concurrency - len(self.tasks)
            wanted = min(free, self.args.count - self.done - len(self.tasks))
            if wanted <= 0:
                await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            batch = await self.receiver.receive_messages(max_message_count=min(wanted, 100), max_wait_time=1)
            if batch:
                idle_since = time.monotonic()
            for msg in batch:
                await self.slots.acquire()
                self.renewer.register(self.receiver, msg, max_lock_renewal_duration=600)
                task = asyncio.create_task(self.handle(msg))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)


async def run(args: argparse.Namespace) -> int:
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    headers = {"Authorization": f"Bearer {args.token}"}
    async with (
        aiohttp.ClientSession(connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=60)) as http,
        ServiceBusClient.from_connection_string(args.connection_string) as client,
        client.get_queue_receiver(args.queue, prefetch_count=0) as receiver,
        client.get_queue_sender(args.reply_queue) as sender,
    ):
        renewer = AutoLockRenewer()
        peer = Peer(
            args, http, SasCache(http, args.sas_api_url), receiver, sender, renewer, asyncio.Semaphore(args.concurrency)
        )
        try:
            await peer.run()
        finally:
            with contextlib.suppress(Exception):
                await renewer.close()
        return peer.done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connection-string", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--reply-queue", required=True)
    parser.add_argument("--geocatalog-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--sas-api-url", required=True)
    parser.add_argument("--concurrency", type=int, default=512, help="messages in flight")
    parser.add_argument("--poll-seconds", type=float, default=1.0, help="accepted for the runner; polls are 1 s")
    parser.add_argument("--count", type=int, required=True, help="stop after this many messages")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="stop after this long without messages")
    parser.add_argument("--hold", action="store_true", help="after --count messages, wait until stdin closes")
    args = parser.parse_args()
    asyncio.run(run(args))
    if args.hold:
        sys.stdin.read()


if __name__ == "__main__":
    main()
