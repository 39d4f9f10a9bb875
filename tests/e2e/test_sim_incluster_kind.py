"""The simulator in a kind cluster: what only a real cluster proves (needs a Docker engine; skipped without one,
with the backend's reason).

The sim image runs ``python -m sim run --in-cluster --endpoints service`` from ``sim/deploy``; a Job in the same
cluster, with the engine's Talos client and the talosconfig the simulator wrote, probes every control-plane
endpoint — the per-node Services' ClusterIPs on port 50000, routed by kube-proxy to the simulator pod — and finds
each node running; after the rollout trigger (SIGUSR1) the simulator's timeline shows the rollout completing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.backends.selection import docker_available

pytestmark = pytest.mark.kind


@pytest.fixture(scope="module")
def kind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    ok, why = docker_available()
    if not ok:
        pytest.skip(f"kind backend needs a Docker engine: {why}")
    from e2e.backends.kind import KindBackend

    backend = KindBackend(tmp_path_factory.mktemp("kind"), cluster_name="capi-rollout-sim-selftest")
    try:
        yield backend
    finally:
        backend.close()


def test_workflow_pods_reach_every_fake_talos_node_through_its_service(kind: object, tmp_path: Path) -> None:
    from e2e.backends.kind import KindBackend
    from sim.scenario_format import load

    assert isinstance(kind, KindBackend)
    scenario = load("happy").with_timings(time_scale=60)
    sim = kind.deploy_simulator(scenario, trigger_after=-1)
    try:
        states = sim.probe_from_a_pod()
        assert len(states) == scenario.cp_replicas and set(states.values()) == {"running"}, states
        sim.trigger()
        log = ""
        for _ in range(120):  # bounded: the happy rollout at 60x takes well under two minutes of wall time
            log = sim.logs()
            if "rollout.completed" in log:
                break
            time.sleep(1.0)  # polling a remote pod's log: bounded by the loop above
        assert "rollout.triggered" in log and "rollout.completed" in log, log
    finally:
        (tmp_path / "sim.log").write_text(sim.logs())
        sim.remove()
