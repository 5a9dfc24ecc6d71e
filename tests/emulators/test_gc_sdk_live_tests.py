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
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from gcw_emulators.blobfrontdoor import BlobFrontDoor
from gcw_emulators.identity import TokenEndpoint

from tests.emulators.sdk_live import pc

pytestmark = [pytest.mark.timeout(900), pytest.mark.xdist_group("pc-samples")]

# test id prefix (``file::Class::test``, file without ``.py``) -> why its tests cannot pass against the emulator
GAPS: dict[str, str] = {}  # empty: all 232 tests of azure-planetarycomputer 1.0.0 pass


def _gap(test_id: str) -> str | None:
    return next((why for prefix, why in GAPS.items() if test_id.startswith(prefix)), None)


def _outcomes(junit: Path) -> dict[str, tuple[str, str]]:
    """test id -> (passed | failed | skipped, first line of the failure)."""
    outcomes: dict[str, tuple[str, str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)
        test_id = f"{module[0]}::{module[-1]}::{case.get('name')}" if len(module) == 2 else case.get("name", "")
        problem = next((child for child in case if child.tag in {"failure", "error"}), None)
        skipped = case.find("skipped") is not None
        message = (problem.get("message") or "").splitlines()[0][:200] if problem is not None else ""
        outcomes[test_id] = ("failed" if problem is not None else "skipped" if skipped else "passed", message)
    return outcomes


def test_official_sdk_tests_pass_in_live_mode(tmp_path: Path) -> None:
    try:
        sdist, deps = pc.sdist(), pc.test_dependencies()
    except pc.Unavailable as exc:
        pytest.skip(str(exc))
    from gcw_emulators.geocatalog import GeoCatalogEmulator

    extra = shlex.split(os.environ.get("GCW_PC_TESTS", ""))
    junit, ini = tmp_path / "junit.xml", tmp_path / "pytest.ini"
    ini.write_text("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    with (
        GeoCatalogEmulator(tls=True, tls_dir=str(tmp_path / "tls"), **pc.FAST) as emu,
        TokenEndpoint(token=emu.token) as identity,
        BlobFrontDoor(emu.url, emu.cert, tmp_path / "tls") as door,
    ):
        pc.seed(emu)
        env = pc.environment(emu, identity, pc.HERE, deps, sdist, sdist / "tests")
        # test 00 uploads the thumbnail to managed storage; test 03 then downloads it by its blob.core.windows.net URL
        pc.through_blob_front_door(env, emu, door, tmp_path)
        env.update(AZURE_TEST_RUN_LIVE="true", AZURE_SKIP_LIVE_RECORDING="true")
        command = [sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", str(sdist / "tests")]
        command += ["-p", "no:cacheprovider", "-p", "no:xdist", "-p", "pytest_asyncio", "-q", "--tb=line"]
        command += [f"--junitxml={junit}", *extra, str(sdist / "tests")]
        proc = subprocess.run(command, env=env, cwd=sdist / "tests", capture_output=True, text=True, timeout=840)
    assert junit.exists(), f"pytest did not run:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    outcomes = _outcomes(junit)
    assert outcomes, f"no test collected:\n{proc.stdout[-3000:]}"
    unexpected = {t: o for t, o in outcomes.items() if o[0] != "passed" and _gap(t) is None}
    # a gap whose tests all pass is stale
    fixed = sorted(
        prefix
        for prefix in GAPS
        if (matching := [o for t, o in outcomes.items() if t.startswith(prefix)])
        and all(o[0] == "passed" for o in matching)
    )
    passed = sum(o[0] == "passed" for o in outcomes.values())
    print(f"\n{passed} of {len(outcomes)} official tests passed")
    for prefix, why in GAPS.items():
        failing = sum(o[0] != "passed" for t, o in outcomes.items() if t.startswith(prefix))
        print(f"  gap {prefix}: {failing} not passing ({why})")
    for test_id, (outcome, message) in sorted(unexpected.items()):
        print(f"UNEXPECTED {outcome}: {test_id}: {message}")
    assert not unexpected, f"{len(unexpected)} official tests did not pass (see the output above)"
    assert not fixed, f"these pass now; remove them from GAPS: {fixed}"
