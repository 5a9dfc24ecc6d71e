"""Every module, file and folder the docs name exists (a doc that names a module that does not exist is a bug)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
PATH = re.compile(r"`((?:worker|emulators|tests|benchmarks|helm|scripts|docs)/[A-Za-z0-9_./-]*)`")
DOTTED = re.compile(r"`((?:worker|gcw_emulators|benchmarks)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
PACKAGE_ROOTS = {"worker": ROOT / "worker", "gcw_emulators": ROOT / "emulators" / "gcw_emulators",
                 "benchmarks": ROOT / "benchmarks"}  # fmt: skip


IGNORED = {line.strip() for line in (ROOT / ".gitignore").read_text().splitlines() if line.strip()}


def _generated(name: str) -> bool:
    """A folder the tools write into (listed in .gitignore), e.g. benchmarks/results/."""
    return any(name == pattern or name.startswith(pattern.rstrip("/") + "/") for pattern in IGNORED)


def _helm_value(dotted: str) -> bool:
    """``worker.drainSeconds``: a chart value, not a Python name (camelCase segment)."""
    return any(p[:1].islower() and any(c.isupper() for c in p) for p in dotted.split(".")[1:])


def _module_exists(dotted: str) -> bool:
    """``a.b.c`` names a module or package, or an attribute defined at the top level of the longest module prefix."""
    parts = dotted.split(".")
    base = PACKAGE_ROOTS[parts[0]]
    for n in range(len(parts), 0, -1):
        rel = Path(base, *parts[1:n])
        module = rel.with_suffix(".py") if n > 1 else None
        package = rel / "__init__.py"
        source = module if module is not None and module.is_file() else package if package.is_file() else None
        if source is None:
            continue
        rest = parts[n:]
        if not rest:
            return True
        name = rest[0]
        text = source.read_text()
        return bool(re.search(rf"^(?:class|def)\s+{name}\b|^{name}\s*[:=]|import .*\b{name}\b", text, re.M))
    return False


def _cases() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        text = doc.read_text()
        out += [(doc.name, m) for m in sorted(set(PATH.findall(text))) if not _generated(m)]
        out += [(doc.name, m) for m in sorted(set(DOTTED.findall(text))) if not _helm_value(m)]
    return out


@pytest.mark.parametrize(("doc", "name"), _cases())
def test_named_path_exists(doc: str, name: str) -> None:
    if "/" in name:
        path = ROOT / name.rstrip("/")
        assert path.exists() or path.with_suffix(".py").exists(), f"{doc} names {name}, which does not exist"
    else:
        assert _module_exists(name), f"{doc} names {name}, which is not a module or one of its top-level names"


def test_the_check_sees_the_docs() -> None:
    names = {n for _, n in _cases()}
    assert "worker/processing/batching.py" in names and "worker/domain/stored.py" in names
    assert not _module_exists("worker.servicebus.consumer_that_never_was")
    assert not _module_exists("worker.processing.batching.no_such_name")


def test_architecture_names_every_product_module() -> None:
    """docs/architecture.md describes the layout module by module."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    modules = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "worker").rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    )
    missing = [m for m in modules if f"`{m}`" not in text]
    assert not missing, f"docs/architecture.md does not describe: {missing}"
