"""pytest fixtures for a real local API server (register with ``pytest_plugins = ["envtest.pytest_plugin"]``).

Fixtures:
- ``apiserver``: session-scoped LocalAPIServer with the CAPI v1.14 line (v1beta2 stored) + Talos + Argo CRDs.
- ``apiserver_v110``: session-scoped LocalAPIServer with the CAPI v1.10 line (v1beta1 stored); started only
  when a test asks for it. Both may run at once.
- ``kube_namespace``: a fresh namespace on ``apiserver`` for one test (deleted afterwards; stays Terminating).
- ``admin_api_client``: a session-scoped admin ``kubernetes.client.ApiClient`` for ``apiserver``.

Contract: a test using any of these fixtures gets the ``apiserver`` marker automatically. SIGTERM is turned
into KeyboardInterrupt (when nothing else handles it) so a terminated run still tears down. Missing tools are an
error telling to run ``make tools``, never a skip. Servers stop at session end, also after failures and
interrupts (finalizers, with ``atexit`` behind them).
"""

from __future__ import annotations

import re
import signal
import uuid
from collections.abc import Iterator
from types import FrameType
from typing import Any, cast

import pytest
from kubernetes.client import ApiClient

from envtest.server import LocalAPIServer

_FIXTURES = {"apiserver", "apiserver_v110", "kube_namespace", "admin_api_client"}


def _interrupt_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # A run stopped with SIGTERM (e.g. by `timeout`) tears down like Ctrl-C, so fixtures remove their servers'
    # work directories; the processes themselves die with the test process in any case (PR_SET_PDEATHSIG).
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.apiserver)


@pytest.fixture(scope="session")
def apiserver() -> Iterator[LocalAPIServer]:
    with LocalAPIServer(capi_line="v1.14", extra_crds=("talos", "argo-workflows", "argo-events", "argo-cd")) as server:
        yield server


@pytest.fixture(scope="session")
def apiserver_v110() -> Iterator[LocalAPIServer]:
    with LocalAPIServer(capi_line="v1.10", extra_crds=("talos", "argo-workflows", "argo-events", "argo-cd")) as server:
        yield server


@pytest.fixture(scope="session")
def admin_api_client(apiserver: LocalAPIServer) -> Iterator[ApiClient]:
    client = apiserver.api_client()
    try:
        yield client
    finally:
        cast(Any, client).close()


def namespace_name(test_name: str, suffix: str) -> str:
    """A valid, unique namespace name (DNS-1123 label, at most 63 characters) derived from a test name."""
    base = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")
    return f"{base[: 62 - len(suffix)].rstrip('-')}-{suffix}".lstrip("-")


@pytest.fixture
def kube_namespace(apiserver: LocalAPIServer, request: pytest.FixtureRequest) -> Iterator[str]:
    name = namespace_name(request.node.name, uuid.uuid4().hex[:6])
    apiserver.create_namespace(name)
    try:
        yield name
    finally:
        apiserver.delete_namespace(name)
