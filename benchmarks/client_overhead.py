"""CPU per GeoCatalog call: the worker's client on ``requests`` against azure-core (docs/benchmarks.md "azure-core").

    python -m benchmarks.client_overhead [--calls 2000] [--rounds 10]

Starts the GeoCatalog emulator as a subprocess (its CPU is not counted), writes one item, then reads it and its
operation ``--calls`` times through each client, in alternating rounds, and prints this process's median CPU per
call:

- ``worker``: ``worker.adapters.geocatalog.client.GeoCatalogClient`` (its own retry loop, rate limiter off);
- ``azure-core``: an azure-core ``PipelineClient`` over ``RequestsTransport`` with the policies an Azure SDK client
  builds (request id, headers, User-Agent, proxy, content decode, redirect, retry, bearer token, custom hook,
  network trace logging, distributed tracing, sensitive-header clean-up, HTTP logging), sending the same GETs;
- ``azure-planetarycomputer``: the official client's ``stac.get_item`` and ``ingestion.get_operation`` (models
  deserialised), when the package is importable.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from worker import __version__
from worker.adapters.geocatalog.client import DEFAULT_API_VERSION, GeoCatalogClient
from worker.adapters.geocatalog.retry import RetryPolicy
from worker.domain.secrets import Secret

TOKEN = "bench-token"  # the emulator's test token
ITEM = {
    "type": "Feature",
    "stac_version": "1.0.0",
    "id": "bench-1",
    "collection": "bench",
    "geometry": {"type": "Point", "coordinates": [10.0, 50.0]},
    "bbox": [10.0, 50.0, 10.0, 50.0],
    "properties": {"datetime": "2024-05-01T10:00:00Z"},
    "assets": {"data": {"href": "https://example.com/bench/bench-1.tif"}},
    "links": [],
}


class _StaticCredential:
    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(TOKEN, int(time.time()) + 3600)


def _interleaved(calls: int, rounds: int, cases: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Median CPU ms per call of each case, measured in ``rounds`` alternating rounds (the machine's load then
    weighs on every case alike)."""
    for fn in cases.values():
        for _ in range(20):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    per_round = max(1, calls // rounds)
    for _ in range(rounds):
        for name, fn in cases.items():
            t0 = time.process_time()
            for _ in range(per_round):
                fn()
            samples[name].append((time.process_time() - t0) / per_round * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def _pipeline_client(url: str) -> Any:
    from azure.core import PipelineClient
    from azure.core.pipeline import policies
    from azure.core.pipeline.transport import RequestsTransport

    credential = _StaticCredential()
    chain = [
        policies.RequestIdPolicy(),
        policies.HeadersPolicy(),
        policies.UserAgentPolicy(sdk_moniker=f"geocatalog-worker/{__version__}"),
        policies.ProxyPolicy(),
        policies.ContentDecodePolicy(),
        policies.RedirectPolicy(),
        policies.RetryPolicy(),
        policies.BearerTokenCredentialPolicy(credential, "https://geocatalog.spatio.azure.com/.default"),
        policies.CustomHookPolicy(),
        policies.NetworkTraceLoggingPolicy(),
        policies.DistributedTracingPolicy(),
        policies.SensitiveHeaderCleanupPolicy(),
        policies.HttpLoggingPolicy(),
    ]
    return PipelineClient(base_url=url, policies=chain, transport=RequestsTransport(session=requests.Session()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.client_overhead")
    parser.add_argument("--calls", type=int, default=2000, help="calls per client")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds the calls are split into")
    args = parser.parse_args(argv)
    emulator = subprocess.Popen(
        [
            *(sys.executable, "-m", "worker", "emulator", "geocatalog", "--port", "0", "--token", TOKEN),
            *("--operation-seconds", "0.05", "--collection", "bench"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert emulator.stdout is not None
        url = ""
        while not url:
            line = emulator.stdout.readline()
            if not line:
                raise RuntimeError("the GeoCatalog emulator exited before it listened")
            found = re.search(r"listening on (http://\S+)", line)
            url = found.group(1) if found else ""
        threading.Thread(target=emulator.stdout.read, daemon=True).start()
        client = GeoCatalogClient(url, static_token=Secret(TOKEN), retry=RetryPolicy(total_timeout=10))
        op = client.wait_for_operation(client.create_items("bench", [ITEM]), deadline=time.monotonic() + 30)
        assert op.succeeded, op
        from azure.core.rest import HttpRequest

        pipeline = _pipeline_client(url)
        query = {"api-version": DEFAULT_API_VERSION}

        def core_get(path: str) -> object:
            request = HttpRequest("GET", f"{url}{path}", params=query, headers={"Accept": "application/json"})
            response = pipeline.send_request(request, enforce_https=False)
            response.raise_for_status()
            return response.json()

        cases: dict[str, Callable[[], object]] = {
            "worker: GET item": lambda: client.get_item("bench", "bench-1"),
            "worker: GET operation": lambda: client.get_operation(op.id),
            "azure-core: GET item": lambda: core_get("/stac/collections/bench/items/bench-1"),
            "azure-core: GET operation": lambda: core_get(f"/inma/operations/{op.id}"),
        }
        try:
            from azure.planetarycomputer import PlanetaryComputerProClient
        except ImportError:
            print("azure-planetarycomputer: not installed (pip install azure-planetarycomputer to compare it too)")
        else:
            official = PlanetaryComputerProClient(url, _StaticCredential(), enforce_https=False)
            cases["azure-planetarycomputer: stac.get_item"] = lambda: official.stac.get_item(
                "bench", "bench-1", enforce_https=False
            )
            cases["azure-planetarycomputer: get_operation"] = lambda: official.ingestion.get_operation(
                op.id, enforce_https=False
            )
        figures = _interleaved(args.calls, args.rounds, cases)
        base = figures["worker: GET item"]
        for name, ms in figures.items():
            print(f"{name:42s} {ms:7.3f} ms CPU per call  ({ms / base:.2f}x the worker's GET item)")
        return 0
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
