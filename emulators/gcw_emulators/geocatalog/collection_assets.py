"""Collection-level writes that answer synchronously: replacing a collection (``PUT``), its assets (multipart
upload) and its thumbnail.

As the recordings show them (``test_planetary_computer_07_collection_lifecycle.py`` test_04-06 and
``test_planetary_computer_00_stac_collection.py`` test_11; files named in docs/emulator-geocatalog.md):

- ``POST /stac/collections/{c}/assets`` takes ``multipart/form-data`` with a ``data`` part (the asset as JSON, its
  ``key`` naming it) and a ``file`` part; the file is stored in the collection's managed container at
  ``collection-assets/<key>/<file name>`` and the asset's ``href`` points there (the submitted href is replaced,
  ``key`` is dropped). It answers 201 with the whole collection; ``PUT .../assets/{assetId}`` replaces (200).
- ``DELETE .../assets/{assetId}`` answers 200 with the collection, also when there was no such asset.
- ``GET .../thumbnail`` serves the bytes of the ``thumbnail`` asset with its media type (``Cache-Control: 30``).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import BodyPartReader, web

from gcw_emulators.geocatalog.app import GeoCatalogApp, json_response
from gcw_emulators.geocatalog.configuration import CONFIG_KEY
from gcw_emulators.geocatalog.errors import ApiError
from gcw_emulators.geocatalog.items import managed_container, managed_href
from gcw_emulators.geocatalog.validation import check_collection_id

ASSET_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def _bad(message: str, target: str) -> ApiError:
    return ApiError(400, "InvalidInputData", f"{target}: {message}", target)


def check_asset_key(key: Any, target: str = "key") -> str:
    if not isinstance(key, str) or not key or len(key) > 128 or not set(key) <= ASSET_KEY_CHARS:
        raise _bad("must be 1-128 letters, digits or '-', '_', '.', ':'", target)
    return key


def _file_name(name: str | None, key: str) -> str:
    """The uploaded file's base name (no directories); the asset key when the part has none."""
    base = (name or "").replace("\\", "/").rpartition("/")[2].strip()
    return base if base and base not in (".", "..") else key


class CollectionAssetRoutes:
    def __init__(self, gc: GeoCatalogApp) -> None:
        self.gc = gc

    def _served(self, request: web.Request, doc: dict[str, Any]) -> web.Response:
        return json_response(self.gc._collection_view(request, doc))

    # -- PUT /stac/collections/{collectionId}
    async def replace_collection(self, request: web.Request) -> web.Response:
        cid = request.match_info["collectionId"]
        body = await self.gc._json_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "StacValidationFailed", "body: must be a STAC Collection object", "body")
        if body.get("id", cid) != cid:
            raise ApiError(
                400, "StacValidationFailed", f"id: body id {body.get('id')!r} does not match {cid!r} in the path", "id"
            )
        check_collection_id(cid)
        for key in ("description", "license"):
            if not isinstance(body.get(key), str):
                raise ApiError(400, "StacValidationFailed", f"{key}: a collection needs a string {key}", key)
        if not isinstance(body.get("extent"), dict):
            raise ApiError(400, "StacValidationFailed", "extent: a collection needs an extent object", "extent")

        def change(doc: dict[str, Any]) -> None:
            kept = {k: doc[k] for k in (CONFIG_KEY,) if k in doc}
            doc.clear()
            doc.update({k: v for k, v in body.items() if k != CONFIG_KEY}, id=cid, **kept)
            doc.setdefault("type", "Collection")

        doc, _ = self.gc.catalog.update_collection(cid, change)
        return self._served(request, doc)

    # -- assets
    async def _multipart(self, request: web.Request) -> tuple[dict[str, Any], bytes, str | None, str | None]:
        """(asset data, file bytes, file name, file media type) of a multipart asset upload."""
        if not request.content_type.startswith("multipart/"):
            raise _bad(f"expected multipart/form-data, got {request.content_type or 'none'}", "body")
        reader = await request.multipart()
        data: dict[str, Any] | None = None
        file: tuple[bytes, str | None, str | None] | None = None
        limit = self.gc.config.max_body_bytes
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise _bad("nested multipart parts are not supported", "body")
            raw = await part.read(decode=True)
            if len(raw) > limit:
                raise ApiError(400, "RequestBodyTooLarge", f"{part.name}: exceeds {limit} bytes", part.name)
            if part.name == "data":
                try:
                    parsed = json.loads(raw)
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise _bad(f"not valid JSON ({exc})", "data") from None
                if not isinstance(parsed, dict):
                    raise _bad("must be a JSON object describing the asset", "data")
                data = parsed
            elif part.name == "file":
                file = (bytes(raw), part.filename, part.headers.get("Content-Type"))
        if data is None:
            raise _bad("the 'data' part (the asset as JSON) is missing", "data")
        if file is None:
            raise _bad("the 'file' part (the asset's content) is missing", "file")
        return data, *file

    async def _upload(self, request: web.Request, asset_id: str | None) -> web.Response:
        cid = request.match_info["collectionId"]
        data, content, filename, media = await self._multipart(request)
        key = check_asset_key(data.get("key", asset_id), "data.key")
        if asset_id is not None and key != asset_id:
            raise _bad(f"key {key!r} does not match the asset id {asset_id!r} in the path", "data.key")
        for field in ("type", "title", "description"):
            if data.get(field) is not None and not isinstance(data[field], str):
                raise _bad("must be a string", f"data.{field}")
        roles = data.get("roles")
        if roles is not None and not (isinstance(roles, list) and all(isinstance(r, str) for r in roles)):
            raise _bad("must be a list of strings", "data.roles")
        self.gc.catalog.get_collection(cid)  # 404 before anything is stored
        account, container = self.gc.catalog.managed_account, managed_container(cid)
        blob = f"collection-assets/{key}/{_file_name(filename, key)}"
        media_type = data.get("type") or media or "application/octet-stream"
        self.gc.catalog.put_blob(f"{account}/{container}/{blob}", content, media_type)
        asset = {k: v for k, v in data.items() if k not in ("key", "href")}
        asset = {"href": managed_href(account, container, blob), **asset}

        def change(doc: dict[str, Any]) -> None:
            assets = doc.get("assets")
            assets = dict(assets) if isinstance(assets, dict) else {}
            if asset_id is None and key in assets:
                raise ApiError(
                    409, "ResourceAlreadyExists", f"Asset '{key}' already exists in collection '{cid}'", "data.key"
                )
            assets[key] = asset
            doc["assets"] = assets

        doc, _ = self.gc.catalog.update_collection(cid, change)
        return json_response(self.gc._collection_view(request, doc), status=201 if asset_id is None else 200)

    async def create_asset(self, request: web.Request) -> web.Response:
        return await self._upload(request, None)

    async def replace_asset(self, request: web.Request) -> web.Response:
        return await self._upload(request, check_asset_key(request.match_info["assetId"], "assetId"))

    async def delete_asset(self, request: web.Request) -> web.Response:
        asset_id = request.match_info["assetId"]

        def change(doc: dict[str, Any]) -> None:
            assets = doc.get("assets")
            if isinstance(assets, dict) and asset_id in assets:
                doc["assets"] = {k: v for k, v in assets.items() if k != asset_id}

        doc, _ = self.gc.catalog.update_collection(request.match_info["collectionId"], change)
        return self._served(request, doc)  # 200 with the collection, also for a missing asset (test_04)

    async def thumbnail(self, request: web.Request) -> web.Response:
        cid = request.match_info["collectionId"]
        doc = self.gc.catalog.get_collection(cid)
        assets = doc.get("assets") if isinstance(doc.get("assets"), dict) else {}
        asset = assets.get("thumbnail") or next(
            (a for a in assets.values() if isinstance(a, dict) and "thumbnail" in (a.get("roles") or ())), None
        )
        if not isinstance(asset, dict) or not isinstance(asset.get("href"), str):
            raise ApiError(404, "ResourceNotFound", f"Collection '{cid}' has no thumbnail asset")
        found = self.gc.catalog.read_href(asset["href"])
        if found is None:
            raise ApiError(404, "ResourceNotFound", f"The thumbnail of collection '{cid}' is not stored here")
        data, stored_type = found
        media = asset.get("type") or stored_type
        return web.Response(body=data, headers={"Content-Type": media, "Cache-Control": "30"})


def register(gc: GeoCatalogApp, router: web.UrlDispatcher) -> None:
    routes = CollectionAssetRoutes(gc)
    base = "/stac/collections/{collectionId}"
    router.add_put(base, routes.replace_collection)
    router.add_post(f"{base}/assets", routes.create_asset)
    router.add_put(f"{base}/assets/{{assetId}}", routes.replace_asset)
    router.add_delete(f"{base}/assets/{{assetId}}", routes.delete_asset)
    router.add_get(f"{base}/thumbnail", routes.thumbnail, allow_head=False)
