"""The wheel the images install (``Dockerfile``, ``sim/Dockerfile``: ``pip wheel --no-deps --no-build-isolation .``,
installed beside the hashed lock): what a step pod and the simulator pod run comes from it, not from the
repository, so it must carry every non-Python file they read (bundled scenarios, the rendered simulator manifest)
and start from outside the source tree.

The wheel is built with pip as the image build does (no build isolation: hatchling comes from the hashed lock,
already in the virtualenv) and unpacked into a directory put first on ``PYTHONPATH``; its dependencies come from
the project's virtualenv.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wheels = tmp_path_factory.mktemp("wheels")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(wheels), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    if built.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{built.stdout}\n{built.stderr}", pytrace=False)
    (wheel,) = wheels.glob("capi_rollout-*.whl")
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def _run(installed: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(installed), "PYTHONSAFEPATH": "1"}
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=60)


def test_the_pods_run_the_installed_wheel_not_the_repository(installed: Path, tmp_path: Path) -> None:
    where = _run(installed, "-c", "import capi_rollout, sim; print(capi_rollout.__file__); print(sim.__file__)",
                 cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(installed)) for line in where.stdout.split()), where.stdout


def test_the_step_entry_starts_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    usage = _run(installed, "-m", "capi_rollout.workflow.entry", "--help", cwd=tmp_path)
    assert usage.returncode == 0 and "capi_rollout.workflow.entry" in usage.stdout + usage.stderr


def test_the_simulator_image_finds_every_bundled_scenario_in_the_wheel(installed: Path, tmp_path: Path) -> None:
    listed = _run(installed, "-m", "sim", "scenarios", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    bundled = sorted(p.stem for p in (ROOT / "sim" / "scenarios").glob("*.yaml"))
    assert sorted(line.split()[0] for line in listed.stdout.splitlines()) == bundled
    assert (installed / "sim" / "deploy" / "simulator.yaml").read_text() == (
        ROOT / "sim" / "deploy" / "simulator.yaml").read_text()
