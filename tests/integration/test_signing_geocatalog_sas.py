"""GeoCatalog's collection SAS as a signing source: routing of hosts to tokens, the per-collection cache, wiring."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from worker.adapters.hosts import HostAllowList
from worker.adapters.sas import (
    CollectionTokenCache,
    GeoCatalogSasProvider,
    HrefSigner,
    ManagedStorage,
    SigningError,
    StaticSasProvider,
    TokenCache,
)
from worker.domain.secrets import Secret
from worker.domain.stored import managed_container
from worker.observability.metrics import Metrics
from worker.servicebus.config import ConfigError, RunConfig
from worker.servicebus.wiring import build_signer

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
MANAGED = "mcstore.blob.core.windows.net"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class FakeGeoCatalog:
    """Stands in for GeoCatalogClient.get_collection_sas_token; records the collections asked for."""

    def __init__(self, clock: Clock, lifetime: timedelta = timedelta(hours=1)) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def get_collection_sas_token(self, collection: str, *, duration_minutes: int | None = None) -> dict:
        with self._lock:
            self.calls.append(collection)
            n = len(self.calls)
        expiry = (self.clock() + self.lifetime).isoformat().replace("+00:00", "Z")
        return {"msft:expiry": expiry, "token": f"sv=2024-05-04&sr=c&sp=rl&sig=GC-{collection}-{n}"}


def make_signer(clock: Clock | None = None, sign_hosts=("*.blob.core.windows.net",)):
    clock = clock or Clock()
    geocatalog = FakeGeoCatalog(clock)
    static = StaticSasProvider({"pcstore/*": Secret("sv=1&sig=STATIC")}, now=clock)
    collections = CollectionTokenCache(
        lambda c: GeoCatalogSasProvider(None, c, client=geocatalog, now=clock), now=clock, metrics=Metrics()
    )
    signer = HrefSigner(
        TokenCache(static, now=clock),
        HostAllowList(sign_hosts),
        collection_cache=collections,
        collection_hosts=HostAllowList([MANAGED]),
    )
    return signer, geocatalog, collections, clock


def sig(href: str) -> str | None:
    return parse_qs(urlsplit(href).query).get("sig", [None])[0]


def test_managed_host_gets_the_collection_token_other_hosts_never_do() -> None:
    signer, geocatalog, _, _ = make_signer()
    assert sig(signer.sign_href(f"https://{MANAGED}/c1-data/a.tif", "c1")) == "GC-c1-1"
    # an allow-listed non-managed host keeps its own source, never the GeoCatalog token
    assert sig(signer.sign_href("https://pcstore.blob.core.windows.net/ctr/a.tif", "c1")) == "STATIC"
    # foreign hosts: unchanged, no provider called
    for href in (
        "https://evil.example.com/c1-data/a.tif",
        f"https://{MANAGED}.evil.com/c1-data/a.tif",
        f"https://user@{MANAGED}/c1-data/a.tif",
        f"https://{MANAGED}\\@evil.com/c1-data/a.tif",
    ):
        out = signer.sign_href(href, "c1")
        assert "GC-" not in out and "STATIC" not in out
    assert geocatalog.calls == ["c1"]


def test_managed_hosts_are_added_to_the_allow_list_even_without_sign_hosts() -> None:
    signer, geocatalog, _, _ = make_signer(sign_hosts=())
    assert sig(signer.sign_href(f"https://{MANAGED}/c1-data/a.tif?sig=OLD&se=x&foo=1", "c1")) == "GC-c1-1"
    assert signer.sign_href(f"https://{MANAGED}/c1-data/a.tif?sig=OLD&se=x&foo=1", "c1").count("foo=1") == 1
    href = "https://pcstore.blob.core.windows.net/ctr/a.tif"
    assert signer.sign_href(href, "c1") == href  # not allow-listed any more
    assert geocatalog.calls == ["c1"]


def test_managed_href_without_a_collection_is_left_unchanged() -> None:
    signer, geocatalog, _, _ = make_signer()
    href = f"https://{MANAGED}/c1-data/a.tif"
    assert signer.sign_href(href) == href
    assert geocatalog.calls == []


def test_sign_item_uses_the_items_collection_and_an_explicit_one_wins() -> None:
    signer, geocatalog, _, _ = make_signer()
    item = {
        "id": "i",
        "collection": "c1",
        "assets": {
            "data": {
                "href": f"https://{MANAGED}/c1-data/a.tif",
                "alternate": {"x": {"href": f"https://{MANAGED}/c1-data/b"}},
            },
            "pc": {"href": "https://pcstore.blob.core.windows.net/ctr/a.tif"},
        },
    }
    signed = signer.sign_item(item)
    assert sig(signed["assets"]["data"]["href"]) == "GC-c1-1"
    assert sig(signed["assets"]["data"]["alternate"]["x"]["href"]) == "GC-c1-1"
    assert sig(signed["assets"]["pc"]["href"]) == "STATIC"
    assert "sig" not in item["assets"]["data"]["href"]  # input untouched
    assert sig(signer.sign_item(item, collection="c2")["assets"]["data"]["href"]) == "GC-c2-2"
    assert geocatalog.calls == ["c1", "c2"]


def test_collection_tokens_are_cached_per_collection_single_flight_and_refreshed_before_expiry() -> None:
    signer, geocatalog, collections, clock = make_signer()
    href = f"https://{MANAGED}/c1-data/a.tif"
    threads = [threading.Thread(target=signer.sign_href, args=(href, "c1")) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert geocatalog.calls == ["c1"]
    assert sig(signer.sign_href(href, "c2")) == "GC-c2-2"
    clock.now = T0 + timedelta(minutes=50)
    assert sig(signer.sign_href(href, "c1")) == "GC-c1-1"  # still inside the margin
    clock.now = T0 + timedelta(minutes=56)  # within 5 min of expiry
    assert sig(signer.sign_href(href, "c1")) == "GC-c1-3"
    assert collections.fetches == 3


def test_geocatalog_error_becomes_a_signing_error_without_caching() -> None:
    from worker.adapters.geocatalog.client import GeoCatalogError

    class Failing:
        def __init__(self) -> None:
            self.n = 0

        def get_collection_sas_token(self, collection: str, *, duration_minutes: int | None = None) -> dict:
            self.n += 1
            raise GeoCatalogError("forbidden", status=403)

    client = Failing()
    signer = HrefSigner(
        TokenCache(StaticSasProvider({})),
        HostAllowList([]),
        collection_cache=CollectionTokenCache(lambda c: GeoCatalogSasProvider(None, c, client=client)),
        collection_hosts=HostAllowList([MANAGED]),
    )
    for _ in range(2):
        with pytest.raises(SigningError):
            signer.sign_href(f"https://{MANAGED}/ctr/a.tif", "c1")
    assert client.n == 2


VALID = {
    "servicebus_connection_string": Secret("Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=k;SharedAccessKey=zzz"),
    "request_queue": "requests",
    "reply_queue": "replies",
    "geocatalog_url": "http://127.0.0.1:1234",
    "geocatalog_token": Secret("dev-token"),
}


def test_build_signer_wires_the_geocatalog_source_through_the_given_client() -> None:
    clock = Clock()
    geocatalog = FakeGeoCatalog(clock, lifetime=timedelta(days=3650))
    cfg = RunConfig(**VALID, geocatalog_sas_hosts=(MANAGED,))
    signer = build_signer(cfg, Metrics(), geocatalog)
    assert sig(signer.sign_href(f"https://{MANAGED}/ctr/a.tif", "c1")) == "GC-c1-1"
    href = "https://other.blob.core.windows.net/ctr/a.tif"
    assert signer.sign_href(href, "c1") == href
    assert geocatalog.calls == ["c1"]


@pytest.mark.parametrize("pattern", ["*", "", "https://x.blob.core.windows.net", "x.blob.core.windows.net/ctr"])
def test_config_rejects_non_host_patterns(pattern: str) -> None:
    with pytest.raises(ConfigError, match="--geocatalog-sas-host"):
        RunConfig(**VALID, geocatalog_sas_hosts=(pattern,)).validate()
    RunConfig(**VALID, geocatalog_sas_hosts=("*.blob.core.windows.net",)).validate()


def test_managed_copies_are_recognised_from_the_catalogs_own_answer() -> None:
    """An item resubmitted as a GET returned it: its managed hrefs get the collection token, learned once."""
    learned = "livemanaged.blob.core.windows.net"
    container = managed_container("c1")
    prefix = hashlib.sha256(b"item-1").hexdigest()[:3]
    managed_href = f"https://{learned}/{container}/{prefix}/item-1/data.tif"
    reads: list[tuple[str, str]] = []

    def read_item(collection: str, item_id: str) -> dict | None:
        reads.append((collection, item_id))
        return {"id": item_id, "assets": {"data": {"href": managed_href}}}

    clock = Clock()
    geocatalog = FakeGeoCatalog(clock)
    signer = HrefSigner(
        TokenCache(StaticSasProvider({}, now=clock), now=clock),
        HostAllowList(()),
        collection_cache=CollectionTokenCache(
            lambda c: GeoCatalogSasProvider(None, c, client=geocatalog, now=clock), now=clock
        ),
        managed=ManagedStorage(read_item),
    )
    item = {"id": "item-1", "collection": "c1", "assets": {"data": {"href": managed_href + "?sig=OLD"}}}
    assert sig(signer.sign_item(item)["assets"]["data"]["href"]) == "GC-c1-1"
    # the same look-alike path on an account the catalog never reported: no token
    lookalike = f"https://attacker.blob.core.windows.net/{container}/{prefix}/item-1/data.tif"
    assert signer.sign_href(lookalike, "c1", "item-1") == lookalike
    # another item of the collection: the learned host is reused, no second read
    other_prefix = hashlib.sha256(b"item-2").hexdigest()[:3]
    other = f"https://{learned}/{container}/{other_prefix}/item-2/data.tif"
    assert sig(signer.sign_href(other, "c1", "item-2")) == "GC-c1-1"
    # an external href of an item is not touched (no allow-listed host)
    external = "https://public.blob.core.windows.net/ctr/a.tif"
    assert signer.sign_href(external, "c1", "item-1") == external
    assert reads == [("c1", "item-1")]


def test_a_read_that_teaches_nothing_is_not_repeated_for_every_request() -> None:
    """Look-alike managed hrefs of an item the catalog does not hold: one GET per item per retry interval."""
    container = managed_container("c1")
    prefix = hashlib.sha256(b"ghost").hexdigest()[:3]
    href = f"https://somewhere.blob.core.windows.net/{container}/{prefix}/ghost/data.tif"
    reads: list[tuple[str, str]] = []
    now = [100.0]

    def read_item(collection: str, item_id: str) -> dict | None:
        reads.append((collection, item_id))
        return None

    managed = ManagedStorage(read_item, retry_seconds=60.0, max_misses=2, clock=lambda: now[0])
    assert not managed.is_managed(href, "c1", "ghost")
    assert not managed.is_managed(href, "c1", "ghost")
    assert reads == [("c1", "ghost")]
    now[0] += 61.0  # the interval passed: the catalog is asked again
    assert not managed.is_managed(href, "c1", "ghost")
    assert reads == [("c1", "ghost")] * 2
    # bounded: two other items push the oldest miss out, so it is read again at once
    for other in ("g2", "g3"):
        p2 = hashlib.sha256(other.encode()).hexdigest()[:3]
        managed.is_managed(f"https://somewhere.blob.core.windows.net/{container}/{p2}/{other}/data.tif", "c1", other)
    assert not managed.is_managed(href, "c1", "ghost")
    assert reads[-1] == ("c1", "ghost") and len(reads) == 5
