"""Shared pytest configuration for the e2e suite: the real local API server fixtures."""

pytest_plugins = ["envtest.pytest_plugin"]


# --- e2e backends (appended by the executor/backends helper; see e2e/README.md) ------------------------------
import contextlib  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from e2e.backends.base import Backend  # noqa: E402
from e2e.backends.selection import docker_available, make_backend, select_backend  # noqa: E402


def _live(line: str) -> None:
    """Step output: the suite's progress. ``make e2e`` runs pytest with ``--capture=tee-sys``, so it reaches the
    console as it happens and stays in a failing test's report."""
    print(line, file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def e2e_results_dir() -> Path:
    """Where runs write workflow.txt/json and step logs (``E2E_RESULTS``, default ``results/``)."""
    path = Path(os.environ.get("E2E_RESULTS", "results")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def e2e_backend_name(pytestconfig: pytest.Config) -> str:
    """``E2E_CLUSTER`` if set, else kind where Docker answers, else local; said on the console (past the capture)."""
    name, why = select_backend(os.environ)
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        _live(backend_banner(name, why))
    return name


def backend_banner(name: str, why: str) -> str:
    """The suite's first line: which backend runs, and for ``local`` that it is not the real engine."""
    if name == "local":
        return (f"e2e backend: local ({why}): the fast template check, a local emulator of Argo Workflows, NOT the "
                "real Argo engine (the proof is `make e2e` on a real node, E2E_CLUSTER=node)")
    return f"e2e backend: {name} ({why})"


@pytest.fixture(scope="session")
def e2e_backend(request: pytest.FixtureRequest, e2e_backend_name: str, e2e_results_dir: Path) -> Iterator[Backend]:
    """The selected backend; ``kind`` asked for explicitly without Docker is an error, not a skip."""
    if e2e_backend_name == "kind":
        ok, why = docker_available()
        if not ok:
            pytest.fail(f"E2E_CLUSTER=kind but {why}", pytrace=False)
        backend = make_backend("kind", results_dir=e2e_results_dir, echo=_live)
    elif e2e_backend_name == "local":
        backend = make_backend("local", results_dir=e2e_results_dir, apiserver=request.getfixturevalue("apiserver"),
                               echo=_live)
    else:
        backend = make_backend(e2e_backend_name, results_dir=e2e_results_dir, echo=_live)
    try:
        yield backend
    finally:
        backend.close()


# --- e2e scenarios (see e2e/harness.py) ---------------------------------------------------------------------
from typing import Any  # noqa: E402

from e2e.harness import Stage, simulator_for  # noqa: E402

KIND_CLUSTER_PER_LINE = {"v1.14": "capi-rollout-e2e", "v1.10": "capi-rollout-e2e-v110"}


def _stage(request: pytest.FixtureRequest, line: str, backend_name: str, results: Path) -> Iterator[Stage]:
    if backend_name == "local":
        server = request.getfixturevalue("apiserver" if line == "v1.14" else "apiserver_v110")
        s = Stage.local(server, results, echo=_live, simulator=simulator_for(line, os.environ))
        try:
            yield s
        finally:
            s.close()
        return
    from e2e.backends.existing import ClusterBackend
    from e2e.backends.kind import KindBackend
    from e2e.backends.node import NodeBackend

    backend: Any = request.getfixturevalue("e2e_backend")
    owned = None
    if backend_name == "kind" and line != "v1.14":  # one CAPI line's CRDs per kind cluster
        owned = backend = KindBackend(results, cluster_name=KIND_CLUSTER_PER_LINE[line], echo=_live)
    assert isinstance(backend, ClusterBackend)
    if isinstance(backend, NodeBackend):
        backend.install_capi_crds(backend.capi_line)
    try:
        ok, why = backend.capi_line_available(line)
        if not ok:
            pytest.skip(f"CAPI {line} scenarios on {backend_name}: {why}")
        deployed = os.environ.get("E2E_DEPLOYED_TEMPLATE", "").strip() if backend_name == "existing" else ""
        yield Stage.on_cluster(backend, template=backend.deployed_template(deployed) if deployed else None)
    finally:
        if owned is not None:
            owned.close()


@pytest.fixture(scope="session")
def stage(request: pytest.FixtureRequest, e2e_backend_name: str, e2e_results_dir: Path) -> Iterator[Stage]:
    """The CAPI v1.14 line (v1beta2): RBAC + rendered template installed, scenarios play on it one by one."""
    yield from _stage(request, "v1.14", e2e_backend_name, e2e_results_dir)


@pytest.fixture(scope="session")
def stage_v110(request: pytest.FixtureRequest, e2e_backend_name: str, e2e_results_dir: Path) -> Iterator[Stage]:
    """The CAPI v1.10 line (v1beta1 only), started only when a scenario asks for it."""
    yield from _stage(request, "v1.10", e2e_backend_name, e2e_results_dir)
