"""Shared pytest configuration for the e2e suite: the real local API server fixtures."""

pytest_plugins = ["sim.envtest.pytest_plugin"]


# --- e2e backends (appended by the executor/backends helper; see e2e/README.md) ------------------------------
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from e2e.backends import Backend, docker_available, make_backend, select_backend  # noqa: E402


def _live(line: str) -> None:
    """Step output, live, past pytest's capture (the suite's progress on the console)."""
    print(line, file=sys.__stderr__, flush=True)


@pytest.fixture(scope="session")
def e2e_results_dir() -> Path:
    """Where runs write workflow.txt/json and step logs (``E2E_RESULTS``, default ``results/``)."""
    path = Path(os.environ.get("E2E_RESULTS", "results")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def e2e_backend_name() -> str:
    """``E2E_CLUSTER`` if set, else kind where Docker answers, else local."""
    name, why = select_backend(os.environ)
    _live(f"e2e backend: {name} ({why})")
    return name


@pytest.fixture(scope="session")
def e2e_backend(request: pytest.FixtureRequest, e2e_backend_name: str, e2e_results_dir: Path) -> Iterator[Backend]:
    """The selected backend; ``kind`` asked for explicitly without Docker is an error, not a skip."""
    if e2e_backend_name == "kind":
        ok, why = docker_available()
        if not ok:
            pytest.fail(f"E2E_CLUSTER=kind but {why}", pytrace=False)
        backend = make_backend("kind", results_dir=e2e_results_dir)
    elif e2e_backend_name == "local":
        backend = make_backend("local", results_dir=e2e_results_dir, apiserver=request.getfixturevalue("apiserver"),
                               echo=_live)
    else:
        backend = make_backend(e2e_backend_name, results_dir=e2e_results_dir)
    try:
        yield backend
    finally:
        backend.close()


# --- e2e scenarios (appended by the scenarios helper; see e2e/harness.py) ---------------------------------------
from typing import Any  # noqa: E402

from e2e.harness import Stage  # noqa: E402

SIM_NEEDS_LOCAL = (
    "scenarios 1-13 drive the in-process simulator (its Timeline, fault handles and fake Talos fleet in the test "
    "process); on the {backend} backend the simulator runs in-cluster (kind_backend.deploy_simulator) and the "
    "harness (e2e/harness.py) is not ported to it yet"
)


@pytest.fixture(scope="session")
def local_backend_only(e2e_backend_name: str) -> None:
    """Scenarios with the simulator run on the local backend only; elsewhere they skip, saying why."""
    if e2e_backend_name != "local":
        pytest.skip(SIM_NEEDS_LOCAL.format(backend=e2e_backend_name))


@pytest.fixture(scope="session")
def stage(local_backend_only: None, apiserver: Any, e2e_results_dir: Path) -> Iterator[Stage]:
    """The CAPI v1.14 line (v1beta2): RBAC + rendered template installed, scenarios play on it one by one."""
    s = Stage(apiserver, e2e_results_dir, echo=_live)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="session")
def stage_v110(local_backend_only: None, apiserver_v110: Any, e2e_results_dir: Path) -> Iterator[Stage]:
    """The CAPI v1.10 line (v1beta1 only), started only when a scenario asks for it."""
    s = Stage(apiserver_v110, e2e_results_dir, echo=_live)
    try:
        yield s
    finally:
        s.close()
