"""The e2e harness's remote simulator handle on the real local API server: ``python -m sim run --output json`` in a
child process, known to the test only by its JSON-lines output and the API server — what the simulator pod in kind
or a drill cluster is known by (``e2e.backends.sim_pod.SimDeployment`` shares the same ``RemoteSim`` logic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from e2e.harness import scaled
from e2e.simhandles import ProcessSim, list_machines, poll
from envtest import LocalAPIServer
from sim.objects import TCP_GROUP, TCP_VERSION


def test_a_simulator_in_a_child_process_settles_triggers_and_cleans_up_seen_only_through_its_output(
        apiserver: LocalAPIServer, admin_api_client: Any, tmp_path: Path) -> None:
    s = scaled("happy")
    sim = ProcessSim(admin_api_client, s, kubeconfig=apiserver.kubeconfig_path, workdir=tmp_path)
    try:
        sim.wait_settled(60)
        assert len(list_machines(admin_api_client, s)) == 5
        names = {m["metadata"]["name"] for m in list_machines(admin_api_client, s)}

        def printed() -> tuple[bool, str]:  # its output trails the API by one print cycle (0.2 s)
            seen = {e.subject for e in sim.timeline().events("machine.created")}
            return seen == names, f"created {sorted(seen)} of {sorted(names)}"

        poll(printed, 10, "the machine.created events")
        assert sim.timeline().first("rollout.triggered") is None

        sim.trigger_rollout()  # returns once the simulator recorded it: the specs are already changed

        assert sim.timeline().first("rollout.triggered") is not None
        tcp: Any = client.CustomObjectsApi(admin_api_client).get_namespaced_custom_object(
            TCP_GROUP, TCP_VERSION, s.namespace, "taloscontrolplanes", "demo-cp")
        assert tcp["spec"]["version"] == s.target_kubernetes_version
    finally:
        sim.stop()

    assert sim.process.returncode == 0, (tmp_path / "sim.stderr").read_text()
    assert list_machines(admin_api_client, s) == []  # SIGTERM: the simulator deleted its objects
    final = sim.timeline()
    assert final.first("rollout.triggered") is not None and final.scale == s.timings.time_scale
    sim.stop()  # idempotent
    assert sim.timeline().events() == final.events()


def test_a_simulator_that_refuses_its_namespace_fails_the_wait_with_its_own_reason(
        apiserver: LocalAPIServer, admin_api_client: Any, tmp_path: Path) -> None:
    s = scaled("happy")
    client.CoreV1Api(admin_api_client).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=s.namespace)))  # not made by the simulator, not labelled for it: safety rule 1 refuses
    sim = ProcessSim(admin_api_client, s, kubeconfig=apiserver.kubeconfig_path, workdir=tmp_path)
    try:
        with pytest.raises(RuntimeError, match=r"stopped: exit code 1: .*refusing to simulate here"):
            sim.wait_settled(60)
    finally:
        sim.stop()
