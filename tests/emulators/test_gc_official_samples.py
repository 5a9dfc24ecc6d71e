"""Microsoft's official ``azure-planetarycomputer`` samples, unmodified, against the GeoCatalog emulator over HTTPS.

The package's source distribution is downloaded at test time (``pip download --no-binary :all: --no-deps``) into
``.tools/`` (``GCW_TOOLS_DIR``), never into the repository, and each applicable sample runs as a subprocess with
the sdist on ``PYTHONPATH`` and its environment pointed at the emulator: ``PLANETARYCOMPUTER_ENDPOINT`` (HTTPS, a
self-signed certificate trusted through ``REQUESTS_CA_BUNDLE`` / ``SSL_CERT_FILE``) and ``DefaultAzureCredential``
getting the emulator's token from a local managed-identity endpoint (``gcw_emulators.identity.TokenEndpoint``).
The samples that do not apply are listed, each with its reason, in docs/emulators.md.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest
from gcw_emulators.azurite import tools_dir
from gcw_emulators.identity import TokenEndpoint

from tests.support.geocatalog import ingestion_environment, make_stac_item, publish_static_catalog

pytestmark = [pytest.mark.timeout(180), pytest.mark.xdist_group("pc-samples")]
PACKAGE, VERSION = "azure-planetarycomputer", "1.0.0"
COLLECTION, ITEM = "naip-atl", "ga_m_3308421_se_16_060_20211114"
# azure-core's pollers wait 30 s between polls unless the answer carries Retry-After (the service sends none)
FAST = {"operation_seconds": 0.2, "poll_retry_after": 0.1}
# the samples that apply (sync and async); the others are in docs/emulators.md with their reasons
SAMPLES = [
    "planetary_computer_01_ingestion_management.py",
    "planetary_computer_02_stac_specification.py",
    "planetary_computer_03_shared_access_signature.py",
    "async/planetary_computer_01_ingestion_management_async.py",
    "async/planetary_computer_02_stac_specification_async.py",
    "async/planetary_computer_03_shared_access_signature_async.py",
]


def _png() -> bytes:
    """A valid 1x1 PNG (the SAS sample checks the PNG signature of the collection thumbnail it downloads)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def sdist() -> Path:
    """The unpacked sdist of azure-planetarycomputer (downloaded once, under a file lock)."""
    root = tools_dir() / f"{PACKAGE}-{VERSION}"
    unpacked = root / f"azure_planetarycomputer-{VERSION}"
    root.mkdir(parents=True, exist_ok=True)
    with (root / "download.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (unpacked / "samples").is_dir():
            pip = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-d", str(root)]
            proc = subprocess.run(
                [*pip, f"{PACKAGE}=={VERSION}"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            archives = sorted(root.glob("azure_planetarycomputer-*.tar.gz"))
            if proc.returncode != 0 or not archives:
                pytest.skip(f"cannot download the {PACKAGE} sdist: {proc.stderr.strip()[-500:]}")
            with tarfile.open(archives[-1]) as tar:
                tar.extractall(root, filter="data")
    return unpacked


@pytest.fixture(scope="module")
def environment(sdist: Path, tmp_path_factory: pytest.TempPathFactory):
    from gcw_emulators.geocatalog import GeoCatalogEmulator

    with (
        GeoCatalogEmulator(tls=True, tls_dir=str(tmp_path_factory.mktemp("tls")), **FAST) as emu,
        TokenEndpoint(token=emu.token) as identity,
    ):
        thumbnail = emu.put_blob(f"{COLLECTION}/thumbnail.png", _png(), container="assets", content_type="image/png")
        doc = {"assets": {"thumbnail": {"href": thumbnail, "type": "image/png", "roles": ["thumbnail"]}}}
        emu.create_collection(COLLECTION, doc)
        # the static catalog the ingestion sample's run reads (the sample's own points at GitHub)
        items = [make_stac_item(f"{ITEM}_static_{n}", "static") for n in range(3)]
        catalog_url = publish_static_catalog(emu, items, assets={"image": (_png(), "image/png")})
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "MSI_", "IDENTITY_"))}
        env.update(identity.env())
        env.update(ingestion_environment(emu, catalog_url))
        env.update(
            PLANETARYCOMPUTER_ENDPOINT=emu.url,
            PLANETARYCOMPUTER_COLLECTION_ID=COLLECTION,
            PLANETARYCOMPUTER_ITEM_ID=ITEM,
            REQUESTS_CA_BUNDLE=str(emu.cert),
            SSL_CERT_FILE=str(emu.cert),
            PYTHONPATH=os.pathsep.join([str(sdist), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        )
        yield emu, identity, env


@pytest.mark.parametrize("sample", SAMPLES)
def test_official_sample_passes_unmodified(environment, sdist: Path, sample: str) -> None:
    emu, identity, env = environment
    script = sdist / "samples" / sample
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=script.parent, capture_output=True, text=True, timeout=150
    )
    assert proc.returncode == 0, f"{sample} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert identity.requests >= 1, "the sample's DefaultAzureCredential never asked the token endpoint"
    clients = emu.stats()["clients"]
    assert any(product.startswith("azsdk-python-planetarycomputer") for product in clients), clients
