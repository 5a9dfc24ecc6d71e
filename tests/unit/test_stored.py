"""worker.domain.stored: recognising our own writes in the shape the live GeoCatalog stores them."""

from __future__ import annotations

import copy

from worker.domain.stored import (
    DIGEST_PROPERTY,
    content_digest,
    is_managed_href,
    managed_container,
    same_content,
    strip_sas,
    with_digest,
)

# From the recording test_14_delete_stac_item (Azure/azure-sdk-for-python, planetarycomputer tests): the item
# below, submitted with a naipeuwest href, came back with this managed href.
RECORDED_ID = "ga_m_3308421_se_16_060_20211114_delete_test"
RECORDED_MANAGED = f"https://vojrtgdatasa.blob.core.windows.net/naip-atl-bde3e846/10a/{RECORDED_ID}/image.tif"
PROJ_100 = "https://stac-extensions.github.io/projection/v1.0.0/schema.json"
PROJ_110 = "https://stac-extensions.github.io/projection/v1.1.0/schema.json"


def submitted() -> dict:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [PROJ_100],
        "id": RECORDED_ID,
        "collection": "naip-atl",
        "geometry": {"type": "Point", "coordinates": [-84.4, 33.7]},
        "bbox": [-84.4, 33.7, -84.4, 33.7],
        "properties": {"datetime": "2021-11-14T16:00:00Z", "gsd": 0.6},
        "assets": {
            "image": {
                "href": "https://naipeuwest.blob.core.windows.net/naip/v002/ga/m_3308421_se_16_060_20211114.tif",
                "type": "image/tiff; application=geotiff",
                "roles": ["data"],
            }
        },
        "links": [{"rel": "license", "href": "https://example.com/license"}],
    }


def as_stored(item: dict) -> dict:
    """What the recordings show the service giving back."""
    out = copy.deepcopy(item)
    out["assets"]["image"]["href"] = RECORDED_MANAGED
    out["stac_extensions"] = [PROJ_110]
    out["links"] = [{"rel": "self", "href": f"/stac/collections/naip-atl/items/{RECORDED_ID}"}]
    out["_msft:ts"] = "2025-11-03T17:56:54.016320Z"
    out["_msft:etag"] = "5f1c0d7e-0000-0000-0000-000000000000"
    return out


def test_the_managed_container_and_item_prefix_are_the_recorded_ones():
    assert managed_container("naip-atl") == "naip-atl-bde3e846"
    assert is_managed_href(RECORDED_MANAGED, "naip-atl", RECORDED_ID, "image")
    assert not is_managed_href(RECORDED_MANAGED, "naip-atl", RECORDED_ID, "thumbnail")
    assert not is_managed_href(RECORDED_MANAGED, "naip-atl", "other-item")
    assert not is_managed_href(RECORDED_MANAGED, "naip-other", RECORDED_ID)
    assert not is_managed_href("https://a.blob.core.windows.net/x.tif", "naip-atl", RECORDED_ID)


def test_field_comparison_accepts_the_services_rewrites():
    item = submitted()
    assert same_content(as_stored(item), item)


def test_field_comparison_still_sees_real_changes():
    item = submitted()
    stored = as_stored(item)
    for change in (
        lambda i: i["properties"].update(gsd=1.0),
        lambda i: i["properties"].pop("gsd"),
        lambda i: i["assets"]["image"].update(type="image/png"),
        lambda i: i["assets"].update(extra={"href": "https://naipeuwest.blob.core.windows.net/naip/x.tif"}),
        lambda i: i.update(stac_extensions=[PROJ_100, "https://stac-extensions.github.io/eo/v1.1.0/schema.json"]),
        lambda i: i.update(bbox=[0, 0, 0, 0]),
    ):
        changed = copy.deepcopy(item)
        change(changed)
        assert not same_content(stored, changed)
    stored["properties"]["added-by-someone"] = 1
    assert not same_content(stored, item)


def test_digest_ignores_sas_links_and_service_fields_but_not_content():
    item = submitted()
    base = content_digest(item)
    signed = copy.deepcopy(item)
    signed["assets"]["image"]["href"] += "?st=2025&se=2026&sp=r&sv=2024&sr=c&sig=SECRET"
    signed["links"] = []
    signed["_msft:etag"] = "x"
    assert content_digest(signed) == base
    reordered = dict(reversed(list(item.items())))
    assert content_digest(reordered) == base
    kept_query = copy.deepcopy(item)
    kept_query["assets"]["image"]["href"] += "?version=2"
    assert content_digest(kept_query) != base
    assert base.startswith("sha256:") and len(base) == len("sha256:") + 64


def test_with_digest_is_stable_and_does_not_modify_its_input():
    item = submitted()
    stamped = with_digest(item)
    assert DIGEST_PROPERTY not in item["properties"]
    assert stamped["properties"][DIGEST_PROPERTY] == content_digest(item)
    assert with_digest(stamped) == stamped  # an older digest is replaced by the same value


def test_digests_decide_when_both_sides_have_one():
    item = with_digest(submitted())
    stored = as_stored(item)
    assert same_content(stored, item)
    moved = copy.deepcopy(submitted())
    moved["assets"]["image"]["href"] = "https://naipeuwest.blob.core.windows.net/naip/other.tif"
    # the stored href is managed either way: only the digest can tell the source changed
    assert same_content(stored, moved)
    assert not same_content(stored, with_digest(moved))


def test_an_item_without_a_digest_is_compared_by_fields():
    item = with_digest(submitted())
    foreign = as_stored(submitted())  # written by another tool: no digest
    assert same_content(foreign, item)


def test_strip_sas_keeps_other_parameters_in_order():
    assert strip_sas("https://a/b.tif?x=1&sig=s&y=2&se=t") == "https://a/b.tif?x=1&y=2"
    assert strip_sas("https://a/b.tif") == "https://a/b.tif"
