"""What ``pip install geocatalog-worker`` (no extras) installs: the product, and no emulator or demo code."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def product_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(REPO)],
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob("geocatalog_worker-*.whl")
    return wheel


def test_the_product_wheel_holds_only_the_worker_package(product_wheel: Path) -> None:
    names = zipfile.ZipFile(product_wheel).namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert top == {"worker", next(t for t in top if t.endswith(".dist-info"))}
    assert not [n for n in names if "emulator" in n or "/demo/" in n or "gcw_emulators" in n]
    metadata = zipfile.ZipFile(product_wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert not [r for r in requires if "qpid" in r or "aiohttp" in r], "emulator dependencies leaked into the product"


def test_the_image_build_context_excludes_the_emulators() -> None:
    """The Dockerfile copies the product only, and .dockerignore admits nothing else into the context."""
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    admitted = [line[1:] for line in ignore if line.startswith("!")]
    assert "emulators" not in admitted and "worker" in admitted
    assert "COPY emulators" not in (REPO / "Dockerfile").read_text()


def test_without_the_emulators_distribution_the_cli_names_what_to_install() -> None:
    """The product CLI does not know ``demo`` itself; it points to the distribution that adds it."""
    code = (
        "import sys\n"
        "from importlib import metadata\n"
        "real = metadata.entry_points\n"
        "metadata.entry_points = lambda **kw: [] if kw.get('group') == 'geocatalog_worker.commands' else real(**kw)\n"
        "import worker.cli as cli\n"
        "cli.entry_points = metadata.entry_points\n"
        "sys.argv = ['geocatalog-worker', 'demo']\n"
        "cli.main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "geocatalog-worker-emulators" in proc.stderr and "pip install ./emulators" in proc.stderr
