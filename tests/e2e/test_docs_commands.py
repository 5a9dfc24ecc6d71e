"""The commands docs/emulators.md "Everything on one machine" shows work verbatim (parsed out of the markdown)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support.harness import wait_until

pytestmark = [pytest.mark.timeout(180), pytest.mark.xdist_group("documented-ports")]

DOC = Path(__file__).resolve().parents[2] / "docs" / "emulators.md"


def documented_commands() -> list[list[str]]:
    text = DOC.read_text()
    section = text.split("## Everything on one machine", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [shlex.split(block.strip()) for block in blocks]


def as_installed(argv: list[str]) -> list[str]:
    """``geocatalog-worker ...`` as the console script would run it, with this interpreter."""
    assert argv[0] == "geocatalog-worker", argv
    return [sys.executable, "-m", "worker", *argv[1:]]


def test_the_documented_commands_run_against_emulator_all() -> None:
    start, check, run = documented_commands()
    assert start[:3] == ["geocatalog-worker", "emulator", "all"] and check[1] == "check" and run[1] == "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    emulators = subprocess.Popen(
        as_installed(start), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    worker = None
    try:
        assert emulators.stdout is not None
        printed = []
        for line in emulators.stdout:
            printed.append(line)
            if line.startswith("  geocatalog-worker check"):
                break
        else:
            raise AssertionError("emulator all exited:\n" + "".join(printed))
        # what emulator all prints is what the docs say
        assert shlex.join(check) in "".join(printed) and shlex.join(run[:-2]) in "".join(printed)
        result = subprocess.run(as_installed(check), capture_output=True, text=True, env=env, timeout=120, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        worker = subprocess.Popen(as_installed(run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)

        def ready() -> bool:
            try:
                with urllib.request.urlopen("http://127.0.0.1:8091/readyz", timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                return False

        assert wait_until(ready, 60), "the documented run command never became ready"
    finally:
        for proc in (worker, emulators):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
