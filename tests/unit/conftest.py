"""Fixtures shared by the Talos client and fake Talos tests: one cluster PKI per module, a fresh timeline."""

from __future__ import annotations

import pytest

from sim.pki import ClusterPKI
from sim.timeline import Timeline


@pytest.fixture(scope="module")
def pki() -> ClusterPKI:
    return ClusterPKI.generate("prod-1")


@pytest.fixture
def timeline() -> Timeline:
    return Timeline()
