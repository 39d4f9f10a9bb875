"""Supply chain: every Python dependency installs from a lock with hashes; the images use the same lock; every
GitHub Action is pinned by commit SHA.

The locks (``requirements/dev.txt`` for ``make setup``, ``requirements/runtime.txt`` for both images,
``requirements/build.txt`` for hatchling) are written by ``make lock`` (pip-tools ``--generate-hashes``); these
tests read the committed files, the Makefile, the Dockerfiles and the CI workflows as text.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"
REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$")
SHA = re.compile(r"^[0-9a-f]{40}$")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: Path) -> dict[str, str]:
    """``name -> version`` of a pip-compile lock; fails on a line that is not ``name==version`` with hashes."""
    out: dict[str, str] = {}
    lines = lock.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line or line.startswith((" ", "#")):
            continue
        match = REQUIREMENT.match(line)
        assert match, f"{lock.name}:{i + 1}: not a pinned requirement with hashes: {line!r}"
        following = lines[i + 1] if i + 1 < len(lines) else ""
        assert following.strip().startswith("--hash=sha256:"), f"{lock.name}:{i + 1}: {match[1]} has no hash"
        out[_normal(match[1])] = match[2]
    return out


def _declared(requirements: list[str]) -> set[str]:
    names = {_normal(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]) for r in requirements}
    return names - {"capi-rollout"}


@pytest.fixture(scope="module")
def project() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("lock", ["dev.txt", "runtime.txt", "build.txt"])
def test_every_locked_requirement_is_pinned_with_a_hash(lock: str) -> None:
    assert pins(LOCKS / lock)
    assert "--find-links" not in (LOCKS / lock).read_text(), "a machine-local index leaked into the lock"


def test_the_dev_lock_holds_every_declared_dependency_and_the_build_backend(project: dict[str, object]) -> None:
    meta = project["project"]
    assert isinstance(meta, dict)
    declared = _declared(meta["dependencies"]) | {n for extra in meta["optional-dependencies"].values()
                                                 for n in _declared(extra)}
    build = project["build-system"]
    assert isinstance(build, dict)
    declared |= _declared(build["requires"])
    assert declared - set(pins(LOCKS / "dev.txt")) == set()


def test_the_runtime_lock_holds_the_runtime_and_simulator_dependencies_only(project: dict[str, object]) -> None:
    meta = project["project"]
    assert isinstance(meta, dict)
    runtime = pins(LOCKS / "runtime.txt")
    assert _declared(meta["dependencies"]) | _declared(meta["optional-dependencies"]["sim"]) <= set(runtime)
    assert not {"pytest", "mypy", "ruff", "hatchling"} & set(runtime)


@pytest.mark.parametrize("lock", ["runtime.txt", "build.txt"])
def test_the_image_locks_pin_the_versions_the_dev_lock_pins(lock: str) -> None:
    dev = pins(LOCKS / "dev.txt")
    assert {n: v for n, v in pins(LOCKS / lock).items() if dev.get(n) != v} == {}


def test_make_setup_installs_from_the_lock_with_hashes_then_the_package_without_dependencies() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    installs = [line.strip() for line in recipe.splitlines() if "pip install" in line]
    assert installs == ["$(BIN)/pip install -q --require-hashes -r requirements/dev.txt",
                        "$(BIN)/pip install -q --no-deps --no-build-isolation -e ."]
    assert "requirements/dev.txt" in recipe.splitlines()[0]  # a lock change re-runs setup
    assert "--generate-hashes" in makefile.split("\nlock:", 1)[0] and "\nlock:" in makefile


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "sim/Dockerfile"])
def test_the_images_install_only_from_the_hashed_locks(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text(encoding="utf-8").replace("\\\n", " ")
    commands = [c.strip() for c in re.split(r"&&|\n", text) if re.search(r"\bpip (install|download|wheel)\b", c)]
    assert commands
    for command in commands:
        hashed = "--require-hashes -r" in command and re.search(r"requirements/(runtime|build)\.txt", command)
        assert hashed or "--no-deps" in command, f"{dockerfile}: installs unhashed dependencies: {command}"
    assert any("requirements/runtime.txt" in c and "pip install" in c for c in commands)
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, flags=re.MULTILINE)
    assert base is not None and base.group(1).startswith("python:3.11-slim-bookworm"), dockerfile
    assert "FROM ${PYTHON_IMAGE}" in text, f"{dockerfile}: a FROM that the release cannot pin"


def test_a_release_builds_from_the_base_image_pinned_by_digest_and_records_it() -> None:
    release = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    pin = "\n".join(step.get("run", "") for step in release["jobs"]["base"]["steps"])
    assert "imagetools inspect" in pin and "sha256:" in pin and "exit 1" in pin  # no digest, no release
    assert "base" in release["jobs"]["build"]["needs"]
    build = "\n".join(step.get("run", "") for step in release["jobs"]["build"]["steps"])
    digest = "${{ needs.base.outputs.digest }}"
    assert f'--build-arg "PYTHON_IMAGE=${{{{ needs.base.outputs.image }}}}@{digest}"' in build
    assert f'--label "org.opencontainers.image.base.digest={digest}"' in build


def test_every_github_action_is_pinned_by_commit_sha() -> None:
    uses = [line.split("uses:", 1)[1].strip() for path in sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
            for line in path.read_text(encoding="utf-8").splitlines() if "uses:" in line]
    assert uses
    for use in uses:
        ref = use.split("@", 1)[1].split()[0] if "@" in use else ""
        assert SHA.match(ref), f"not pinned by commit SHA: {use}"
        assert re.search(r"# v\d", use), f"say which release the SHA is: {use}"
