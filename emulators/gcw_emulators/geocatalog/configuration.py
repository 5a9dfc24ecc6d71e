"""A collection's configuration: partition type, render options, mosaics, tile settings and custom queryables.

``/stac/collections/{collectionId}/configurations[/...]`` and ``/stac/collections/{collectionId}/queryables[/...]``
as the live service answers them (recordings of ``test_planetary_computer_00_stac_collection.py``, files named in
docs/emulator-geocatalog.md): every write is synchronous (no operation), creates answer 201 with the stored
document, replaces and reads 200, deletes 200 with an empty body; a missing render option, mosaic or queryable is
404 ``ResourceNotFound``, creating one that exists 409 ``ResourceAlreadyExists``.

The configuration is kept inside the stored collection document under ``CONFIG_KEY`` (never served), so it
survives a restart with ``--data-dir`` and disappears with the collection.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from aiohttp import web

from gcw_emulators.geocatalog import landing
from gcw_emulators.geocatalog.app import PRIVATE_PREFIX, GeoCatalogApp, json_response
from gcw_emulators.geocatalog.errors import ApiError

CONFIG_KEY = PRIVATE_PREFIX + "configuration"
PARTITION_SCHEMES = ("year", "month", "none")
RENDER_OPTION_TYPES = ("raster-tile", "vt-polygon", "vt-line")
QUERYABLE_TYPES = ("string", "number", "boolean", "timestamp", "date")
# what a collection starts with (assumed from the recorded naip-atl collection: a "default" mosaic, these tiles)
DEFAULT_MOSAIC = {"id": "default", "name": "Default", "description": "", "cql": []}
DEFAULT_TILE_SETTINGS = {"minZoom": 6, "maxItemsPerTile": 35, "defaultLocation": None}
RENDER_OPTION_KEYS = (
    "id",
    "name",
    "description",
    "type",
    "options",
    "vectorOptions",
    "minZoom",
    "legend",
    "conditions",
)
Config = dict[str, Any]


def new_config() -> Config:
    return {
        "partitionType": {"scheme": "none"},
        "tileSettings": dict(DEFAULT_TILE_SETTINGS),
        "renderOptions": {},
        "mosaics": {"default": dict(DEFAULT_MOSAIC)},
        "queryables": {},
    }


def config_of(doc: dict[str, Any]) -> Config:
    """The configuration inside a stored collection document (created on first use)."""
    config = doc.get(CONFIG_KEY)
    if not isinstance(config, dict):
        config = doc[CONFIG_KEY] = new_config()
    return config


# ---------------------------------------------------------------------------------------------- validation
def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "InvalidInputData", f"body: a {what} must be a JSON object", "body")
    return body


def _string(body: dict[str, Any], key: str, required: bool = True) -> None:
    value = body.get(key)
    if value is None and not required:
        return
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "InvalidInputData", f"{key}: must be a non-empty string", key)


def _integer(body: dict[str, Any], key: str, low: int, high: int, required: bool) -> None:
    value = body.get(key)
    if value is None and not required:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ApiError(400, "InvalidInputData", f"{key}: must be an integer {low}..{high}", key)


def _same_id(body: dict[str, Any], key: str, path_id: str | None) -> None:
    if path_id is not None and body.get(key) != path_id:
        raise ApiError(
            400, "InvalidInputData", f"{key}: body {key} {body.get(key)!r} does not match {path_id!r} in the path", key
        )


def check_render_option(body: Any, path_id: str | None = None) -> dict[str, Any]:
    option = _object(body, "render option")
    _string(option, "id")
    _string(option, "name")
    _same_id(option, "id", path_id)
    if option.get("type") is not None and option["type"] not in RENDER_OPTION_TYPES:
        raise ApiError(400, "InvalidInputData", f"type: must be one of {', '.join(RENDER_OPTION_TYPES)}", "type")
    _string(option, "options", required=False)
    _integer(option, "minZoom", 0, 24, required=False)
    unknown = sorted(set(option) - set(RENDER_OPTION_KEYS))
    if unknown:
        raise ApiError(400, "InvalidInputData", f"{unknown[0]}: not a render option field", unknown[0])
    return dict(option)


def check_mosaic(body: Any, path_id: str | None = None) -> dict[str, Any]:
    mosaic = _object(body, "mosaic")
    _string(mosaic, "id")
    _string(mosaic, "name")
    _same_id(mosaic, "id", path_id)
    if not isinstance(mosaic.get("cql"), list) or not all(isinstance(c, dict) for c in mosaic["cql"]):
        raise ApiError(400, "InvalidInputData", "cql: must be a list of CQL2-JSON objects", "cql")
    if mosaic.get("description") is not None and not isinstance(mosaic["description"], str):
        raise ApiError(400, "InvalidInputData", "description: must be a string", "description")
    # the stored mosaic always has the four fields (test_17a_delete_mosaic: "description": null)
    return {"id": mosaic["id"], "name": mosaic["name"], "description": mosaic.get("description"), "cql": mosaic["cql"]}


def check_tile_settings(body: Any) -> dict[str, Any]:
    settings = _object(body, "tile settings")
    _integer(settings, "minZoom", 0, 24, required=True)
    _integer(settings, "maxItemsPerTile", 1, 1000, required=True)
    location = settings.get("defaultLocation")
    if location is not None:
        coords = location.get("coordinates") if isinstance(location, dict) else None
        if (
            not isinstance(coords, list)
            or len(coords) != 2
            or not all(isinstance(c, int | float) and not isinstance(c, bool) for c in coords)
        ):
            raise ApiError(
                400, "InvalidInputData", "defaultLocation.coordinates: must be [latitude, longitude]", "defaultLocation"
            )
        _integer(location, "zoom", 0, 24, required=True)
    return {"minZoom": settings["minZoom"], "maxItemsPerTile": settings["maxItemsPerTile"], "defaultLocation": location}


def check_partition_type(body: Any) -> dict[str, Any]:
    partition = _object(body, "partition type")
    scheme = partition.get("scheme", "none")
    if scheme not in PARTITION_SCHEMES:
        raise ApiError(400, "InvalidInputData", f"scheme: must be one of {', '.join(PARTITION_SCHEMES)}", "scheme")
    return {"scheme": scheme}


def check_queryable(body: Any, path_name: str | None = None) -> dict[str, Any]:
    queryable = _object(body, "queryable")
    _string(queryable, "name")
    _same_id(queryable, "name", path_name)
    if not isinstance(queryable.get("definition"), dict):
        raise ApiError(400, "InvalidInputData", "definition: must be a JSON object", "definition")
    data_type = queryable.get("data_type")
    if data_type is not None and data_type not in QUERYABLE_TYPES:
        raise ApiError(400, "InvalidInputData", f"data_type: must be one of {', '.join(QUERYABLE_TYPES)}", "data_type")
    create_index = queryable.get("create_index", False)
    if not isinstance(create_index, bool):
        raise ApiError(400, "InvalidInputData", "create_index: must be true or false", "create_index")
    # the service's key order (test_21a_delete_queryable)
    return {
        "name": queryable["name"],
        "definition": queryable["definition"],
        "create_index": create_index,
        "data_type": data_type,
    }


def queryable_property(queryable: dict[str, Any]) -> dict[str, Any]:
    """How a custom queryable shows under the collection's queryables ``properties`` (test_21a: its definition,
    with ``data_type`` when the queryable has one)."""
    prop = dict(queryable["definition"])
    if queryable.get("data_type") is not None:
        prop.setdefault("data_type", queryable["data_type"])
    return prop


def configuration_view(config: Config) -> dict[str, Any]:
    """``GET .../configurations`` (test_10_get_collection_configuration): tile settings and the mosaic info, render
    options with every field (null when unset)."""
    options = [{k: option.get(k) for k in RENDER_OPTION_KEYS} for option in config["renderOptions"].values()]
    return {
        "tileSettings": config["tileSettings"],
        "mosaicInfo": {
            "mosaics": list(config["mosaics"].values()),
            "renderOptions": options,
            "defaultLocation": None,
            "defaultCustomQuery": None,
        },
    }


# ---------------------------------------------------------------------------------------------- routes
class ConfigurationRoutes:
    """The handlers; state lives in the catalog's collection documents."""

    def __init__(self, gc: GeoCatalogApp) -> None:
        self.gc = gc

    def _read(self, request: web.Request) -> Config:
        doc = self.gc.catalog.get_collection(request.match_info["collectionId"])
        return config_of(dict(doc))

    def _write(self, request: web.Request, change: Callable[[Config], Any]) -> Any:
        cid = request.match_info["collectionId"]
        _doc, result = self.gc.catalog.update_collection(cid, lambda doc: change(config_of(doc)))
        return result

    @staticmethod
    def _missing(kind: str, name: str, cid: str) -> ApiError:
        return ApiError(404, "ResourceNotFound", f"{kind} '{name}' not found for collection '{cid}'")

    @staticmethod
    def _exists(kind: str, name: str, cid: str) -> ApiError:
        return ApiError(
            409, "ResourceAlreadyExists", f"{kind} with name '{name}' already exists for collection '{cid}'"
        )

    # -- whole configuration, partition type, tile settings
    async def get_configuration(self, request: web.Request) -> web.Response:
        return json_response(configuration_view(self._read(request)))

    async def get_partition_type(self, request: web.Request) -> web.Response:
        return json_response(self._read(request)["partitionType"])

    async def put_partition_type(self, request: web.Request) -> web.Response:
        partition = check_partition_type(await self.gc._json_body(request, code="InvalidInputData"))
        cid = request.match_info["collectionId"]

        def change(config: Config) -> None:
            if partition != config["partitionType"] and self.gc.catalog.find_items([cid]):
                raise ApiError(
                    409,
                    "CollectionNotEmpty",
                    f"The partition type of collection '{cid}' can only change while it holds no items",
                    "scheme",
                )
            config["partitionType"] = partition

        self._write(request, change)
        return web.Response(status=200)  # empty body (test_18_replace_partition_type)

    async def get_tile_settings(self, request: web.Request) -> web.Response:
        return json_response(self._read(request)["tileSettings"])

    async def put_tile_settings(self, request: web.Request) -> web.Response:
        settings = check_tile_settings(await self.gc._json_body(request, code="InvalidInputData"))
        self._write(request, lambda config: config.__setitem__("tileSettings", settings))
        return json_response(settings)

    # -- render options and mosaics: the same CRUD over two maps
    def _entries(self, section: str) -> tuple[str, Callable[[Any, str | None], dict[str, Any]], str]:
        if section == "renderOptions":
            return "Render Option", check_render_option, "renderOptionId"
        return "Mosaic", check_mosaic, "mosaicId"

    async def list_entries(self, request: web.Request, section: str) -> web.Response:
        return json_response(list(self._read(request)[section].values()))

    async def get_entry(self, request: web.Request, section: str) -> web.Response:
        kind, _check, key = self._entries(section)
        name, cid = request.match_info[key], request.match_info["collectionId"]
        entry = self._read(request)[section].get(name)
        if entry is None:
            raise self._missing(kind, name, cid)
        return json_response(entry)

    async def create_entry(self, request: web.Request, section: str) -> web.Response:
        kind, check, _key = self._entries(section)
        entry = check(await self.gc._json_body(request, code="InvalidInputData"), None)
        cid = request.match_info["collectionId"]

        def change(config: Config) -> None:
            if entry["id"] in config[section]:
                raise self._exists(kind, entry["id"], cid)
            config[section][entry["id"]] = entry

        self._write(request, change)
        return json_response(entry, status=201)

    async def replace_entry(self, request: web.Request, section: str) -> web.Response:
        _kind, check, key = self._entries(section)
        entry = check(await self.gc._json_body(request, code="InvalidInputData"), request.match_info[key])
        self._write(request, lambda config: config[section].__setitem__(entry["id"], entry))
        return json_response(entry)

    async def delete_entry(self, request: web.Request, section: str) -> web.Response:
        kind, _check, key = self._entries(section)
        name, cid = request.match_info[key], request.match_info["collectionId"]

        def change(config: Config) -> None:
            if config[section].pop(name, None) is None:
                raise self._missing(kind, name, cid)

        self._write(request, change)
        return web.Response(status=200)

    # -- queryables
    async def get_collection_queryables(self, request: web.Request) -> web.Response:
        config = self._read(request)
        doc = landing.queryables(f"{self.gc._origin(request)}{request.path_qs}")
        for name, queryable in config["queryables"].items():
            doc["properties"][name] = queryable_property(queryable)
        return json_response(doc, content_type=landing.SCHEMA)

    async def create_queryables(self, request: web.Request) -> web.Response:
        body = await self.gc._json_body(request, code="InvalidInputData")
        if not isinstance(body, list) or not body:
            raise ApiError(400, "InvalidInputData", "body: must be a non-empty list of queryables", "body")
        queryables = [check_queryable(q) for q in body]
        cid = request.match_info["collectionId"]

        def change(config: Config) -> None:
            seen: set[str] = set()
            for q in queryables:
                if q["name"] in config["queryables"] or q["name"] in seen:
                    raise self._exists("Queryable", q["name"], cid)
                seen.add(q["name"])
            for q in queryables:
                config["queryables"][q["name"]] = q

        self._write(request, change)
        return json_response(queryables, status=201)

    async def replace_queryable(self, request: web.Request) -> web.Response:
        name = request.match_info["queryableName"]
        queryable = check_queryable(await self.gc._json_body(request, code="InvalidInputData"), name)
        self._write(request, lambda config: config["queryables"].__setitem__(name, queryable))
        # the service answers with data_type null (test_21_replace_queryable)
        return json_response({**queryable, "data_type": None})

    async def delete_queryable(self, request: web.Request) -> web.Response:
        name, cid = request.match_info["queryableName"], request.match_info["collectionId"]

        def change(config: Config) -> None:
            if config["queryables"].pop(name, None) is None:
                raise self._missing("Queryable", name, cid)

        self._write(request, change)
        return web.Response(status=200)


def register(gc: GeoCatalogApp, router: web.UrlDispatcher) -> None:
    routes = ConfigurationRoutes(gc)
    base = "/stac/collections/{collectionId}/configurations"
    router.add_get(base, routes.get_configuration, allow_head=False)
    router.add_get(f"{base}/partition-type", routes.get_partition_type, allow_head=False)
    router.add_put(f"{base}/partition-type", routes.put_partition_type)
    router.add_get(f"{base}/tile-settings", routes.get_tile_settings, allow_head=False)
    router.add_put(f"{base}/tile-settings", routes.put_tile_settings)
    for segment, section, key in (
        ("render-options", "renderOptions", "renderOptionId"),
        ("mosaics", "mosaics", "mosaicId"),
    ):
        collection, entry = f"{base}/{segment}", f"{base}/{segment}/{{{key}}}"
        router.add_get(collection, partial(routes.list_entries, section=section), allow_head=False)
        router.add_post(collection, partial(routes.create_entry, section=section))
        router.add_get(entry, partial(routes.get_entry, section=section), allow_head=False)
        router.add_put(entry, partial(routes.replace_entry, section=section))
        router.add_delete(entry, partial(routes.delete_entry, section=section))
    queryables = "/stac/collections/{collectionId}/queryables"
    router.add_get(queryables, routes.get_collection_queryables, allow_head=False)
    router.add_post(queryables, routes.create_queryables)
    router.add_put(queryables + "/{queryableName}", routes.replace_queryable)
    router.add_delete(queryables + "/{queryableName}", routes.delete_queryable)
