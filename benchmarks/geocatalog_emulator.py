"""Throughput of the GeoCatalog emulator (goal: >= 1,500 requests/s with no injected latency).

The emulator runs in its own process (as in the worker's benchmarks); the load comes from this process, either
a pool of threads with one ``requests.Session`` each (``--client threads``) or one aiohttp client
(``--client aiohttp``). The mix: mostly GET item / GET operation, some POST item (202 + operation).

    .venv/bin/python benchmarks/geocatalog_emulator.py --seconds 10 --concurrency 16 --client aiohttp
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import threading
import time
from typing import Any

import requests
from gcw_emulators.builders import point, stac_item

C = "bench"
V = {"api-version": "2026-04-15"}


def _serve(port_queue: Any, stop: Any, data_dir: str | None) -> None:
    from gcw_emulators.geocatalog import GeoCatalogEmulator

    emu = GeoCatalogEmulator(port=0, operation_seconds=0.5, collections=[C], data_dir=data_dir).start()
    port_queue.put(emu.port)
    stop.wait()
    emu.stop()


def _item(i: int) -> dict[str, Any]:
    return stac_item(f"it-{i}", C, href=f"https://public.example.com/{i}.tif", geometry=point(1.0, 2.0))


def _plan(n: int, op_url: str, base: str) -> tuple[str, str, dict[str, Any] | None]:
    """Request n of the mix: 10 % POST item, 45 % GET item, 45 % GET operation."""
    if n % 10 == 0:
        return "POST", f"{base}/stac/collections/{C}/items", _item(1_000_000 + n)
    if n % 2:
        return "GET", f"{base}/stac/collections/{C}/items/it-0", None
    return "GET", op_url, None


def run_threads(base: str, op_url: str, seconds: float, concurrency: int) -> tuple[int, list[float], int]:
    headers = {"Authorization": "Bearer dev-token"}
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(10**9))
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        nonlocal errors
        local, bad = [], 0
        with requests.Session() as s:
            s.headers.update(headers)
            while time.perf_counter() < deadline:
                method, url, body = _plan(next(counter), op_url, base)
                t0 = time.perf_counter()
                r = s.request(method, url, params=V, json=body, timeout=10)
                local.append(time.perf_counter() - t0)
                bad += r.status_code >= 400
        with lock:
            latencies.extend(local)
            errors += bad

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(latencies), latencies, errors


async def _run_aiohttp(base: str, op_url: str, seconds: float, concurrency: int) -> tuple[int, list[float], int]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    counter = iter(range(10**9))
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers={"Authorization": "Bearer dev-token"}) as s:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                method, url, body = _plan(next(counter), op_url, base)
                t0 = time.perf_counter()
                async with s.request(method, url, params=V, json=body) as r:
                    await r.read()
                    errors += r.status >= 400
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--client", choices=["threads", "aiohttp"], default="aiohttp")
    parser.add_argument("--data-dir", help="use the SQLite store in this directory (default: memory)")
    parser.add_argument("--url", help="benchmark an already running emulator instead of starting one")
    args = parser.parse_args()

    proc = stop = None
    if args.url:
        base = args.url.rstrip("/")
    else:
        ctx = multiprocessing.get_context("spawn")
        port_queue, stop = ctx.Queue(), ctx.Event()
        proc = ctx.Process(target=_serve, args=(port_queue, stop, args.data_dir), daemon=True)
        proc.start()
        base = f"http://127.0.0.1:{port_queue.get(timeout=30)}"
    try:
        headers = {"Authorization": "Bearer dev-token"}
        r = requests.post(f"{base}/stac/collections/{C}/items", params=V, json=_item(0), headers=headers, timeout=10)
        r.raise_for_status()
        op_url = r.headers["operation-location"]
        while requests.get(op_url, headers=headers, timeout=10).json()["status"] in ("Pending", "Running"):
            time.sleep(0.1)
        start = time.perf_counter()
        if args.client == "threads":
            count, latencies, errors = run_threads(base, op_url, args.seconds, args.concurrency)
        else:
            count, latencies, errors = asyncio.run(_run_aiohttp(base, op_url, args.seconds, args.concurrency))
        elapsed = time.perf_counter() - start
        stats = requests.get(f"{base}/_emulator/stats", timeout=10).json()
    finally:
        if stop is not None and proc is not None:
            stop.set()
            proc.join(10)
    latencies.sort()
    pct = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000  # noqa: E731
    store = "sqlite" if args.data_dir else "memory"
    print(f"client={args.client} concurrency={args.concurrency} store={store} seconds={elapsed:.1f}")
    print(f"requests={count} errors={errors} throughput={count / elapsed:,.0f} req/s")
    print(
        f"latency ms: p50={pct(0.50):.2f} p95={pct(0.95):.2f} p99={pct(0.99):.2f} "
        f"mean={statistics.fmean(latencies) * 1000:.2f}"
    )
    print(f"emulator: items={stats['items']} operations={stats['operations']}")


if __name__ == "__main__":
    main()
