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
