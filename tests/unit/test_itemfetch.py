"""ItemFetcher against a real HTTP server on 127.0.0.1 (http.server in a thread): allow-list, internal hosts,
redirect checks, size cap, timeouts, error kinds, redaction."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from worker.adapters.hosts import HostAllowList
from worker.adapters.itemfetch import ItemFetcher, ItemFetchError, _resolves_internal
from worker.domain.contract import InvalidRequest
from worker.domain.errors import ErrorKind

pytestmark = pytest.mark.timeout(60)

ITEM = {
    "type": "Feature",
    "stac_version": "1.0.0",
    "id": "tile-1",
    "geometry": {"type": "Point", "coordinates": [10.0, 50.0]},
    "bbox": [10.0, 50.0, 10.0, 50.0],
    "properties": {"datetime": "2024-05-01T10:00:00Z"},
    "assets": {"data": {"href": "https://acct.blob.core.windows.net/c/a.tif"}},
}


class Server:
    """A tiny scripted HTTP server: ``routes[path] = callable(handler)``; records every path it was asked for."""

    def __init__(self) -> None:
        self.routes: dict = {}
        self.hits: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits.append(self.path)
                route = server.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_error(404)
                    return
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    route(self)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def send(status: int, body: bytes = b"", headers: dict | None = None, length: bool = True):
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if length:
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return route


def redirect(location: str, status: int = 302):
    return send(status, b"", {"Location": location})


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def other():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def session():
    with requests.Session() as s:
        yield s


def fetcher(session, server, **kw) -> ItemFetcher:
    return ItemFetcher(session, HostAllowList([f"127.0.0.1:{server.port}"]), **kw)


def fetch_error(f: ItemFetcher, url: str) -> ItemFetchError:
    with pytest.raises(ItemFetchError) as info:
        f.fetch(url)
    return info.value


def test_fetches_and_validates_an_item(server, session):
    server.routes["/item.json"] = send(200, json.dumps(ITEM).encode(), {"Content-Type": "application/geo+json"})
    f = fetcher(session, server)
    assert f.fetch(f"{server.base}/item.json") == ITEM
    item = f.fetch_item(f"{server.base}/item.json?sv=1&sig=x", "coll", "item_urls[0]")
    assert item["id"] == "tile-1" and item["collection"] == "coll"


def test_invalid_stac_after_fetch_names_the_url_index_path(server, session):
    bad = dict(ITEM, properties={"datetime": "soon"})
    server.routes["/bad.json"] = send(200, json.dumps(bad).encode())
    with pytest.raises(InvalidRequest) as info:
        fetcher(session, server).fetch_item(f"{server.base}/bad.json", "coll", "item_urls[4]")
    assert info.value.field == "item_urls[4].properties.datetime"
    server.routes["/other-coll.json"] = send(200, json.dumps(dict(ITEM, collection="x")).encode())
    with pytest.raises(InvalidRequest) as info:
        fetcher(session, server).fetch_item(f"{server.base}/other-coll.json", "coll", "item_urls[0]")
    assert info.value.field == "item_urls[0].collection"


def test_declared_too_large_body_is_refused_without_reading(server, session):
    server.routes["/big"] = send(200, b" " * 2_000_000)
    err = fetch_error(fetcher(session, server), f"{server.base}/big")
    assert err.kind is ErrorKind.INVALID and err.code == "ItemTooLarge" and "2000000 bytes" in str(err)


def test_undeclared_too_large_body_is_cut_off_at_the_cap(server, session):
    def endless(h):
        h.send_response(200)
        h.end_headers()  # no Content-Length: HTTP/1.0 body until close
        for _ in range(200):
            h.wfile.write(b"[" + b"1," * 50_000)

    server.routes["/endless"] = endless
    started = time.monotonic()
    err = fetch_error(fetcher(session, server, max_bytes=100_000), f"{server.base}/endless")
    assert err.kind is ErrorKind.INVALID and err.code == "ItemTooLarge" and "100000" in str(err)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "body,reason",
    [
        (b"hello", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"", "empty"),
        (b'{"a": NaN}', "NaN"),
    ],
)
def test_not_an_item_document_is_invalid(server, session, body, reason):
    server.routes["/doc"] = send(200, body)
    err = fetch_error(fetcher(session, server), f"{server.base}/doc")
    assert err.kind is ErrorKind.INVALID and err.code == "ItemNotJson" and reason in str(err)


@pytest.mark.parametrize(
    "status,headers,kind,code,retry_after",
    [
        (404, {}, ErrorKind.INVALID, "ItemNotFound", None),
        (410, {}, ErrorKind.INVALID, "ItemNotFound", None),
        (403, {}, ErrorKind.INVALID, "ItemFetchFailed", None),
        (200 + 4, {}, ErrorKind.INVALID, "ItemFetchFailed", None),
        (500, {}, ErrorKind.TRANSIENT, "ItemFetchUnavailable", None),
        (502, {}, ErrorKind.TRANSIENT, "ItemFetchUnavailable", None),
        (503, {"Retry-After": "7"}, ErrorKind.TRANSIENT, "ItemFetchUnavailable", 7.0),
        (429, {"Retry-After": "2"}, ErrorKind.TRANSIENT, "ItemFetchUnavailable", 2.0),
    ],
)
def test_http_status_classification(server, session, status, headers, kind, code, retry_after):
    server.routes["/s"] = send(status, b"nope", headers)
    err = fetch_error(fetcher(session, server), f"{server.base}/s")
    assert (err.kind, err.code, err.retry_after) == (kind, code, retry_after)
    assert f"HTTP {status}" in str(err)


def test_secrets_in_the_url_never_reach_the_error(server, session):
    err = fetch_error(fetcher(session, server), f"{server.base}/missing?sv=2024&se=2030&sig=SECRETSIG")
    assert "SECRETSIG" not in str(err) and "sig=***" in str(err) and "2030" not in str(err)
    err = fetch_error(
        ItemFetcher(session, HostAllowList(["*.blob.core.windows.net"])), "https://evil.example.com/x?sig=SECRETSIG"
    )
    assert "SECRETSIG" not in str(err) and err.code == "ItemUrlNotAllowed"


def test_redirect_within_the_allow_list_is_followed(server, session):
    server.routes["/item.json"] = send(200, json.dumps(ITEM).encode())
    server.routes["/moved"] = redirect("/item.json", 301)
    assert fetcher(session, server).fetch(f"{server.base}/moved")["id"] == "tile-1"
    assert server.hits == ["/moved", "/item.json"]


def test_redirect_to_a_host_not_on_the_allow_list_is_refused_before_contact(server, other, session):
    other.routes["/item.json"] = send(200, json.dumps(ITEM).encode())
    server.routes["/away"] = redirect(f"{other.base}/item.json", 307)
    server.routes["/metadata"] = redirect("http://169.254.169.254/latest/meta-data/iam")
    f = fetcher(session, server)
    err = fetch_error(f, f"{server.base}/away")
    assert err.kind is ErrorKind.INVALID and err.code == "ItemUrlNotAllowed"
    err = fetch_error(f, f"{server.base}/metadata")
    assert err.code == "ItemUrlNotAllowed" and "internal address" in str(err)
    assert other.hits == []


def test_redirect_loops_stop(server, session):
    server.routes["/loop"] = redirect("/loop")
    err = fetch_error(fetcher(session, server), f"{server.base}/loop")
    assert "more than 3 redirects" in str(err) and len(server.hits) == 4


def test_internal_and_unlisted_hosts_are_never_contacted(server, other, session):
    other.routes["/item.json"] = send(200, json.dumps(ITEM).encode())
    f = fetcher(session, server)
    for url in (
        f"{other.base}/item.json",
        f"http://localhost:{other.port}/item.json",
        f"http://[::1]:{other.port}/item.json",
        f"http://2130706433:{other.port}/item.json",
        "http://169.254.169.254/latest/meta-data/",
    ):
        err = fetch_error(f, url)
        assert err.kind is ErrorKind.INVALID and err.code == "ItemUrlNotAllowed", url
    # A wildcard pattern never admits an internal address, only an exact entry does.
    err = fetch_error(ItemFetcher(session, HostAllowList(["127.0.0.*"])), f"{other.base}/item.json")
    assert "internal address" in str(err)
    assert other.hits == []


def test_host_names_resolving_to_internal_addresses_are_refused(session):
    assert _resolves_internal("localhost", 80)
    assert not _resolves_internal("127.0.0.1", 80)  # literals are judged by the URL policy instead
    name = socket.gethostname().lower()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, 443)}
    except OSError:
        pytest.skip("this machine's host name does not resolve")
    if not _resolves_internal(name, 443):
        pytest.skip(f"{name} resolves to public addresses {addresses}")
    err = fetch_error(ItemFetcher(session, HostAllowList(["*"])), f"https://{name}/item.json")
    assert "resolves to an internal address" in str(err)


def test_slow_server_times_out_as_transient(server, session):
    def slow(h):
        time.sleep(1.5)  # a server slower than the client's 0.3 s read timeout, on purpose
        send(200, json.dumps(ITEM).encode())(h)

    server.routes["/slow"] = slow
    err = fetch_error(fetcher(session, server, timeout=(2, 0.3)), f"{server.base}/slow")
    assert err.kind is ErrorKind.TRANSIENT and "timed out" in str(err)


def test_dripping_server_is_cut_off_at_the_deadline(server, session):
    def drip(h):
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        for _ in range(100):
            h.wfile.write(b" ")
            h.wfile.flush()
            time.sleep(0.05)  # one byte every 50 ms: a server that drips, on purpose

    server.routes["/drip"] = drip
    started = time.monotonic()
    err = fetch_error(fetcher(session, server, timeout=(2, 1), deadline=0.5), f"{server.base}/drip")
    assert err.kind is ErrorKind.TRANSIENT and "took longer than 0.5 s" in str(err)
    assert time.monotonic() - started < 3


def test_connection_problems_are_transient(server, session):
    def truncated(h):
        h.send_response(200)
        h.send_header("Content-Length", "5000")
        h.end_headers()
        h.wfile.write(b'{"type": "Feat')
        h.wfile.flush()
        h.connection.shutdown(socket.SHUT_RDWR)

    server.routes["/cut"] = truncated
    f = fetcher(session, server)
    err = fetch_error(f, f"{server.base}/cut")
    assert err.kind is ErrorKind.TRANSIENT and "network error" in str(err)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    closed = ItemFetcher(session, HostAllowList([f"127.0.0.1:{port}"]))
    err = fetch_error(closed, f"http://127.0.0.1:{port}/item.json")
    assert err.kind is ErrorKind.TRANSIENT and "network error" in str(err)


def test_fetch_item_sets_the_field_on_fetch_errors(server, session):
    with pytest.raises(ItemFetchError) as info:
        fetcher(session, server).fetch_item(f"{server.base}/nothing", "coll", "item_urls[7]")
    assert info.value.field == "item_urls[7]" and str(info.value).startswith("item_urls[7]: ")


def test_concurrent_fetches_share_one_session(server, session):
    for i in range(20):
        server.routes[f"/i{i}.json"] = send(200, json.dumps(dict(ITEM, id=f"t{i}")).encode())
    f = fetcher(session, server)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: f.fetch(f"{server.base}/i{i}.json")["id"], range(20)))
    assert got == [f"t{i}" for i in range(20)]
