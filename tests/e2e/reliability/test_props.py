"""Property tests (hypothesis) the other suites do not cover: hostile hrefs never get a token for a host other URL
parsers would see, URL building keeps ids inside their path segment, and the log pipeline redacts every shape of
secret (structlog, in process)."""

from __future__ import annotations

import json
import re
from urllib.parse import unquote, urlsplit

import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_signing import make_signer
from worker.adapters.geocatalog.client import ROUTE_ITEM, GeoCatalogClient
from worker.domain.secrets import Secret
from worker.observability.logging import _shared_processors

# characters that URL parsers disagree about, mixed with ordinary host characters
TRICKY = st.text(alphabet="ab.-:@\\/?#%2f \t\n[]", min_size=0, max_size=12)


def whatwg_host(url: str) -> str:
    """The host as a WHATWG (browser, most HTTP stacks) parser reads it: "\\" ends the authority like "/", tabs and
    newlines are dropped, user-info is cut at the last "@", percent-escapes decoded."""
    rest = re.sub(r"[\t\n\r]", "", url).split("://", 1)[1]
    authority = re.split(r"[/\\?#]", rest, maxsplit=1)[0]
    host = authority.rpartition("@")[2]
    host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return unquote(host).lower().rstrip(".")


@settings(max_examples=400, deadline=None)
@given(TRICKY, TRICKY)
def test_property_a_token_only_goes_where_every_parser_agrees(prefix: str, middle: str) -> None:
    url = f"https://{prefix}acct{middle}.blob.core.windows.net/data/x.tif"
    signer, provider, _, _ = make_signer()
    out = signer.sign_href(url)
    if out == url:
        assert provider.calls == []
        return
    # a token was attached: the host is an Azure blob host for every parser
    python_host = (urlsplit(url).hostname or "").rstrip(".")
    assert whatwg_host(url) == python_host, url
    assert re.fullmatch(r"[a-z0-9.\-_]+\.blob\.core\.windows\.net", python_host), url
    assert urlsplit(out).netloc == urlsplit(url).netloc


ids = st.text(min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(ids, ids)
def test_property_url_building_keeps_each_id_in_its_segment(collection: str, item_id: str) -> None:
    client = GeoCatalogClient("https://gc.example.com", static_token=Secret("t"))
    try:
        url = client._url(ROUTE_ITEM, collectionId=collection, itemId=item_id)
    finally:
        client.close()
    parts = urlsplit(url)
    assert parts.netloc == "gc.example.com"
    assert parts.query == "" and parts.fragment == ""
    segments = parts.path.split("/")
    assert segments[:3] == ["", "stac", "collections"] and segments[4] == "items" and len(segments) == 6
    assert unquote(segments[3]) == collection and unquote(segments[5]) == item_id


b64 = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", min_size=16, max_size=60)


def _render(**event: object) -> str:
    # the worker's own processor chain (redaction included); add_logger_name needs a stdlib logger, not needed here
    chain = [p for p in _shared_processors() if p is not structlog.stdlib.add_logger_name]
    logger = structlog.wrap_logger(structlog.ReturnLogger(), processors=[*chain, structlog.processors.JSONRenderer()])
    return str(logger.warning("something_failed", **event))


@settings(max_examples=200, deadline=None)
@given(b64, st.sampled_from(["", "%2B", "%3D"]))
def test_property_no_secret_shape_survives_the_log_pipeline(token: str, suffix: str) -> None:
    sig = token + suffix
    shapes = {
        "href": f"https://acct.blob.core.windows.net/c/x.tif?sv=2024-05-04&sr=c&sp=rl&sig={sig}",
        "header": f"Authorization: Bearer {token}",
        "conn": f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey={token}",
        "account": f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={token};EndpointSuffix=x",
        "nested": {"urls": [f"https://a.blob.core.windows.net/c/y?se=2030&sig={sig}"], "authorization": token},
        "secret": Secret(token),
        "token": token,
    }
    try:
        raise RuntimeError(f"GET https://a.blob.core.windows.net/c/z?sig={sig} failed")
    except RuntimeError:
        line = _render(exc_info=True, **shapes)
    json.loads(line)
    assert token not in line, line
    assert "RuntimeError" in line  # the exception is still there, only its secret is gone
