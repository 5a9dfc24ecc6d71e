"""Reading a static STAC catalog the way an ``IngestionStaticCatalog`` run does: ``catalog.json``, its ``child``
catalogs and collections, and every ``item`` they link, with relative hrefs resolved against the document that
names them.

Where a document is read is the caller's business (``Fetch``): this module walks links, bounds the walk and checks
the shapes, and raises ``CatalogReadError`` with a message that names the document and the reason.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

MAX_DOCUMENTS = 20_000  # catalogs + items one run reads; beyond it the run fails (the emulator's bound)
MAX_DEPTH = 16  # nesting of child catalogs
CONCURRENCY = 8  # item documents read at once
Fetch = Callable[[str], Awaitable[bytes]]


class CatalogReadError(Exception):
    """A static catalog could not be read: ``code`` and a ``message`` free of secrets."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _absolute(base: str, href: Any, where: str) -> str:
    if not isinstance(href, str) or not href:
        raise CatalogReadError("InvalidStaticCatalog", f"{where}: a link needs a non-empty string 'href'")
    url = urljoin(base, href)
    if urlsplit(url).scheme not in ("http", "https"):
        raise CatalogReadError("InvalidStaticCatalog", f"{where}: href {href!r} is not an http(s) URL")
    return url


def _links(doc: dict[str, Any], base: str, rel: str, where: str) -> list[str]:
    links = doc.get("links", [])
    if not isinstance(links, list):
        raise CatalogReadError("InvalidStaticCatalog", f"{where}: 'links' must be an array")
    return [
        _absolute(base, link.get("href"), f"{where} links[{i}]")
        for i, link in enumerate(links)
        if isinstance(link, dict) and link.get("rel") == rel
    ]


def resolve_assets(item: dict[str, Any], item_url: str) -> dict[str, Any]:
    """The item with every asset href made absolute against the item's own URL."""
    assets = item.get("assets")
    if not isinstance(assets, dict):
        return item
    resolved = {}
    for key, asset in assets.items():
        if isinstance(asset, dict) and isinstance(asset.get("href"), str) and asset["href"]:
            asset = {**asset, "href": urljoin(item_url, asset["href"])}
        resolved[key] = asset
    return {**item, "assets": resolved}


class StaticCatalogReader:
    """Walks one static catalog with ``fetch``; ``items()`` returns ``(item URL, item)`` in link order."""

    def __init__(self, fetch: Fetch, display: Callable[[str], str] = str) -> None:
        self._fetch = fetch
        self._display = display  # how a URL appears in messages (without its SAS token)
        self._seen: set[str] = set()
        self._gate = asyncio.Semaphore(CONCURRENCY)

    async def _document(self, url: str) -> dict[str, Any]:
        if len(self._seen) >= MAX_DOCUMENTS:
            raise CatalogReadError(
                "StaticCatalogTooLarge", f"the catalog links more than {MAX_DOCUMENTS} documents (the emulator's bound)"
            )
        self._seen.add(url)
        async with self._gate:
            raw = await self._fetch(url)
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CatalogReadError("InvalidStaticCatalog", f"{self._display(url)}: not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise CatalogReadError("InvalidStaticCatalog", f"{self._display(url)}: must be a JSON object")
        return doc

    async def items(self, url: str) -> list[tuple[str, dict[str, Any]]]:
        root = await self._document(url)
        if root.get("type") not in ("Catalog", "Collection"):
            raise CatalogReadError(
                "InvalidStaticCatalog",
                f"{self._display(url)}: 'type' must be 'Catalog' or 'Collection', got {root.get('type')!r}",
            )
        return await self._walk(url, root, 0)

    async def _walk(self, url: str, doc: dict[str, Any], depth: int) -> list[tuple[str, dict[str, Any]]]:
        where = self._display(url)
        if depth > MAX_DEPTH:
            raise CatalogReadError("StaticCatalogTooDeep", f"{where}: child catalogs nest deeper than {MAX_DEPTH}")
        item_urls = [u for u in dict.fromkeys(_links(doc, url, "item", where)) if u not in self._seen]
        docs = await asyncio.gather(*(self._document(u) for u in item_urls))
        found = [(u, resolve_assets(item, u)) for u, item in zip(item_urls, docs, strict=True)]
        for child_url in _links(doc, url, "child", where):
            if child_url in self._seen:
                continue
            child = await self._document(child_url)
            found.extend(await self._walk(child_url, child, depth + 1))
        return found
