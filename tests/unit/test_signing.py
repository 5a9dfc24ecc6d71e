"""Pure-logic tests of SAS signing: href rewriting (incl. property tests), the token cache, static tokens."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.adapters.hosts import HostAllowList
from worker.adapters.sas import (
    HrefSigner,
    RoutingProvider,
    SasToken,
    SasUnavailable,
    SigningError,
    StaticSasProvider,
    TokenCache,
    blob_account_container,
    parse_expiry,
    replace_sas_query,
)
from worker.domain.errors import ErrorKind
from worker.domain.secrets import Secret
from worker.domain.stored import SAS_PARAMS
from worker.observability.metrics import Metrics

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class RecordingProvider:
    """Issues ``sig=<account>-<container>-<n>`` tokens valid for ``lifetime``; counts calls."""

    def __init__(self, clock: Clock, lifetime: timedelta = timedelta(hours=1), delay: float = 0.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.delay = delay
        self.calls: list[tuple[str, str]] = []
        self.fail_with: Exception | None = None
        self._lock = threading.Lock()

    def fetch(self, account: str, container: str) -> SasToken:
        with self._lock:
            self.calls.append((account, container))
            n = len(self.calls)
        if self.delay:
            time.sleep(self.delay)  # a slow SAS API, on purpose
        if self.fail_with is not None:
            raise self.fail_with
        return SasToken(
            Secret(f"sv=2024-05-04&sr=c&sp=rl&sig={account}-{container}-{n}"),
            self.clock() + self.lifetime,
            self.clock(),
        )


def make_signer(clock: Clock | None = None, patterns=("*.blob.core.windows.net",), **kw):
    clock = clock or Clock()
    provider = RecordingProvider(clock, **kw)
    cache = TokenCache(provider, margin=timedelta(minutes=5), now=clock, metrics=Metrics())
    return HrefSigner(cache, HostAllowList(patterns)), provider, cache, clock


# ------------------------------------------------------------------------------------------ href rewriting


def test_signs_allow_listed_blob_href() -> None:
    signer, provider, _, _ = make_signer()
    out = signer.sign_href("https://acct.blob.core.windows.net/ctr/a/b.tif")
    assert out == "https://acct.blob.core.windows.net/ctr/a/b.tif?sv=2024-05-04&sr=c&sp=rl&sig=acct-ctr-1"
    assert provider.calls == [("acct", "ctr")]


def test_replaces_existing_sas_and_keeps_other_params_in_order() -> None:
    signer, _, _, _ = make_signer()
    href = "https://acct.blob.core.windows.net/ctr/x.tif?foo=1&se=2020-01-01&sig=OLD&SP=r&bar=a%20b#frag"
    out = signer.sign_href(href)
    parts = urlsplit(out)
    assert parts.fragment == "frag"
    assert parts.query == "foo=1&bar=a%20b&sv=2024-05-04&sr=c&sp=rl&sig=acct-ctr-1"
    assert "OLD" not in out


def test_leaves_other_hosts_untouched_and_never_calls_the_provider() -> None:
    signer, provider, _, _ = make_signer()
    hrefs = [
        "https://example.com/ctr/x.tif?se=1",
        "https://acct.blob.core.windows.net.evil.com/ctr/x.tif",
        "https://blob.core.windows.net/ctr/x.tif",
        "https://acct.dfs.core.windows.net/ctr/x.tif",
        "s3://bucket/key.tif",
        "relative/path.tif",
        "https://user:pw@acct.blob.core.windows.net/ctr/x.tif",
        "https://acct.blob.core.windows.net/",  # no container
        "",
    ]
    for href in hrefs:
        assert signer.sign_href(href) == href
    assert provider.calls == []


def test_empty_allow_list_signs_nothing() -> None:
    signer, provider, _, _ = make_signer(patterns=())
    href = "https://acct.blob.core.windows.net/ctr/x.tif"
    assert signer.sign_href(href) == href
    assert provider.calls == []


def test_account_and_container_parsing() -> None:
    assert blob_account_container("https://Acct.blob.core.windows.net/ctr/a/b") == ("acct", "ctr")
    assert blob_account_container("https://acct.blob.core.windows.net/ctr") == ("acct", "ctr")
    assert blob_account_container("https://acct.blob.core.windows.net/") is None
    # Azurite path style on IP / localhost hosts.
    assert blob_account_container("http://127.0.0.1:10000/devacct/ctr/x.tif") == ("devacct", "ctr")
    assert blob_account_container("http://localhost:10000/devacct") is None


def test_sign_item_signs_assets_and_alternates_and_returns_a_copy() -> None:
    signer, provider, _, _ = make_signer()
    item = {
        "type": "Feature",
        "id": "i1",
        "assets": {
            "image": {
                "href": "https://a1.blob.core.windows.net/c1/i1.tif",
                "alternate": {
                    "s3": {"href": "s3://b/i1.tif"},
                    "mirror": {"href": "https://a2.blob.core.windows.net/c2/i1.tif"},
                },
            },
            "meta": {"href": "https://example.com/i1.xml"},
            "broken": "not-a-dict",
        },
        "links": [{"href": "https://a1.blob.core.windows.net/c1/self.json", "rel": "self"}],
    }
    original = repr(item)
    signed = signer.sign_item(item)
    assert repr(item) == original  # input untouched
    assert signed["assets"]["image"]["href"].endswith("?sv=2024-05-04&sr=c&sp=rl&sig=a1-c1-1")
    assert signed["assets"]["image"]["alternate"]["mirror"]["href"].endswith("sig=a2-c2-2")
    assert signed["assets"]["image"]["alternate"]["s3"]["href"] == "s3://b/i1.tif"
    assert signed["assets"]["meta"]["href"] == "https://example.com/i1.xml"
    assert signed["assets"]["broken"] == "not-a-dict"
    assert signed["links"] == item["links"]  # links are not assets: never signed
    assert sorted(provider.calls) == [("a1", "c1"), ("a2", "c2")]


def test_sign_item_without_assets() -> None:
    signer, _, _, _ = make_signer()
    assert signer.sign_item({"id": "x"}) == {"id": "x"}


# ------------------------------------------------------------------------------------------ property tests

label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=3, max_size=12)
param_key = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
param_val = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~%", max_size=10)
other_param = st.tuples(param_key.filter(lambda k: k not in SAS_PARAMS), param_val)
sas_param = st.tuples(st.sampled_from(sorted(SAS_PARAMS)), param_val)
hosts = st.one_of(
    label.map(lambda a: f"{a}.blob.core.windows.net"),
    label.map(lambda a: f"{a}.blob.core.windows.net.evil.com"),
    label.map(lambda a: f"{a}.example.com"),
    st.just("blob.core.windows.net"),
    label.map(lambda a: f"{a}.blob.core.windows.net:8443"),
)


@st.composite
def hrefs(draw):
    host = draw(hosts)
    scheme = draw(st.sampled_from(["https", "http", "ftp"]))
    segments = draw(st.lists(label, max_size=4))
    params = draw(st.lists(st.one_of(other_param, sas_param), max_size=6))
    query = "&".join(f"{k}={v}" for k, v in params)
    path = "/" + "/".join(segments)
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else ""), host, segments, params


@settings(max_examples=300, deadline=None)
@given(hrefs())
def test_property_no_token_on_foreign_host_exactly_one_sas_other_params_kept(case) -> None:
    href, host, segments, params = case
    signer, provider, _, _ = make_signer()
    out = signer.sign_href(href)
    hostname = host.split(":", 1)[0]  # a pattern without a port matches the host on any port
    allowed = (
        hostname.endswith(".blob.core.windows.net")
        and href.split(":", 1)[0] == "https"  # the wildcard pattern admits https only: no token in clear
        and len(segments) >= 1
    )
    if not allowed:
        assert out == href
        assert provider.calls == []
        return
    account, container = host.split(".")[0], segments[0]
    assert provider.calls == [(account, container)]
    query = parse_qsl(urlsplit(out).query, keep_blank_values=True)
    sas = [(k, v) for k, v in query if k.lower() in SAS_PARAMS]
    # exactly one SAS: the fresh token's parameters, once each
    assert sas == [("sv", "2024-05-04"), ("sr", "c"), ("sp", "rl"), ("sig", f"{account}-{container}-1")]
    kept = [(k, v) for k, v in query if k.lower() not in SAS_PARAMS]
    expected = parse_qsl("&".join(f"{k}={v}" for k, v in params if k not in SAS_PARAMS), keep_blank_values=True)
    assert kept == expected
    assert urlsplit(out).netloc == urlsplit(href).netloc
    assert urlsplit(out).path == urlsplit(href).path


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(other_param, sas_param), max_size=8))
def test_property_replace_is_idempotent(params) -> None:
    href = "https://a.blob.core.windows.net/c/x?" + "&".join(f"{k}={v}" for k, v in params)
    once = replace_sas_query(href, "se=1&sig=abc")
    assert replace_sas_query(once, "se=1&sig=abc") == once
    assert once.count("sig=") == 1


# ------------------------------------------------------------------------------------------ token cache


def test_cache_hit_until_margin_then_refresh() -> None:
    _signer, provider, cache, clock = make_signer()
    t1 = cache.get("acct", "ctr")
    assert cache.get("acct", "ctr") is t1
    clock.now = T0 + timedelta(minutes=54, seconds=59)  # 1 h token, 5 min margin
    assert cache.get("acct", "ctr") is t1
    clock.now = T0 + timedelta(minutes=55)
    t2 = cache.get("acct", "ctr")
    assert t2 is not t1
    assert t2.token.reveal().endswith("-2")
    assert len(provider.calls) == 2
    samples = {
        s.labels["result"]: s.value
        for m in cache.metrics.registry.collect()
        if m.name == "gcw_sas_token_cache"
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert samples["hit"] == 2
    assert samples["miss"] == 2


def test_margin_capped_at_half_the_lifetime() -> None:
    clock = Clock()
    provider = RecordingProvider(clock, lifetime=timedelta(minutes=4))  # shorter than the 5 min margin
    cache = TokenCache(provider, margin=timedelta(minutes=5), now=clock)
    cache.get("a", "c")
    clock.now = T0 + timedelta(minutes=1, seconds=59)
    cache.get("a", "c")
    assert len(provider.calls) == 1
    clock.now = T0 + timedelta(minutes=2)
    cache.get("a", "c")
    assert len(provider.calls) == 2


def test_keys_are_per_account_and_container() -> None:
    _, provider, cache, _ = make_signer()
    a = cache.get("a", "c1")
    b = cache.get("a", "c2")
    c = cache.get("b", "c1")
    assert len({a.token.reveal(), b.token.reveal(), c.token.reveal()}) == 3
    assert provider.calls == [("a", "c1"), ("a", "c2"), ("b", "c1")]


def test_single_flight_50_threads_one_fetch() -> None:
    clock = Clock()
    provider = RecordingProvider(clock, delay=0.2)
    cache = TokenCache(provider, now=clock)
    barrier = threading.Barrier(50)
    tokens: list[str] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        tok = cache.get("acct", "ctr")
        with lock:
            tokens.append(tok.token.reveal())

    threads = [threading.Thread(target=run) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(tokens) == 50
    assert provider.calls == [("acct", "ctr")]
    assert set(tokens) == {"sv=2024-05-04&sr=c&sp=rl&sig=acct-ctr-1"}


def test_failed_fetch_raises_to_all_waiters_and_does_not_poison() -> None:
    clock = Clock()
    provider = RecordingProvider(clock, delay=0.1)
    provider.fail_with = SasUnavailable("SAS API returned 503", code="SasHttp503")
    cache = TokenCache(provider, now=clock)
    errors: list[SigningError] = []
    lock = threading.Lock()
    barrier = threading.Barrier(10)

    def run() -> None:
        barrier.wait()
        try:
            cache.get("acct", "ctr")
        except SigningError as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(errors) == 10
    assert {e.kind for e in errors} == {ErrorKind.TRANSIENT}
    assert len(provider.calls) == 1
    provider.fail_with = None
    assert cache.get("acct", "ctr").token.reveal().endswith("-2")


def test_provider_bug_becomes_signing_error_without_secret() -> None:
    clock = Clock()
    provider = RecordingProvider(clock)
    provider.fail_with = KeyError("token sig=SECRETSIG")
    cache = TokenCache(provider, now=clock)
    with pytest.raises(SigningError) as info:
        cache.get("a", "c")
    assert "SECRETSIG" not in str(info.value)


def test_already_expired_token_is_rejected() -> None:
    clock = Clock()
    provider = RecordingProvider(clock, lifetime=timedelta(seconds=-1))
    cache = TokenCache(provider, now=clock)
    with pytest.raises(SigningError, match="already expired"):
        cache.get("a", "c")


# ------------------------------------------------------------------------------------------ static / routing


def test_static_provider_uses_se_for_expiry_and_wildcards() -> None:
    clock = Clock()
    provider = StaticSasProvider(
        {"acct/ctr": Secret("?se=2026-01-01T13:00:00Z&sp=rl&sig=AAA"), "other/*": "sp=r&sig=BBB"}, now=clock
    )
    tok = provider.fetch("acct", "ctr")
    assert tok.token.reveal() == "se=2026-01-01T13:00:00Z&sp=rl&sig=AAA"
    assert tok.expires_at == datetime(2026, 1, 1, 13, 0, tzinfo=UTC)
    assert provider.fetch("OTHER", "anything").expires_at == T0 + timedelta(hours=24)
    with pytest.raises(SigningError) as info:
        provider.fetch("acct", "nope")
    assert info.value.kind == ErrorKind.PERMANENT
    assert "AAA" not in str(info.value)
    with pytest.raises(ValueError, match="account/container"):
        StaticSasProvider({"justaccount": "sig=x"})


def test_routing_provider() -> None:
    clock = Clock()
    a = StaticSasProvider({"a/*": "sig=A"}, now=clock)
    b = StaticSasProvider({"b/c": "sig=B"}, now=clock)
    router = RoutingProvider({"a/*": a, "b/c": b})
    assert router.fetch("a", "x").token.reveal() == "sig=A"
    assert router.fetch("b", "c").token.reveal() == "sig=B"
    with pytest.raises(SigningError, match="no SAS provider"):
        router.fetch("z", "c")


def test_parse_expiry_variants() -> None:
    assert parse_expiry("2021-04-08T18:49:29Z") == datetime(2021, 4, 8, 18, 49, 29, tzinfo=UTC)
    assert parse_expiry("2025-10-28T18:43:35.3077441Z") == datetime(2025, 10, 28, 18, 43, 35, 307744, tzinfo=UTC)
    assert parse_expiry("2021-04-08T20:49:29+02:00") == datetime(2021, 4, 8, 18, 49, 29, tzinfo=UTC)
    for bad in ("", None, "tomorrow"):
        with pytest.raises(ValueError):
            parse_expiry(bad)


def test_sas_token_repr_hides_secret() -> None:
    tok = SasToken(Secret("sig=SECRET"), T0)
    assert "SECRET" not in repr(tok)
    assert "SECRET" not in str(tok)


def test_pc_provider_base_url_forms() -> None:
    from worker.adapters.sas import PlanetaryComputerSasProvider

    for base in (
        "https://pc.example",
        "https://pc.example/",
        "https://pc.example/api/sas/v1",
        "https://pc.example/api/sas/v1/token/",
    ):
        assert PlanetaryComputerSasProvider(base).base_url == "https://pc.example"
    assert PlanetaryComputerSasProvider("https://pc.example", subscription_key="k").subscription_key == Secret("k")


def test_sign_item_copies_only_what_it_changes_and_leaves_the_input_alone() -> None:
    signer, *_ = make_signer()
    href = "https://acct.blob.core.windows.net/ctr/a.tif"
    item = {
        "type": "Feature",
        "id": "i1",
        "collection": "c1",
        "properties": {"datetime": "2024-01-01T00:00:00Z", "eo:bands": [{"name": "b1"}]},
        "assets": {
            "data": {"href": href, "roles": ["data"], "alternate": {"s3": {"href": href + "?x=1", "title": "t"}}},
            "meta": {"title": "no href"},
            "odd": "not an object",
        },
    }
    before = json.dumps(item, sort_keys=True)
    signed = signer.sign_item(item)
    assert json.dumps(item, sort_keys=True) == before  # the input is not modified
    data = signed["assets"]["data"]
    assert "sig=acct-ctr" in data["href"] and "sig=acct-ctr" in data["alternate"]["s3"]["href"]
    assert "x=1" in data["alternate"]["s3"]["href"] and data["alternate"]["s3"]["title"] == "t"
    assert list(data) == ["href", "roles", "alternate"]  # key order kept
    assert signed["assets"]["meta"] == {"title": "no href"} and signed["assets"]["odd"] == "not an object"
    assert signed["properties"] is item["properties"]  # unchanged parts are shared, not copied
