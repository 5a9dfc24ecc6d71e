"""Microsoft's official ``azure-planetarycomputer`` samples, unmodified, against the GeoCatalog emulator over HTTPS.

The package's source distribution is downloaded at test time (``pip download --no-binary :all: --no-deps``) into
``.tools/`` (``GCW_TOOLS_DIR``), never into the repository, and each applicable sample runs as a subprocess with
the sdist on ``PYTHONPATH`` and its environment pointed at the emulator: ``PLANETARYCOMPUTER_ENDPOINT`` (HTTPS, a
self-signed certificate trusted through ``REQUESTS_CA_BUNDLE`` / ``SSL_CERT_FILE``) and ``DefaultAzureCredential``
getting the emulator's token from a local managed-identity endpoint (``gcw_emulators.identity.TokenEndpoint``).
The samples that do not apply are listed, each with its reason, in docs/emulators.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from gcw_emulators.blobfrontdoor import BlobFrontDoor
from gcw_emulators.identity import TokenEndpoint

from tests.emulators.sdk_live import pc

pytestmark = [pytest.mark.timeout(180), pytest.mark.xdist_group("pc-samples")]
# the samples that apply (sync and async); the others are in docs/emulators.md with their reasons
SAMPLES = [
    "planetary_computer_01_ingestion_management.py",
    "planetary_computer_02_stac_specification.py",
    "planetary_computer_03_shared_access_signature.py",
    "async/planetary_computer_01_ingestion_management_async.py",
    "async/planetary_computer_02_stac_specification_async.py",
    "async/planetary_computer_03_shared_access_signature_async.py",
    "planetary_computer_04_stac_item_tiler.py",
    "planetary_computer_05_mosaics_tiler.py",
    "planetary_computer_06_map_legends.py",
    "async/planetary_computer_04_stac_item_tiler_async.py",
    "async/planetary_computer_05_mosaics_tiler_async.py",
    "async/planetary_computer_06_map_legends_async.py",
]
# the tiler samples read the item's pixels: it is restored as seeded (a real COG) first, sample 02 replaces it
TILER_SAMPLES = ("_04_", "_05_", "_06_")
# the collection configuration samples: they delete and recreate the collection, so they get their own emulator
CONFIG_SAMPLES = [
    "planetary_computer_00_stac_collection.py",
    "async/planetary_computer_00_stac_collection_async.py",
]
# what sample 00 downloads with urllib before uploading it as the collection's thumbnail
PUBLIC_THUMBNAIL = ("ai4edatasetspublicassets", "assets", "pc_thumbnails/naip.png")


@pytest.fixture(scope="module")
def sdist() -> Path:
    try:
        return pc.sdist()
    except pc.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def environment(sdist: Path, tmp_path_factory: pytest.TempPathFactory):
    from gcw_emulators.geocatalog import GeoCatalogEmulator

    with (
        GeoCatalogEmulator(tls=True, tls_dir=str(tmp_path_factory.mktemp("tls")), **pc.FAST) as emu,
        TokenEndpoint(token=emu.token) as identity,
    ):
        pc.seed(emu)
        yield emu, identity, pc.environment(emu, identity, sdist)


@pytest.fixture(scope="module")
def config_environment(sdist: Path, tmp_path_factory: pytest.TempPathFactory):
    """Sample 00's emulator: 0 s operations (it creates its collection with ``polling=False`` and reads it back at
    once) and a ``BlobFrontDoor`` serving the public thumbnail it downloads from blob.core.windows.net."""
    from gcw_emulators.geocatalog import GeoCatalogEmulator

    tls = tmp_path_factory.mktemp("tls-config")
    with (
        GeoCatalogEmulator(tls=True, tls_dir=str(tls), operation_seconds=0, poll_retry_after=0.1) as emu,
        TokenEndpoint(token=emu.token) as identity,
        BlobFrontDoor(emu.url, emu.cert, tls) as door,
    ):
        pc.seed(emu)
        account, container, blob = PUBLIC_THUMBNAIL
        emu.put_blob(blob, pc.png(), account=account, container=container, content_type="image/png")
        env = pc.environment(emu, identity, sdist)
        pc.through_blob_front_door(env, emu, door, tls)
        yield emu, identity, door, env


def _run(sdist: Path, sample: str, env: dict[str, str]) -> None:
    script = sdist / "samples" / sample
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=script.parent, capture_output=True, text=True, timeout=150
    )
    assert proc.returncode == 0, f"{sample} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


@pytest.mark.parametrize("sample", CONFIG_SAMPLES)
def test_official_collection_sample_passes_unmodified(config_environment, sdist: Path, sample: str) -> None:
    emu, identity, door, env = config_environment
    served = door.requests
    _run(sdist, sample, env)
    assert door.requests > served, "the sample never downloaded the public thumbnail through the blob front door"
    assert identity.requests >= 1
    doc = emu.catalog.get_collection(pc.COLLECTION)
    assert doc["description"].endswith(" - Updated for testing"), doc["description"]
    thumbnail = doc["assets"]["thumbnail"]["href"]
    assert thumbnail.startswith(f"https://{emu.managed_account}.blob.core.windows.net/"), thumbnail
    stats = emu.stats()["requests"]
    for route in (
        "PUT /stac/collections/{collectionId}/configurations/tile-settings",
        "PUT /stac/collections/{collectionId}/queryables/{queryableName}",
        "PUT /stac/collections/{collectionId}/configurations/mosaics/{mosaicId}",
        "PUT /stac/collections/{collectionId}/assets/{assetId}",
        "GET /stac/collections/{collectionId}/thumbnail",
    ):
        assert stats.get(route, {}).get("200"), (route, stats.get(route))


@pytest.mark.parametrize("sample", SAMPLES)
def test_official_sample_passes_unmodified(environment, sdist: Path, sample: str) -> None:
    emu, identity, env = environment
    if any(tag in sample for tag in TILER_SAMPLES):
        pc.restore_item(emu)
    script = sdist / "samples" / sample
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=script.parent, capture_output=True, text=True, timeout=150
    )
    assert proc.returncode == 0, f"{sample} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert identity.requests >= 1, "the sample's DefaultAzureCredential never asked the token endpoint"
    clients = emu.stats()["clients"]
    assert any(product.startswith("azsdk-python-planetarycomputer") for product in clients), clients
