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
]


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
