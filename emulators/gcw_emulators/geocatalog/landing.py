"""The STAC API's discovery documents: the landing page (``GET /stac``), ``/stac/conformance`` and queryables.

The conformance classes are the live service's (recording ``test_planetary_computer_00_stac_collection.py
TestPlanetaryComputerStacCollectiontest_02_get_conformance_class.json``); the queryables' shape is recorded in
``...test_09_list_collection_queryables.json`` (``application/schema+json``, id / datetime / geometry). The landing
page is not recorded: it follows the STAC API core specification (https://github.com/radiantearth/stac-api-spec,
``core/README.md``) with links to exactly the endpoints this emulator serves.
"""

from __future__ import annotations

from typing import Any

CONFORMANCE = (
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#fields",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "https://api.stacspec.org/v1.0.0/item-search#sort",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
)
JSON, GEOJSON, SCHEMA = "application/json", "application/geo+json", "application/schema+json"


def conformance() -> dict[str, Any]:
    return {"conformsTo": list(CONFORMANCE)}


def landing_page(base: str) -> dict[str, Any]:
    """The root Catalog: id, description, conformsTo and links (self, root, data, conformance, search GET/POST,
    queryables)."""
    stac = f"{base}/stac"

    def link(rel: str, href: str, media: str = JSON, **extra: str) -> dict[str, str]:
        return {"rel": rel, "type": media, "href": href, **extra}

    return {
        "type": "Catalog",
        "id": "geocatalog-emulator",
        "title": "GeoCatalog emulator",
        "description": "Local stand-in for the Microsoft Planetary Computer Pro (GeoCatalog) STAC API",
        "stac_version": "1.0.0",
        "conformsTo": list(CONFORMANCE),
        "links": [
            link("self", f"{stac}/"),
            link("root", f"{stac}/"),
            link("data", f"{stac}/collections"),
            link("conformance", f"{stac}/conformance"),
            link("search", f"{stac}/search", GEOJSON, method="GET"),
            link("search", f"{stac}/search", GEOJSON, method="POST"),
            link("http://www.opengis.net/def/rel/ogc/1.0/queryables", f"{stac}/queryables", SCHEMA),
        ],
    }


def queryables(self_url: str) -> dict[str, Any]:
    """The queryables every item has (recorded keys and order); custom queryables are not emulated."""
    return {
        "$id": self_url,
        "type": "object",
        "title": "STAC Queryables.",
        "$schema": "http://json-schema.org/draft-07/schema#",
        "properties": {
            "id": {
                "$ref": "https://schemas.stacspec.org/v1.0.0/item-spec/json-schema/item.json"
                "#/definitions/core/allOf/2/properties/id",
                "title": "Item ID",
                "description": "Item identifier",
            },
            "datetime": {
                "type": "string",
                "title": "Acquired",
                "format": "date-time",
                "pattern": "(\\+00:00|Z)$",
                "description": "Datetime",
            },
            "geometry": {
                "$ref": "https://geojson.org/schema/Feature.json",
                "title": "Item Geometry",
                "description": "Item Geometry",
            },
        },
        "additionalProperties": True,
    }
