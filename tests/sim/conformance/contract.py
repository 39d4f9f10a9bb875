"""What the product's Talos client must get from a Talos node — the simulator's and a real one alike.

Contract: each ``expect_*`` function takes the product's :class:`SyncTalosClient`, the node's address (``host`` or
``host:port``) and the node's Talos tag, runs the product's calls and asserts what real Talos answers. The
simulator half (tests/sim/conformance/test_contract_sim.py) and the real-Talos half (test_real_talos.py, Docker only)
call the same functions, so both are held to one standard.
"""

from __future__ import annotations

import time

import pytest

from capi_rollout.adapters.talos import ProbeState, SyncTalosClient
from capi_rollout.adapters.talos.outcomes import NodeProbe, TalosCallError, parse_version


def wait_for_stage(client: SyncTalosClient, address: str, stages: set[str], *, within: float) -> NodeProbe:
    """Probe until the node reports one of ``stages`` (a booting node is first unreachable), bounded."""
    deadline = time.monotonic() + within
    probe = client.probe(address)
    while probe.stage not in stages and time.monotonic() < deadline:
        time.sleep(1.0)  # a real node boots in tens of seconds; polling its API, bounded by `within`
        probe = client.probe(address)
    assert probe.stage in stages, f"{address} never reached {sorted(stages)}: {probe}"
    return probe


def expect_maintenance(client: SyncTalosClient, address: str, tag: str) -> None:
    """A node booted without a machine config: detected credential-free, never rebooted; Version per line."""
    probe = client.probe(address)
    assert (probe.state, probe.stage, probe.ready) == (ProbeState.MAINTENANCE, "maintenance", False), probe
    assert "self-signed" in probe.detail and "certificate SHA-256 fingerprint" in probe.detail
    result = client.reboot(address, "default")
    assert (result.accepted, result.state) == (False, ProbeState.MAINTENANCE), result
    if (parse_version(tag) or (0, 0)) <= (1, 12):  # the separate maintenance server: Version for os:admin only
        with pytest.raises(TalosCallError) as err:
            client.version(address)
        assert err.value.state is ProbeState.MAINTENANCE
        assert "UNIMPLEMENTED: API is not implemented in maintenance mode" in err.value.detail
    else:
        assert client.version(address) == tag


def expect_configured(client: SyncTalosClient, address: str, tag: str) -> None:
    """A node with its machine config: mTLS Version and MachineStatus, and a Reboot Talos accepts."""
    assert client.version(address) == tag
    probe = client.probe(address)
    assert probe.stage == "running" and probe.state in (ProbeState.RUNNING, ProbeState.BOOTING), probe
    assert probe.ready is not None


def expect_reboot_accepted(client: SyncTalosClient, address: str) -> None:
    """Reboot (default mode) is accepted with an actor id: Talos answers, then reboots in the background."""
    result = client.reboot(address, "default")
    assert (result.accepted, result.state) == (True, ProbeState.BOOTING), result
    assert "accepted (actor id " in result.detail, result
