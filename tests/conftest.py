"""Shared pytest configuration: the real local API server fixtures (``envtest.pytest_plugin``), and the fixtures
of the Talos tests of the product and the simulator: one cluster PKI per module, a fresh timeline."""

from __future__ import annotations

import pytest

from sim.pki import ClusterPKI
from sim.timeline import Timeline

pytest_plugins = ["envtest.pytest_plugin"]


@pytest.fixture(scope="module")
def pki() -> ClusterPKI:
    return ClusterPKI.generate("prod-1")


@pytest.fixture
def timeline() -> Timeline:
    return Timeline()
