"""The ``azure-planetarycomputer`` package's own tests, unmodified, in live mode against the GeoCatalog emulator.

The tests come from the package's source distribution (downloaded at test time into ``.tools/``, see
``sdk_live/pc.py``) and run in one pytest subprocess exactly as Microsoft runs them against the live service:
live mode without recording (``AZURE_TEST_RUN_LIVE=true``, ``AZURE_SKIP_LIVE_RECORDING=true``), with
``sdk_live/devtools_testutils`` standing in for the SDK repository's test tooling (not on PyPI), pytest-asyncio in
auto mode, ``PLANETARYCOMPUTER_ENDPOINT`` = the emulator over HTTPS (seeded with the ``naip-atl`` collection and
its items) and ``DefaultAzureCredential`` served by a local managed-identity endpoint.

Every test passes except those in ``GAPS``, each with its reason (docs/emulators.md has the same list); a gap whose
tests all pass fails this test too, so the list stays true. ``GCW_PC_TESTS`` adds pytest arguments to the
subprocess (e.g. ``GCW_PC_TESTS='-k tiler'``); with it only the selected tests are checked.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from gcw_emulators.blobfrontdoor import BlobFrontDoor
from gcw_emulators.identity import TokenEndpoint

from tests.emulators.sdk_live import pc, runner

pytestmark = [pytest.mark.timeout(900), pytest.mark.xdist_group("pc-samples")]

# test id prefix (``file::Class::test``, file without ``.py``) -> why its tests cannot pass against the emulator
GAPS: dict[str, str] = {}  # empty: all 232 tests of azure-planetarycomputer 1.0.0 pass


def test_official_sdk_tests_pass_in_live_mode(tmp_path: Path) -> None:
    try:
        sdist, deps = pc.sdist(), pc.test_dependencies()
    except pc.Unavailable as exc:
        pytest.skip(str(exc))
    from gcw_emulators.geocatalog import GeoCatalogEmulator

    extra = shlex.split(os.environ.get("GCW_PC_TESTS", ""))
    with (
        GeoCatalogEmulator(tls=True, tls_dir=str(tmp_path / "tls"), **pc.FAST) as emu,
        TokenEndpoint(token=emu.token) as identity,
        BlobFrontDoor(emu.url, emu.cert, tmp_path / "tls") as door,
    ):
        pc.seed(emu)
        env = pc.environment(emu, identity, pc.HERE, deps, sdist, sdist / "tests")
        # test 00 uploads the thumbnail to managed storage; test 03 then downloads it by its blob.core.windows.net URL
        pc.through_blob_front_door(env, emu, door, tmp_path)
        found, proc = runner.run_pytest(sdist / "tests", [*extra, str(sdist / "tests")], env, tmp_path, timeout=840)
    runner.check(found, GAPS, proc.stdout)
