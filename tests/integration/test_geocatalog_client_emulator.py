"""Integration tests: the GeoCatalog client and SAS signing over real HTTP against the GeoCatalog emulator."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import requests
from structlog.testing import capture_logs

from tests.support.harness import stac_item
from worker.adapters.geocatalog.client import (
    SCOPE,
    USER_AGENT,
    AuthError,
    Cancelled,
    CredentialUnavailable,
    GeoCatalogClient,
    NetworkError,
    NotFound,
    Operation,
    OperationTimeout,
    RetryPolicy,
    Throttled,
    ValidationError,
    scope_for,
)
from worker.adapters.hosts import HostAllowList
from worker.adapters.ratelimit import RateLimiter
from worker.adapters.sas import (
    GeoCatalogSasProvider,
    HrefSigner,
    PlanetaryComputerSasProvider,
    SigningError,
    TokenCache,
)
from worker.domain.errors import ConfigurationFault, ErrorKind, FaultCause
from worker.domain.secrets import Secret
from worker.observability.metrics import Metrics

pytestmark = pytest.mark.timeout(60)

PRIVATE = "privacct.blob.core.windows.net"
FAST_RETRY = RetryPolicy(max_attempts=5, total_timeout=20, backoff_base=0.05, backoff_max=0.2)


def make_item(item_id: str, collection: str, href: str = "https://example.com/data/a.tif") -> dict:
    return stac_item(
        item_id, collection, href=href, asset_type="image/tiff; application=geotiff", datetime="2024-01-01T00:00:00Z"
    )


def client_for(emu, **kw) -> GeoCatalogClient:
    kw.setdefault("static_token", Secret(emu.token))
    kw.setdefault("retry", FAST_RETRY)
    kw.setdefault("poll_initial", 0.05)
    kw.setdefault("poll_max", 0.2)
    kw.setdefault("poll_max_rate", 50)
    kw.setdefault("timeout", (2.0, 5.0))
    return GeoCatalogClient(emu.url, **kw)


def ensure_collection(client: GeoCatalogClient, cid: str) -> None:
    resp = client.request(
        "POST", "/stac/collections", json={"type": "Collection", "id": cid, "description": cid}, ok=(200, 201, 202)
    )
    op = Operation.from_json(resp.json())
    done = client.wait_for_operation(op, deadline=time.monotonic() + 10)
    assert done.succeeded, done


@pytest.fixture
def emu(gc_emulator):
    return gc_emulator(operation_seconds=0.1, private_hosts=[PRIVATE], sas_expiry_seconds=3600)


@pytest.fixture
def client(emu):
    c = client_for(emu, metrics=Metrics())
    ensure_collection(c, "col")
    yield c
    c.close()


def wait(client: GeoCatalogClient, op):
    return client.wait_for_operation(op, deadline=time.monotonic() + 10)


# ------------------------------------------------------------------------------------------ happy paths


def test_create_replace_delete_poll(client: GeoCatalogClient) -> None:
    op = client.create_items("col", [make_item("a", "col"), make_item("b", "col")])
    assert op.type == "AddItem" and not op.terminal
    done = wait(client, op)
    assert done.succeeded, done
    assert done.additional_information.get("TotalItems") == "2"
    assert client.get_item("col", "a")["id"] == "a"

    replaced = make_item("a", "col")
    replaced["properties"]["title"] = "new"
    done = wait(client, client.replace_item("col", replaced))
    assert done.succeeded and done.type == "UpdateItem"
    assert client.get_item("col", "a")["properties"]["title"] == "new"

    done = wait(client, client.delete_item("col", "a"))
    assert done.succeeded and done.type == "DeleteItem"
    assert client.get_item("col", "a") is None

    # Deleting again: 202, operation Failed with NoRecordsToDelete.
    again = wait(client, client.delete_item("col", "a"))
    assert not again.succeeded and again.error_code == "NoRecordsToDelete"

    # Creating an existing id: the operation fails asynchronously.
    dup = wait(client, client.create_items("col", [make_item("b", "col")]))
    assert dup.status == "Failed" and dup.error_code == "ItemAlreadyExistsInCollection"

    text = client.metrics.render().decode()
    assert 'route="/stac/collections/{collectionId}/items"' in text
    assert 'route="/inma/operations/{operationId}"' in text
    assert "/stac/collections/col/" not in text  # route templates, never raw URLs
    assert 'gcw_geocatalog_operation_seconds_count{status="Succeeded",type="AddItem"}' in text


def test_every_call_carries_the_user_agent_and_its_own_client_request_id(emu, client: GeoCatalogClient) -> None:
    """Asserted at the emulator, which counts what arrived: every GeoCatalog call names the worker and carries
    a fresh x-ms-client-request-id (Azure SDK convention), retries included."""
    wait(client, client.create_items("col", [make_item("ua1", "col")]))
    client.get_item("col", "ua1")
    client.get_item("col", "absent")
    clients = emu.stats()["clients"]
    (product,) = [p for p in clients if p.startswith("geocatalog-worker/")]
    assert product == USER_AGENT.split(" ")[0]
    counts = clients[product]
    geocatalog_calls = sum(sum(by_status.values()) for by_status in emu.stats()["requests"].values())
    assert counts["requests"] == geocatalog_calls >= 4  # collection POST + poll, item POST + poll, two GETs
    assert counts["with_client_request_id"] == counts["distinct_client_request_ids"] == counts["requests"]


def test_a_failure_carries_the_service_request_ids(client: GeoCatalogClient) -> None:
    with capture_logs() as logs, pytest.raises(NotFound) as info:
        client.create_items("nope", [make_item("x", "nope")])
    ids = info.value.request_ids
    assert set(ids) >= {"client_request_id", "x_request_id", "x_azure_ref", "mise_correlation_id"}
    assert f"x_request_id={ids['x_request_id']}" in str(info.value)  # reaches the failure result's text
    (line,) = [e for e in logs if e["event"] == "geocatalog_call_failed"]
    assert line["x_request_id"] == ids["x_request_id"] and line["code"] == "ResourceNotFound"


def test_the_token_scope_follows_the_endpoints_cloud() -> None:
    assert scope_for("https://cat.abc.uksouth.geocatalog.spatio.azure.com") == SCOPE
    assert scope_for("https://cat.abc.usgovvirginia.geocatalog.spatio.azure.us/") == (
        "https://geocatalog.spatio.azure.us/.default"
    )
    assert scope_for("http://127.0.0.1:8080") is None
    assert scope_for("https://geocatalog.spatio.azure.us.evil.example") is None

    class Recording:
        scopes: list[str] = []

        def get_token(self, *scopes: str, **kw):  # the azure-identity TokenCredential protocol
            self.scopes.extend(scopes)
            raise RuntimeError("no token here")

    from worker.servicebus.config import RunConfig
    from worker.servicebus.wiring import build_geocatalog_client

    credential = Recording()
    for url, flag, expected in [
        ("https://cat.x.usgovvirginia.geocatalog.spatio.azure.us", None, "https://geocatalog.spatio.azure.us/.default"),
        ("https://cat.x.uksouth.geocatalog.spatio.azure.com", None, SCOPE),
        ("https://proxy.internal", "https://custom/.default", "https://custom/.default"),
    ]:
        cfg = RunConfig(geocatalog_url=url, geocatalog_scope=flag)
        assert cfg.effective_geocatalog_scope() == expected
        gc = build_geocatalog_client(cfg, Metrics(), credential=credential)
        with pytest.raises(CredentialUnavailable):
            gc.get_item("c", "i")
        assert credential.scopes[-1] == expected


def test_create_bare_item(client: GeoCatalogClient) -> None:
    done = wait(client, client.create_items("col", make_item("bare", "col")))
    assert done.succeeded
    assert client.get_item("col", "bare") is not None


# ------------------------------------------------------------------------------------------ errors


def test_validation_error_carries_service_code(client: GeoCatalogClient) -> None:
    bad = make_item("bad", "col")
    del bad["geometry"]
    with pytest.raises(ValidationError) as info:
        client.create_items("col", [bad])
    err = info.value
    assert err.kind == ErrorKind.INVALID
    assert err.status == 400
    assert err.code not in ("", "ValidationError")  # the service's own code
    assert "geometry" in str(err)


def test_missing_collection_is_not_found(client: GeoCatalogClient) -> None:
    with pytest.raises(NotFound) as info:
        client.create_items("nope", [make_item("x", "nope")])
    assert info.value.status == 404
    assert info.value.code == "ResourceNotFound"


def test_wrong_static_token_is_auth_error_without_token_in_text(emu) -> None:
    c = client_for(emu, static_token=Secret("wrong-token-value"))
    with capture_logs() as logs, pytest.raises(AuthError) as info:
        c.get_item("col", "x")
    assert info.value.kind == ErrorKind.CONFIGURATION and info.value.status == 401
    assert info.value.cause == FaultCause.GEOCATALOG_UNAUTHORIZED
    assert "wrong-token-value" not in str(info.value)
    assert "wrong-token-value" not in repr(logs)
    assert emu.token not in repr(logs)


class CountingCredential:
    """A TokenCredential (the azure-identity protocol) serving a sequence of tokens."""

    def __init__(self, tokens: list[str], lifetime: float = 3600) -> None:
        self.tokens = tokens
        self.lifetime = lifetime
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs):
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        token = self.tokens[min(len(self.scopes) - 1, len(self.tokens) - 1)]
        return AccessToken(token, int(time.time() + self.lifetime))


def test_credential_refresh_once_on_401(emu) -> None:
    cred = CountingCredential(["stale-token", emu.token])
    c = client_for(emu, credential=cred)
    ensure_collection(c, "col")
    assert c.get_item("col", "missing") is None
    assert len(cred.scopes) == 2  # one refresh after the 401
    assert cred.scopes[0] == ("https://geocatalog.spatio.azure.com/.default",)


def test_credential_401_after_refresh_is_auth_error(emu) -> None:
    cred = CountingCredential(["bad-1", "bad-2", "bad-3"])
    c = client_for(emu, credential=cred)
    with pytest.raises(AuthError):
        c.get_item("col", "x")
    assert len(cred.scopes) == 2  # refreshed exactly once


def test_credential_token_refreshed_before_expiry(emu) -> None:
    cred = CountingCredential([emu.token], lifetime=200)  # < the 5 min refresh margin: refreshed on every call
    c = client_for(emu, credential=cred)
    ensure_collection(c, "col")
    n = len(cred.scopes)
    c.get_item("col", "x")
    assert len(cred.scopes) == n + 1
    cred.lifetime = 3600
    c.get_item("col", "x")
    m = len(cred.scopes)
    c.get_item("col", "x")
    assert len(cred.scopes) == m  # cached now


# ------------------------------------------------------------------------------------------ retries


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_retried_to_success(emu, client: GeoCatalogClient, status: int) -> None:
    emu.set_faults([f"status={status},count=2,retry-after=0.3,path=/stac,method=POST"])
    start = time.monotonic()
    with capture_logs() as logs:
        op = client.create_items("col", [make_item(f"r{status}", "col")])
    elapsed = time.monotonic() - start
    assert wait(client, op).succeeded
    retries = [e for e in logs if e["event"] == "geocatalog_retry"]
    assert [e["status"] for e in retries] == [status, status]
    assert all(e["delay"] == pytest.approx(0.3) for e in retries)
    assert elapsed >= 0.6  # the two Retry-After waits were honoured


def test_429_feeds_the_rate_limiter(emu) -> None:
    limiter = RateLimiter(40)
    c = client_for(emu, rate_limiter=limiter)
    ensure_collection(c, "col")
    emu.set_faults(["status=429,count=1,retry-after=0.1,path=/stac"])
    assert c.get_item("col", "nothing") is None
    assert limiter.throttle_count == 1
    assert limiter.rate == pytest.approx(20)


def test_throttled_until_attempts_exhausted(emu, client: GeoCatalogClient) -> None:
    emu.set_faults(["status=429,retry-after=0.05,path=/stac"])
    with pytest.raises(Throttled) as info:
        client.get_item("col", "x")
    assert info.value.kind == ErrorKind.TRANSIENT
    assert info.value.retry_after == pytest.approx(0.05)
    assert "5 attempts" in str(info.value)


def test_long_retry_after_is_not_slept_in_process(emu, client: GeoCatalogClient) -> None:
    emu.set_faults(["status=503,retry-after=120,path=/stac"])
    start = time.monotonic()
    with pytest.raises(Exception) as info:
        client.get_item("col", "x")
    assert time.monotonic() - start < 5
    assert info.value.kind == ErrorKind.TRANSIENT
    assert info.value.retry_after == pytest.approx(120)


def test_no_retry_for_other_4xx(emu, client: GeoCatalogClient) -> None:
    emu.set_faults(["status=409,count=1,path=/stac"])
    with capture_logs() as logs, pytest.raises(Exception) as info:
        client.get_item("col", "x")
    assert info.value.status == 409
    assert not [e for e in logs if e["event"] == "geocatalog_retry"]


def test_connection_reset_retried(emu, client: GeoCatalogClient) -> None:
    emu.set_faults(["reset,count=2,path=/stac"])
    done = wait(client, client.create_items("col", [make_item("reset", "col")]))
    assert done.succeeded


def test_connection_refused_is_network_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = GeoCatalogClient(
        f"http://127.0.0.1:{port}",
        static_token=Secret("t"),
        retry=RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.02),
    )
    with pytest.raises(NetworkError) as info:
        c.get_item("col", "x")
    assert info.value.kind == ErrorKind.TRANSIENT


# ------------------------------------------------------------------------------------------ polling


def test_wait_times_out_with_operation_timeout(gc_emulator) -> None:
    emu = gc_emulator(operation_seconds=30)
    c = client_for(emu)
    # Creating a collection is an operation too (30 s here): poll it past a short deadline.
    resp = c.request("POST", "/stac/collections", json={"type": "Collection", "id": "slow"}, ok=(202,))
    op = Operation.from_json(resp.json())
    start = time.monotonic()
    with pytest.raises(OperationTimeout) as info:
        c.wait_for_operation(op, deadline=time.monotonic() + 0.5)
    assert 0.4 <= time.monotonic() - start < 3
    assert info.value.kind == ErrorKind.TRANSIENT


def test_wait_stops_promptly_on_cancel(gc_emulator) -> None:
    emu = gc_emulator(operation_seconds=30)
    c = client_for(emu, poll_initial=5.0, poll_max=5.0)  # a poll-boundary-only check would take >= 5 s
    resp = c.request("POST", "/stac/collections", json={"type": "Collection", "id": "slow"}, ok=(202,))
    op = Operation.from_json(resp.json())
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(Cancelled):
        c.wait_for_operation(op, deadline=time.monotonic() + 20, cancel=cancel)
    assert time.monotonic() - start < 3


def test_poll_rate_is_bounded(gc_emulator) -> None:
    emu = gc_emulator(operation_seconds=2.0)
    c = client_for(emu, poll_initial=0.5, poll_max=5.0, poll_max_rate=1.2)
    resp = c.request("POST", "/stac/collections", json={"type": "Collection", "id": "polled"}, ok=(202,))
    op = Operation.from_json(resp.json())
    before = emu.stats()
    start = time.monotonic()
    done = c.wait_for_operation(op, deadline=time.monotonic() + 10)
    elapsed = time.monotonic() - start
    after = emu.stats()
    assert done.succeeded
    gets = _count_requests(after) - _count_requests(before)
    assert 1 <= gets <= 1 + 1.2 * elapsed


def _count_requests(stats: dict) -> int:
    return sum(stats["requests"].get("GET /inma/operations/{operationId}", {}).values())


# ------------------------------------------------------------------------------------------ SAS


def test_pc_sas_provider_fetches_and_signed_asset_ingests(emu, client: GeoCatalogClient) -> None:
    provider = PlanetaryComputerSasProvider(emu.url)
    metrics = Metrics()
    signer = HrefSigner(TokenCache(provider, metrics=metrics), HostAllowList(["*.blob.core.windows.net"]))
    href = f"https://{PRIVATE}/data/scene.tif"

    unsigned = wait(client, client.create_items("col", [make_item("u1", "col", href)]))
    assert unsigned.status == "Failed"  # the private storage cannot be read without a token

    item = make_item("s1", "col", href)
    signed = signer.sign_item(item)
    assert "sig=" in signed["assets"]["data"]["href"] and "sig=" not in item["assets"]["data"]["href"]
    done = wait(client, client.create_items("col", [signed]))
    assert done.succeeded, done
    stored = client.get_item("col", "s1")
    assert "sig=" not in stored["assets"]["data"]["href"]


def test_pc_sas_provider_subscription_key_and_errors(emu) -> None:
    provider = PlanetaryComputerSasProvider(emu.url, subscription_key=Secret("sub-key"))
    token = provider.fetch("privacct", "data")
    assert token.expires_at.timestamp() > time.time()
    emu.set_faults(["status=503,path=/api/sas"])
    with pytest.raises(SigningError) as info:
        PlanetaryComputerSasProvider(emu.url, session=requests.Session()).fetch("privacct", "data")
    assert info.value.kind == ErrorKind.TRANSIENT
    emu.set_faults(["status=403,path=/api/sas"])
    with pytest.raises(SigningError) as info:
        PlanetaryComputerSasProvider(emu.url, session=requests.Session()).fetch("privacct", "data")
    assert info.value.kind == ErrorKind.PERMANENT


def test_geocatalog_sas_provider(emu, client: GeoCatalogClient) -> None:
    provider = GeoCatalogSasProvider(None, "col", client=client)
    token = provider.fetch("privacct", "data")
    assert token.token.reveal()
    assert token.expires_at.timestamp() > time.time()
    built = GeoCatalogSasProvider(emu.url, "col", static_token=Secret(emu.token))
    assert built.fetch("x", "y").token.reveal()
    # a rejected credential is the deployment's fault, not the request's: it holds intake like any other call
    with pytest.raises(ConfigurationFault) as info:
        GeoCatalogSasProvider(emu.url, "col", static_token=Secret("wrong")).fetch("x", "y")
    assert info.value.kind == ErrorKind.CONFIGURATION and "wrong" not in str(info.value)


def test_sas_token_refreshed_on_expiry(gc_emulator) -> None:
    emu = gc_emulator(operation_seconds=0.05, private_hosts=[PRIVATE], sas_expiry_seconds=2)
    c = client_for(emu)
    ensure_collection(c, "col")
    provider = PlanetaryComputerSasProvider(emu.url)
    cache = TokenCache(provider, margin=timedelta(seconds=0.5))
    signer = HrefSigner(cache, HostAllowList(["*.blob.core.windows.net"]))
    href = f"https://{PRIVATE}/data/scene.tif"
    first = signer.sign_href(href)
    assert wait(c, c.create_items("col", [make_item("e1", "col", first)])).succeeded
    time.sleep(2.1)  # the first token has expired
    stale = wait(c, c.create_items("col", [make_item("e2", "col", first)]))
    assert stale.status == "Failed"  # proof that the old token no longer works
    second = signer.sign_href(href)
    assert second != first
    assert cache.fetches == 2
    assert wait(c, c.create_items("col", [make_item("e3", "col", second)])).succeeded


def test_no_secret_in_logs_or_errors(emu) -> None:
    emu.set_faults(["status=503,count=1,path=/stac", "reset,count=1,path=/inma"])
    c = client_for(emu, metrics=Metrics())
    provider = PlanetaryComputerSasProvider(emu.url, subscription_key=Secret("the-sub-key"))
    cache = TokenCache(provider)
    signer = HrefSigner(cache, HostAllowList(["*.blob.core.windows.net"]))
    texts: list[str] = []
    with capture_logs() as logs:
        ensure_collection(c, "col")
        signed = signer.sign_item(make_item("n1", "col", f"https://{PRIVATE}/data/a.tif?sig=OLDSECRET"))
        token = cache.get("privacct", "data").token.reveal()
        done = wait(c, c.create_items("col", [signed]))
        assert done.succeeded
        bad = dict(signed, geometry=None)
        try:
            c.create_items("col", [bad])
        except ValidationError as exc:
            texts.append(str(exc))
            texts.append(repr(exc))
        try:
            client_for(emu, static_token=Secret("nope-token")).get_item("col", "n1")
        except AuthError as exc:
            texts.append(str(exc))
    dump = repr(logs) + "\n".join(texts) + c.metrics.render().decode()
    for secret in (token, emu.token, "the-sub-key", "OLDSECRET", "nope-token"):
        assert secret not in dump
    sig = dict(p.split("=", 1) for p in token.split("&"))["sig"]
    assert sig not in dump
    assert texts  # the error paths were exercised


# ------------------------------------------------------------------------------------------ budget / concurrency


def _statuses(emu, route: str) -> dict[str, int]:
    return emu.stats()["requests"].get(route, {})


def _hammer(client: GeoCatalogClient, calls: int, threads: int) -> list[BaseException]:
    errors: list[BaseException] = []
    lock = threading.Lock()
    per_thread = calls // threads

    def run() -> None:
        for i in range(per_thread):
            try:
                assert client.get_item("col", f"missing-{i}") is None
            except BaseException as exc:
                with lock:
                    errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    return errors


@pytest.mark.slow
def test_rate_limiter_keeps_under_the_service_budget(gc_emulator) -> None:
    route = "GET /stac/collections/{collectionId}/items/{itemId}"
    # Without a limiter: 40 concurrent calls against a 20/s budget meet 429s (and are retried to success).
    emu = gc_emulator(request_budget=20, collections=["col"])
    c = client_for(emu, retry=RetryPolicy(max_attempts=8, total_timeout=20), pool_size=8)
    assert _hammer(c, 40, 8) == []
    assert _statuses(emu, route).get("429", 0) > 0

    # With this process's share at 15/s: the same load never exceeds the budget.
    emu2 = gc_emulator(request_budget=20, collections=["col"])
    limiter = RateLimiter(15, burst=1)
    c2 = client_for(emu2, rate_limiter=limiter, pool_size=8)
    assert _hammer(c2, 40, 8) == []
    assert _statuses(emu2, route).get("429", 0) == 0
    assert _statuses(emu2, route).get("404", 0) == 40
    assert limiter.throttle_count == 0


def test_concurrent_writes_share_one_client(emu, client: GeoCatalogClient) -> None:
    ops = []
    lock = threading.Lock()

    def run(n: int) -> None:
        op = client.create_items("col", [make_item(f"c{n}-{k}", "col") for k in range(3)])
        done = wait(client, op)
        with lock:
            ops.append(done)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(ops) == 16 and all(op.succeeded for op in ops)
    assert len({op.id for op in ops}) == 16
    assert emu.stats()["items"].get("col") == 48


def test_poll_honours_operation_retry_after(gc_emulator) -> None:
    emu = gc_emulator(operation_seconds=1.0, poll_retry_after=0.4, collections=["col"])
    c = client_for(emu)  # its own adaptive interval would be 0.05..0.2 s
    op = c.create_items("col", [make_item("ra", "col")])
    start = time.monotonic()
    done = wait(c, op)
    elapsed = time.monotonic() - start
    assert done.succeeded
    gets = _count_requests(emu.stats())
    assert gets <= elapsed / 0.4 + 1  # ~3 polls, not the ~8 the adaptive interval would make


class _EmptyAcceptedHandler:
    """A real HTTP server whose POST answers 202 with an empty body and an operation-location elsewhere."""

    @staticmethod
    def serve(foreign_location: str):
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        seen: list[tuple[str, str, str | None]] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen.append(("POST", self.path, self.headers.get("Authorization")))
                self.send_response(202)
                self.send_header("operation-location", foreign_location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                seen.append(("GET", self.path, self.headers.get("Authorization")))
                body = json.dumps({"id": "op-42", "status": "Running", "type": "AddItem"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, seen


def test_empty_202_falls_back_to_operation_location_on_own_host() -> None:
    server, seen = _EmptyAcceptedHandler.serve("https://evil.example.com/inma/operations/op-42?api-version=x")
    try:
        c = GeoCatalogClient(f"http://127.0.0.1:{server.server_port}", static_token=Secret("tok"), retry=FAST_RETRY)
        op = c.create_items("col", [make_item("x", "col")])
        assert op.id == "op-42" and op.status == "Running" and op.submitted_at is not None
        assert [(m, p.split("?")[0]) for m, p, _ in seen] == [
            ("POST", "/stac/collections/col/items"),
            ("GET", "/inma/operations/op-42"),  # fetched from our base URL, not from the foreign host
        ]
        assert all(auth == "Bearer tok" for _, _, auth in seen)
        assert all("api-version=2026-04-15" in p for _, p, _ in seen)
    finally:
        server.shutdown()
        server.server_close()
