"""The ``azure-planetarycomputer`` sdist, the emulator state its tests and samples expect, their environment.

Used by ``tests/emulators/test_gc_official_samples.py`` (the samples) and ``test_gc_sdk_live_tests.py`` (the
package's own tests in live mode). The seeded items are written from facts read in Microsoft's recordings of the
live service (``tests/recordings/`` of the SDK: the ``naip-atl`` collection, item
``ga_m_3308421_se_16_060_20211114`` and its bounds from ``test_04 ... get_bounds``, the asset set and properties of
``ga_m_3308429_nw_16_060_20231008_20240103`` from ``test_02 ... get_item``), not copied from them.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tarfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from gcw_emulators.azurite import tools_dir
from gcw_emulators.blobfrontdoor import BlobFrontDoor
from gcw_emulators.geocatalog import GeoCatalogEmulator
from gcw_emulators.geocatalog.imagery import COG_MEDIA_TYPE, naip_cog, seed_imagery
from gcw_emulators.identity import TokenEndpoint

from tests.emulators.sdk_live import static_catalog

PACKAGE, VERSION = "azure-planetarycomputer", "1.0.0"
COLLECTION, ITEM = "naip-atl", "ga_m_3308421_se_16_060_20211114"
# azure-core's pollers wait 30 s between polls unless the answer carries Retry-After (the service sends none)
FAST: dict[str, float] = {"operation_seconds": 0.2, "poll_retry_after": 0.1}
# what the package's tests need besides the SDK (installed into .tools/, not into the project's environment)
TEST_DEPENDENCIES = ("pytest-asyncio==1.5.0", "python-dotenv==1.2.4")
HERE = Path(__file__).resolve().parent


class Unavailable(Exception):
    """The sdist or the tests' dependencies could not be downloaded (no package index): the caller skips."""


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with (root / "download.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def sdist() -> Path:
    """The unpacked sdist of azure-planetarycomputer (downloaded once into ``.tools/``, under a file lock)."""
    root = tools_dir() / f"{PACKAGE}-{VERSION}"
    unpacked = root / f"azure_planetarycomputer-{VERSION}"
    with _locked(root):
        if not (unpacked / "samples").is_dir() or not (unpacked / "tests").is_dir():
            pip = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-d", str(root)]
            proc = subprocess.run([*pip, f"{PACKAGE}=={VERSION}"], capture_output=True, text=True, timeout=120)
            archives = sorted(root.glob("azure_planetarycomputer-*.tar.gz"))
            if proc.returncode != 0 or not archives:
                raise Unavailable(f"cannot download the {PACKAGE} sdist: {proc.stderr.strip()[-500:]}")
            with tarfile.open(archives[-1]) as tar:
                tar.extractall(root, filter="data")
    return unpacked


def test_dependencies() -> Path:
    """A directory with the tests' own dependencies (``pip install --target``), for their ``PYTHONPATH``."""
    target = tools_dir() / f"{PACKAGE}-{VERSION}" / "test-deps"
    with _locked(target.parent):
        if not (target / ".complete").exists():
            pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target)]
            proc = subprocess.run([*pip, *TEST_DEPENDENCIES], capture_output=True, text=True, timeout=180)
            if proc.returncode != 0:
                raise Unavailable(f"cannot install {', '.join(TEST_DEPENDENCIES)}: {proc.stderr.strip()[-500:]}")
            (target / ".complete").write_text("\n".join(TEST_DEPENDENCIES))
    return target


def png() -> bytes:
    """A valid 1x1 PNG (the SAS sample and tests check the PNG signature of the thumbnail they download)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b"")
    )


def _polygon(west: float, south: float, east: float, north: float) -> dict[str, Any]:
    ring = [[east, south], [east, north], [west, north], [west, south], [east, south]]
    return {"type": "Polygon", "coordinates": [ring]}


BANDS = [
    {"name": "Red", "common_name": "red"},
    {"name": "Green", "common_name": "green"},
    {"name": "Blue", "common_name": "blue"},
    {"name": "NIR", "common_name": "nir", "description": "near-infrared"},
]
# id -> (bbox, datetime, year): the first two as the live catalog has them (recordings, see the module docstring),
# then neighbours on the same quarter-quad grid, so that searches have several items to filter, sort and page
Bbox = tuple[float, float, float, float]
ITEMS: dict[str, tuple[Bbox, str, str]] = {
    ITEM: ((-84.44157, 33.621853, -84.370894, 33.690654), "2021-11-14T16:00:00Z", "2021"),
    "ga_m_3308429_nw_16_060_20231008_20240103": (
        (-84.504026, 33.559387, -84.43345, 33.628155),
        "2023-10-08T16:00:00Z",
        "2023",
    ),
}
for _n, (_quad, _day) in enumerate([("sw", "20211114"), ("ne", "20211115"), ("nw", "20220605"), ("se", "20220606")]):
    _west = -84.49157 + 0.07 * _n
    ITEMS[f"ga_m_330842{_n + 2}_{_quad}_16_060_{_day}"] = (
        (round(_west, 6), 33.621853, round(_west + 0.070676, 6), 33.690654),
        f"{_day[:4]}-{_day[4:6]}-{_day[6:]}T16:{_n:02d}:00Z",
        _day[:4],
    )
ITEMS["ga_m_3308422_sw_16_060_20191021"] = ((-84.37657, 33.56, -84.305894, 33.63), "2019-10-21T15:50:00Z", "2019")
# other collections of the catalog (the live one holds several; the tests list them)
OTHER_COLLECTIONS = ("sentinel-2-l2a-atl", "landsat-c2-l2-atl", "cop-dem-glo-30-atl", "io-lulc-atl")


def naip_item(item_id: str, assets: dict[str, str]) -> dict[str, Any]:
    """A NAIP item as the live catalog holds them (asset hrefs are given: blobs on the emulator)."""
    bbox, when, year = ITEMS[item_id]
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
            "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
        ],
        "id": item_id,
        "collection": COLLECTION,
        "bbox": list(bbox),
        "geometry": _polygon(*bbox),
        "properties": {"datetime": when, "gsd": 0.6, "naip:year": year, "naip:state": "ga", "proj:epsg": 26916},
        "assets": {
            "image": {
                "href": assets["image"],
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "roles": ["data"],
                "title": "RGBIR COG tile",
                "eo:bands": BANDS,
            },
            "thumbnail": {
                "href": assets["thumbnail"],
                "type": "image/png",
                "roles": ["thumbnail"],
                "title": "Thumbnail",
            },
        },
        "links": [],
    }


def _wait(session: requests.Session, url: str, verify: str | bool, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = session.get(url, timeout=10, verify=verify).json()
        if body.get("status") == "Succeeded":
            return
        if body.get("status") in {"Failed", "Canceled"}:
            raise RuntimeError(f"seeding failed: {body}")
        time.sleep(0.05)  # polling an emulator operation that ends after FAST["operation_seconds"]
    raise TimeoutError(f"seeding operation {url} did not finish in {timeout} s")


def seed(emu: GeoCatalogEmulator) -> None:
    """The collection ``naip-atl`` (with a PNG thumbnail) and its items, written through the STAC API; each item's
    ``image`` is a real NAIP-like COG over its bbox (``gcw_emulators.geocatalog.imagery``) for the tiler."""
    thumbnail = emu.put_blob(f"{COLLECTION}/thumbnail.png", png(), container="assets", content_type="image/png")
    emu.create_collection(
        COLLECTION,
        {
            "title": "NAIP: National Agriculture Imagery Program (Atlanta)",
            "description": "NAIP imagery over Atlanta (emulator seed)",
            "license": "proprietary",
            "extent": {
                "spatial": {"bbox": [[-84.6, 33.5, -84.2, 33.8]]},
                "temporal": {"interval": [["2021-01-01T00:00:00Z", "2023-12-31T23:59:59Z"]]},
            },
            "assets": {"thumbnail": {"href": thumbnail, "type": "image/png", "roles": ["thumbnail"]}},
        },
    )
    for other in OTHER_COLLECTIONS:
        emu.create_collection(
            other, {"title": other, "description": f"{other} (emulator seed)", "license": "CC-BY-4.0"}
        )
    session = requests.Session()
    session.headers.update(emu.headers)
    # per request: REQUESTS_CA_BUNDLE in the environment would override a session-wide verify
    verify: str | bool = str(emu.cert) if emu.cert else True
    for index, item_id in enumerate(ITEMS):
        cog = naip_cog(ITEMS[item_id][0], seed=index)
        tif = emu.put_blob(f"{item_id}/image.tif", cog, container="naip", content_type=COG_MEDIA_TYPE)
        thumb = emu.put_blob(f"{item_id}/thumbnail.png", png(), container="naip", content_type="image/png")
        doc = naip_item(item_id, {"image": tif, "thumbnail": thumb})
        response = session.post(
            f"{emu.url}/stac/collections/{COLLECTION}/items",
            params={"api-version": "2025-04-30-preview"},
            json=doc,
            timeout=10,
            verify=verify,
        )
        response.raise_for_status()
        _wait(session, response.headers["operation-location"], verify)
    # the static catalog the ingestion sample's and tests' runs read: the same items (skipped when they exist)
    files = {"image.tif": (png(), "image/tiff"), "thumbnail.png": (png(), "image/png")}
    relative = {"image": "./image.tif", "thumbnail": "./thumbnail.png"}
    static_catalog.publish_static_catalog(emu, [naip_item(i, relative) for i in ITEMS], files=files)


def restore_item(emu: GeoCatalogEmulator, item_id: str = ITEM) -> None:
    """Store ``item_id`` again as seeded, with its COG (sample and test 02 replace the item, with other assets)."""
    thumb = emu.put_blob(f"{item_id}/thumbnail.png", png(), container="naip", content_type="image/png")
    doc = naip_item(item_id, {"image": "", "thumbnail": thumb})  # seed_imagery sets the image asset
    seed_imagery(emu, COLLECTION, doc, seed=list(ITEMS).index(item_id))


def environment(emu: GeoCatalogEmulator, identity: TokenEndpoint, *paths: Path) -> dict[str, str]:
    """The variables a sample or test process runs with: the emulator's HTTPS endpoint and certificate, the local
    managed-identity endpoint for ``DefaultAzureCredential``, ``paths`` first on ``PYTHONPATH``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "MSI_", "IDENTITY_"))}
    env.update(identity.env())
    env.update(
        PLANETARYCOMPUTER_ENDPOINT=emu.url,
        PLANETARYCOMPUTER_COLLECTION_ID=COLLECTION,
        PLANETARYCOMPUTER_ITEM_ID=ITEM,
        REQUESTS_CA_BUNDLE=str(emu.cert),
        SSL_CERT_FILE=str(emu.cert),
        PYTHONPATH=os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    env.update(static_catalog.ingestion_environment(emu))
    return env


def through_blob_front_door(env: dict[str, str], emu: GeoCatalogEmulator, door: BlobFrontDoor, folder: Path) -> None:
    """Send ``env``'s process to ``*.blob.core.windows.net`` through ``door`` (the emulator's blob store: managed
    storage hrefs, the public thumbnail sample 00 downloads) and make it trust both certificates."""
    bundle = folder / "trusted.pem"
    bundle.write_bytes(Path(str(emu.cert)).read_bytes() + door.cert.read_bytes())
    env.update(door.env(), REQUESTS_CA_BUNDLE=str(bundle), SSL_CERT_FILE=str(bundle))
