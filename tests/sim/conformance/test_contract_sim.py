"""The product's Talos client against the simulator, held to the same contract as against real Talos
(tests/sim/conformance/contract.py; the real-Talos half is test_real_talos.py and needs a Docker engine)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from capi_rollout.adapters.talos import SyncTalosClient, parse_talosconfig
from sim.pki import ClusterPKI
from sim.talos import FakeTalosFleet
from tests.sim.conformance.contract import expect_configured, expect_maintenance, expect_reboot_accepted

TAGS = ["v1.12.1", "v1.13.0"]  # the pinned talosctl lines (tools/versions.env), as the real-Talos half uses


@pytest.fixture(scope="module")
def pki() -> ClusterPKI:
    return ClusterPKI.generate("contract")


@pytest.fixture
def fleet(pki: ClusterPKI) -> Iterator[FakeTalosFleet]:
    with FakeTalosFleet(pki, reboot_downtime=0.1) as f:
        yield f


@pytest.fixture
def client(pki: ClusterPKI) -> Iterator[SyncTalosClient]:
    with SyncTalosClient(parse_talosconfig(pki.talosconfig([])), timeout=3.0) as c:
        yield c


@pytest.mark.parametrize("tag", TAGS)
def test_a_maintenance_node(fleet: FakeTalosFleet, client: SyncTalosClient, tag: str) -> None:
    node = fleet.add_node("m-0", talos_version=tag)
    fleet.set_maintenance(node.name)
    expect_maintenance(client, node.address, tag)
    assert fleet.reboots() == []


@pytest.mark.parametrize("tag", TAGS)
def test_a_configured_node(fleet: FakeTalosFleet, client: SyncTalosClient, tag: str) -> None:
    node = fleet.add_node("cp-0", talos_version=tag)
    expect_configured(client, node.address, tag)
    expect_reboot_accepted(client, node.address)
    assert [r.mode for r in fleet.reboots()] == ["default"]
