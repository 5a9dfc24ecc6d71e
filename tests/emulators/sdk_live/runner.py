"""Running a package's own tests in one pytest subprocess in live mode, and judging the outcome against GAPS.

Shared by ``test_gc_sdk_live_tests.py`` and ``test_sb_sdk_live_tests.py``: the tests run exactly as Microsoft
runs them against the live service (``AZURE_TEST_RUN_LIVE=true``, ``AZURE_SKIP_LIVE_RECORDING=true``), with
``devtools_testutils`` on the path from this folder, pytest-asyncio in auto mode and a junit report; then every
test must pass except those under a ``GAPS`` prefix, and a gap whose tests all pass is stale.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

LIVE = {"AZURE_TEST_RUN_LIVE": "true", "AZURE_SKIP_LIVE_RECORDING": "true"}


def run_pytest(
    tests: Path,
    args: Sequence[str],
    env: Mapping[str, str],
    work: Path,
    timeout: float,
    test_timeout: int = 300,
    test_timeouts: Mapping[str, int] | None = None,
) -> tuple[dict[str, tuple[str, str]], subprocess.CompletedProcess[str]]:
    """Runs pytest on ``args`` (paths under ``tests``, options) with ``env`` + live mode; outcomes by test id.
    ``test_timeouts``: test function name -> its own per-test timeout (``gcw_test_timeouts``, which must be on
    ``env``'s ``PYTHONPATH``)."""
    junit, ini = work / "junit.xml", work / "pytest.ini"
    # test_timeout: pytest-timeout fails a test that hangs (e.g. on a frame the emulator never answers) and goes
    # on, so one hang costs that test, not the whole subprocess and its report
    ini.write_text(
        f"[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\ntimeout = {test_timeout}\n"
    )
    command = [sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", str(tests)]
    # -p devtools_testutils: its fixtures (test_proxy), which the SDK repository's root conftest.py provides
    command += ["-p", "no:cacheprovider", "-p", "no:xdist", "-p", "pytest_asyncio", "-p", "devtools_testutils"]
    extra: dict[str, str] = {}
    if test_timeouts:
        command += ["-p", "gcw_test_timeouts"]
        extra["GCW_TEST_TIMEOUTS"] = ",".join(f"{name}={seconds}" for name, seconds in test_timeouts.items())
    command += ["-q", "--tb=line"]
    command += [f"--junitxml={junit}", *args]
    proc = subprocess.run(
        command, env={**env, **LIVE, **extra}, cwd=tests, capture_output=True, text=True, timeout=timeout
    )
    assert junit.exists(), f"pytest did not run:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return outcomes(junit), proc


def outcomes(junit: Path) -> dict[str, tuple[str, str]]:
    """test id (``file::Class::test``, file without ``.py``) -> (passed | failed | skipped, the failure's line)."""
    found: dict[str, tuple[str, str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)
        test_id = f"{module[0]}::{module[-1]}::{case.get('name')}" if len(module) == 2 else case.get("name", "")
        problem = next((child for child in case if child.tag in {"failure", "error"}), None)
        skipped = case.find("skipped") is not None
        message = (problem.get("message") or "").splitlines()[0][:200] if problem is not None else ""
        found[test_id] = ("failed" if problem is not None else "skipped" if skipped else "passed", message)
    return found


def matches(key: str, test_id: str) -> bool:
    """A gap's key is a test id prefix (``file::Class``), or a test function's name (every file and class)."""
    return test_id.startswith(key) or test_id.rsplit("::", 1)[-1].split("[", 1)[0] == key


def gap(gaps: Mapping[str, str], test_id: str) -> str | None:
    return next((why for key, why in gaps.items() if matches(key, test_id)), None)


def check(
    found: Mapping[str, tuple[str, str]], gaps: Mapping[str, str], stdout: str = "", allow_skipped: bool = False
) -> None:
    """Every test passed unless a gap names it (with ``allow_skipped``, a test may also skip itself: the package's
    tests do for what they do not test today, e.g. ``pytest.skip("start_idx and max_count are currently removed")``).
    """
    assert found, f"no test collected:\n{stdout[-3000:]}"
    ok = {"passed", "skipped"} if allow_skipped else {"passed"}
    unexpected = {t: o for t, o in found.items() if o[0] not in ok and gap(gaps, t) is None}
    stale = sorted(
        prefix
        for prefix in gaps
        if (matching := [o for t, o in found.items() if matches(prefix, t)]) and all(o[0] == "passed" for o in matching)
    )
    passed = sum(o[0] == "passed" for o in found.values())
    skipped = sum(o[0] == "skipped" for o in found.values())
    print(f"\n{passed} of {len(found)} official tests passed ({skipped} skipped)")
    for prefix, why in gaps.items():
        failing = sum(o[0] != "passed" for t, o in found.items() if matches(prefix, t))
        print(f"  gap {prefix}: {failing} not passing ({why})")
    for test_id, (outcome, message) in sorted(unexpected.items()):
        print(f"UNEXPECTED {outcome}: {test_id}: {message}")
    assert not unexpected, f"{len(unexpected)} official tests did not pass (see the output above)"
    assert not stale, f"these pass now; remove them from GAPS: {stale}"
