"""The simulator against the real local API server (CRDs of both CAPI lines) and its fake Talos API.

Every scenario runs at a high time scale with shortened durations, so a whole rollout takes about a second.
Reboots go through the project's real Talos client over Ed25519 mTLS, as the engine sends them.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from capi_rollout.adapters.talos import ProbeState, SyncTalosClient
from capi_rollout.adapters.talos.config import parse_talosconfig
from envtest import LocalAPIServer
from sim.capi.memstore import MemoryStore
from sim.objects import capi_version
from sim.safety import MARKER_LABEL, UnsafeTargetError
from sim.scenario import DeploymentSpec, Fault, Scenario, Target, Timings
from sim.simulator import Simulator

FAST = Timings(pending=1, provisioning=3, boot=3, node_ready=2, deletion=2, reboot=3, time_scale=60)
WAIT = 30.0


def scenario(line: str = "v1.14", **kw: Any) -> Scenario:
    base: dict[str, Any] = dict(
        cluster="demo", namespace=f"sim-{uuid.uuid4().hex[:8]}", capi_line=line, cp_replicas=3,
        deployments=(DeploymentSpec(name="workers", replicas=2, max_surge=1, max_unavailable=0),),
        timings=FAST, trigger="tcp-version",
    )
    base.update(kw)
    return Scenario(**base).validate()


@pytest.fixture
def api(apiserver: LocalAPIServer) -> Iterator[client.ApiClient]:
    c = apiserver.api_client()
    yield c
    c.close()  # type: ignore[no-untyped-call]


def get(api: client.ApiClient, s: Scenario, plural: str, name: str) -> dict[str, Any]:
    group, version = (
        ("controlplane.cluster.x-k8s.io", "v1alpha3") if plural == "taloscontrolplanes"
        else ("cluster.x-k8s.io", capi_version(s.capi_line))
    )
    out: Any = client.CustomObjectsApi(api).get_namespaced_custom_object(
        group, version, s.namespace, plural, name
    )
    return dict(out)


def listed(api: client.ApiClient, s: Scenario, plural: str) -> list[dict[str, Any]]:
    out: Any = client.CustomObjectsApi(api).list_namespaced_custom_object(
        "cluster.x-k8s.io", capi_version(s.capi_line), s.namespace, plural
    )
    return list(out["items"])


def sget(sim: Simulator, plural: str, name: str) -> dict[str, Any]:
    """Read one object through the simulator's store (the real API server or the in-memory one)."""
    return next((o for o in sim.store.list(plural) if o["metadata"]["name"] == name), {})


def slist(sim: Simulator, plural: str) -> list[dict[str, Any]]:
    return sim.store.list(plural)


@pytest.fixture(params=["memory", "apiserver"])
def make(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Build a Simulator on the in-memory store (fast) or on the real API server (schemas, watches)."""
    api: client.ApiClient | None = None
    if request.param == "apiserver":
        api = request.getfixturevalue("apiserver").api_client()

    def build(s: Scenario) -> Simulator:
        if api is None:
            return Simulator(None, s, store=MemoryStore(s.namespace))
        return Simulator(api, s)

    yield build
    if api is not None:
        api.close()  # type: ignore[no-untyped-call]


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None)


def talos(sim: Simulator) -> SyncTalosClient:
    return SyncTalosClient(parse_talosconfig(sim.talosconfig), port=sim.fleet.port, timeout=5.0)


def elapse(sim: Simulator, sim_seconds: float) -> None:
    """Let ``sim_seconds`` of simulated time pass from now (the clock also counts the bootstrap)."""
    until = sim.now() + sim_seconds
    sim.wait_until(lambda: sim.now() > until, WAIT)


def completed(sim: Simulator, name: str) -> bool:
    return sim.timeline.first("rollout.completed", name) is not None


# --------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("line", ["v1.14", "v1.10"])
def test_the_cluster_appears_with_the_exact_fields_of_the_capi_line(
    line: str, apiserver: LocalAPIServer, request: pytest.FixtureRequest
) -> None:
    server = apiserver if line == "v1.14" else request.getfixturevalue("apiserver_v110")
    api = server.api_client()
    s = scenario(line)
    with Simulator(api, s) as sim:
        sim.wait_until(lambda: (get(api, s, "taloscontrolplanes", "demo-cp").get("status") or {})
                       .get("readyReplicas") == 3, WAIT)
        m = get(api, s, "machines", "demo-cp-0")
        labels = m["metadata"]["labels"]
        assert labels["cluster.x-k8s.io/cluster-name"] == "demo" and "cluster.x-k8s.io/control-plane" in labels
        assert m["metadata"]["ownerReferences"][0]["kind"] == "TalosControlPlane"
        assert m["status"]["phase"] == "Running"
        node = sim.node("demo-cp-0")
        assert {"type": "InternalIP", "address": node.address} in m["status"]["addresses"]
        if line == "v1.14":
            assert m["status"]["nodeRef"] == {"name": "demo-cp-0"}
            ready = cond(m, "Ready")
            assert ready is not None and ready["status"] == "True" and "observedGeneration" in ready
        else:
            assert m["status"]["nodeRef"]["kind"] == "Node" and m["status"]["nodeRef"]["name"] == "demo-cp-0"
            assert cond(m, "NodeHealthy")["status"] == "True"  # type: ignore[index]
        tcp = get(api, s, "taloscontrolplanes", "demo-cp")
        st = tcp["status"]
        assert (st["replicas"], st["readyReplicas"], st["unavailableReplicas"]) == (3, 3, 0)
        assert st["ready"] and st["initialized"] and st["observedGeneration"] == tcp["metadata"]["generation"]
        assert cond(tcp, "MachinesSpecUpToDate")["status"] == "True"  # type: ignore[index]
        sim.wait_until(lambda: (get(api, s, "machinedeployments", "demo-workers").get("status") or {})
                       .get("readyReplicas") == 2, WAIT)
        md = get(api, s, "machinedeployments", "demo-workers")
        if line == "v1.14":
            assert md["spec"]["rollout"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
            assert md["status"]["upToDateReplicas"] == 2 and md["status"]["availableReplicas"] == 2
        else:
            assert md["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
            assert md["status"]["updatedReplicas"] == 2 and md["status"]["unavailableReplicas"] == 0
        worker = next(w for w in listed(api, s, "machines") if "cluster.x-k8s.io/set-name" in w["metadata"]["labels"])
        assert worker["metadata"]["labels"]["cluster.x-k8s.io/deployment-name"] == "demo-workers"
        assert worker["metadata"]["ownerReferences"][0]["kind"] == "MachineSet"
        # The talosconfig Secret, as the Talos bootstrap provider writes it.
        secret: Any = client.CoreV1Api(api).read_namespaced_secret("demo-talosconfig", s.namespace)
        assert secret.metadata.labels["cluster.x-k8s.io/cluster-name"] == "demo"
        assert secret.metadata.owner_references[0].kind == "Cluster"
        cfg = yaml.safe_load(base64.b64decode(secret.data["talosconfig"]))
        assert cfg["context"] == "demo" and len(cfg["contexts"]["demo"]["endpoints"]) == 3
        assert sim.controllers.errors == []
    api.close()


# --------------------------------------------------------------------------------------------- rollouts


def test_a_tcp_version_change_replaces_control_plane_machines_one_at_a_time(make: Any) -> None:
    s = scenario()
    with make(s) as sim:
        sim.trigger_rollout()
        sim.wait_until(lambda: completed(sim, "demo-cp"), WAIT)
        deletes = [e.subject for e in sim.timeline.events("controller.delete")]
        assert deletes == ["demo-cp-0", "demo-cp-1", "demo-cp-2"]
        # never more than one outdated machine missing: each delete waits for the previous replacement to be Ready
        order = [(e.kind, e.subject) for e in sim.timeline if e.kind in ("controller.delete", "machine.ready")]
        assert order.index(("machine.ready", "demo-cp-3")) < order.index(("controller.delete", "demo-cp-1"))
        assert order.index(("machine.ready", "demo-cp-4")) < order.index(("controller.delete", "demo-cp-2"))
        tcp = sget(sim, "taloscontrolplanes", "demo-cp")
        sim.wait_until(lambda: sget(sim, "taloscontrolplanes", "demo-cp")["status"]["version"] == "v1.33.1", WAIT)
        tcp = sget(sim, "taloscontrolplanes", "demo-cp")
        assert tcp["status"]["observedGeneration"] == tcp["metadata"]["generation"] == 2
        assert cond(tcp, "MachinesSpecUpToDate")["status"] == "True"  # type: ignore[index]
        assert sorted(m["metadata"]["name"] for m in slist(sim, "machines")
                      if "cluster.x-k8s.io/control-plane" in m["metadata"]["labels"]) == [
            "demo-cp-3", "demo-cp-4", "demo-cp-5"]
        assert sim.node("demo-cp-3").talos_version == s.target_talos_version


def test_tcp_reports_rolling_update_in_progress_while_rolling(make: Any) -> None:
    s = scenario(timings=Timings(pending=1, provisioning=30, boot=30, node_ready=2, deletion=2, reboot=3,
                                 time_scale=60))
    with make(s) as sim:
        sim.trigger_rollout()
        sim.wait_until(lambda: (c := cond(sget(sim, "taloscontrolplanes", "demo-cp"), "MachinesSpecUpToDate"))
                       and c["status"] == "False", WAIT)
        c = cond(sget(sim, "taloscontrolplanes", "demo-cp"), "MachinesSpecUpToDate")
        assert c is not None and c["reason"] == "RollingUpdateInProgress"


@pytest.mark.parametrize("line", ["v1.14", "v1.10"])
def test_an_md_template_change_rolls_through_a_new_machineset_within_max_surge(
    line: str, apiserver: LocalAPIServer, request: pytest.FixtureRequest
) -> None:
    server = apiserver if line == "v1.14" else request.getfixturevalue("apiserver_v110")
    api = server.api_client()
    s = scenario(line, trigger="md-template",
                 deployments=(DeploymentSpec(name="workers", replicas=3, max_surge=1, max_unavailable=0),))
    peak = 0
    with Simulator(api, s) as sim:
        sim.trigger_rollout()

        def done() -> bool:
            nonlocal peak
            live = [m for m in slist(sim, "machines")
                    if "cluster.x-k8s.io/set-name" in m["metadata"]["labels"] and not m["metadata"].get(
                        "deletionTimestamp")]
            peak = max(peak, len(live))
            return completed(sim, "demo-workers")

        sim.wait_until(done, WAIT)
        assert peak <= 4, "3 replicas + 1 maxSurge"
        sets = {e.subject for e in sim.timeline.events("machineset.created")}
        assert sets == {"demo-workers-r1", "demo-workers-r2"}
        sim.wait_until(lambda: {m["metadata"]["name"] for m in slist(sim, "machinesets")} == {"demo-workers-r2"},
                       WAIT)
        md = sget(sim, "machinedeployments", "demo-workers")
        up_to_date = md["status"]["upToDateReplicas" if line == "v1.14" else "updatedReplicas"]
        assert up_to_date == 3 and md["status"]["observedGeneration"] == md["metadata"]["generation"]
    api.close()


def test_tcp_and_md_roll_independently_when_both_change(make: Any) -> None:
    s = scenario(trigger="both")
    with make(s) as sim:
        sim.trigger_rollout()
        sim.wait_until(lambda: completed(sim, "demo-cp") and completed(sim, "demo-workers"), WAIT)
        started = {e.subject: e.sim_seconds for e in sim.timeline.events("rollout.started")}
        done_event = sim.timeline.first("rollout.completed", "demo-cp")
        assert done_event is not None
        first_cp_done = done_event.sim_seconds
        assert started["demo-workers"] < first_cp_done, "workers did not wait for the control plane"


# --------------------------------------------------------------------------------------------- faults


def test_node_not_ready_recovers_after_a_talos_reboot_over_mtls(make: Any) -> None:
    s = scenario(faults=(Fault(kind="node-not-ready", target=Target(role="cp", ordinal=0), recover="after-reboot"),))
    with make(s) as sim, talos(sim) as tc:
        sim.trigger_rollout()
        sim.wait_until(lambda: sget(sim, "machines", "demo-cp-3").get("status", {}).get("nodeRef"), WAIT)
        elapse(sim, 20)  # well past node_ready: still NotReady
        m = sget(sim, "machines", "demo-cp-3")
        assert m["status"]["phase"] == "Running" and cond(m, "Ready")["status"] == "False"  # type: ignore[index]
        assert not completed(sim, "demo-cp")
        assert tc.probe(sim.node("demo-cp-3").address).state == ProbeState.BOOTING
        boot_id = sim.node("demo-cp-3").boot_id
        result = tc.reboot(sim.node("demo-cp-3").address, "powercycle")
        assert result.accepted
        sim.wait_until(lambda: completed(sim, "demo-cp"), WAIT)
        assert sim.node("demo-cp-3").boot_id != boot_id
        reboot = sim.timeline.first("talos.reboot", "demo-cp-3")
        assert reboot is not None and reboot.details["mode"] == "powercycle" and reboot.details["role"] == "os:admin"


def test_stall_provisioning_never_recovers_and_replacements_inherit_it(make: Any) -> None:
    s = scenario(faults=(Fault(kind="stall-provisioning", target=Target(role="cp", ordinal=0), recover="never"),))
    with make(s) as sim:
        sim.trigger_rollout()
        sim.wait_until(lambda: sget(sim, "machines", "demo-cp-3").get("status", {}).get("phase") == "Provisioning",
                       WAIT)
        later = sim.now() + 20  # well past provisioning + boot
        sim.wait_until(lambda: sim.now() > later, WAIT)
        m = sget(sim, "machines", "demo-cp-3")
        assert m["status"]["phase"] == "Provisioning" and "nodeRef" not in m["status"]
        # the engine's remediation: delete the stuck machine
        sim.store.delete("machines", "demo-cp-3")
        sim.wait_until(lambda: sim.timeline.first("machine.deleted", "demo-cp-3"), WAIT)
        sim.wait_until(lambda: sget(sim, "machines", "demo-cp-4").get("status", {}).get("phase") == "Provisioning",
                       WAIT)
        start = sim.now()
        sim.wait_until(lambda: sim.now() > start + 20, WAIT)
        m = sget(sim, "machines", "demo-cp-4")
        assert m["status"]["phase"] == "Provisioning"
        inherited = sim.timeline.first("fault.injected", "demo-cp-4")
        assert inherited is not None and inherited.details["inherited"]


def test_worker_recovers_after_replacement(make: Any) -> None:
    s = scenario(trigger="md-template", faults=(
        Fault(kind="node-not-ready", target=Target(role="worker", ordinal=0), recover="after-replacement"),))
    with make(s) as sim:
        sim.trigger_rollout()
        sim.wait_until(lambda: sim.machine("demo-workers-r2-0"), WAIT)
        elapse(sim, 20)
        assert not completed(sim, "demo-workers")
        sim.store.delete("machines", "demo-workers-r2-0")
        sim.wait_until(lambda: completed(sim, "demo-workers"), WAIT)
        deleting = sim.timeline.first("machine.deleting", "demo-workers-r2-0")
        replacement = sim.timeline.first("machine.created", "demo-workers-r2-1")
        assert deleting is not None and replacement is not None


def test_stall_deletion_keeps_the_finalizer_until_the_node_is_rebooted(make: Any) -> None:
    s = scenario(faults=(Fault(kind="stall-deletion", when="before", target=Target(machine="demo-cp-0"),
                               recover="after-reboot"),))
    with make(s) as sim, talos(sim) as tc:
        sim.trigger_rollout()
        sim.wait_until(lambda: sim.timeline.first("machine.deleting", "demo-cp-0"), WAIT)
        elapse(sim, 20)
        m = sget(sim, "machines", "demo-cp-0")
        assert m["metadata"]["deletionTimestamp"] and m["metadata"]["finalizers"]
        assert m["status"]["phase"] == "Deleting"
        assert tc.reboot(sim.node("demo-cp-0").address, "powercycle").accepted
        sim.wait_until(lambda: sim.timeline.first("machine.deleted", "demo-cp-0"), WAIT)
        sim.wait_until(lambda: completed(sim, "demo-cp"), WAIT)


@pytest.mark.parametrize("talos_version", ["v1.12.0", "v1.13.0"])
def test_maintenance_before_the_rollout_is_visible_through_the_talos_client(make: Any, talos_version: str) -> None:
    s = scenario(talos_version=talos_version, faults=(
        Fault(kind="maintenance", when="before", target=Target(machine="demo-cp-1"), recover="never"),))
    with make(s) as sim, talos(sim) as tc:
        sim.wait_until(lambda: sim.node("demo-cp-1") is not None and sim.node("demo-cp-1").maintenance, WAIT)
        probe = tc.probe(sim.node("demo-cp-1").address)
        assert probe.state == ProbeState.MAINTENANCE and probe.stage == "maintenance"
        assert tc.probe(sim.node("demo-cp-0").address).state == ProbeState.RUNNING
        sim.wait_until(lambda: cond(sget(sim, "machines", "demo-cp-1"), "Ready")["status"] == "False",  # type: ignore[index]
                       WAIT)
        assert sim.timeline.first("talos.maintenance", "demo-cp-1") is not None
        # maintenance mode refuses reboots (Unimplemented ≤ 1.12, PermissionDenied ≥ 1.13)
        assert not tc.reboot(sim.node("demo-cp-1").address, "powercycle").accepted


def test_a_remediation_reboot_can_land_the_node_in_maintenance(make: Any) -> None:
    s = scenario(faults=(
        Fault(kind="node-not-ready", target=Target(role="cp", ordinal=0), recover="never"),
        Fault(kind="maintenance", when="after-reboot", target=Target(role="cp", ordinal=0), recover="never"),
    ))
    with make(s) as sim, talos(sim) as tc:
        sim.trigger_rollout()
        sim.wait_until(lambda: sim.machine("demo-cp-3") and sim.machine("demo-cp-3").last_phase == "Running", WAIT)
        address = sim.node("demo-cp-3").address
        assert tc.reboot(address, "powercycle").accepted
        sim.wait_until(lambda: tc.probe(address).state == ProbeState.MAINTENANCE, WAIT)
        assert [e.subject for e in sim.timeline.events("talos.maintenance")] == ["demo-cp-3"]


def test_talos_unreachable_makes_the_node_refuse_connections(make: Any) -> None:
    s = scenario(faults=(
        Fault(kind="node-not-ready", target=Target(role="cp", ordinal=0), recover="after-replacement"),
        Fault(kind="talos-unreachable", target=Target(role="cp", ordinal=0), recover="never"),
    ))
    with make(s) as sim, talos(sim) as tc:
        sim.trigger_rollout()
        sim.wait_until(lambda: sim.machine("demo-cp-3") and sim.machine("demo-cp-3").unreachable, WAIT)
        assert tc.probe(sim.node("demo-cp-3").address).state == ProbeState.UNREACHABLE
        assert not tc.reboot(sim.node("demo-cp-3").address, "powercycle").accepted


def test_quorum_loss_shows_two_unhealthy_control_plane_machines(make: Any) -> None:
    s = scenario(faults=tuple(
        Fault(kind="node-not-ready", when="before", target=Target(machine=n), recover="never")
        for n in ("demo-cp-1", "demo-cp-2")))
    with make(s) as sim:
        sim.wait_until(lambda: sget(sim, "taloscontrolplanes", "demo-cp").get("status", {}).get("readyReplicas")
                       == 1, WAIT)
        sim.trigger_rollout()
        elapse(sim, 30)
        assert sim.timeline.first("controller.delete") is None, "CACPPT does not scale down an unhealthy CP"


def test_slow_makes_the_rollout_miss_a_deadline(make: Any) -> None:
    s = scenario(faults=(Fault(kind="slow", factor=20),))
    with make(s) as sim:
        sim.trigger_rollout()
        sim.wait_until(lambda: sget(sim, "machines", "demo-cp-3").get("status"), WAIT)
        created = sim.machine("demo-cp-3")
        assert created is not None
        sim.wait_until(lambda: sim.now() > created.created_at + 60, WAIT)  # 60 s: 4x a normal boot
        m = sget(sim, "machines", "demo-cp-3")
        assert m["status"]["phase"] in ("Pending", "Provisioning")


# --------------------------------------------------------------------------------------------- safety


def test_the_simulator_refuses_a_namespace_it_did_not_mark(api: client.ApiClient, kube_namespace: str) -> None:
    s = scenario(namespace=kube_namespace)
    with pytest.raises(UnsafeTargetError, match=MARKER_LABEL):
        Simulator(api, s).start()


def test_the_simulator_marks_the_namespace_it_creates_and_cleans_up(api: client.ApiClient) -> None:
    s = scenario()
    with Simulator(api, s):
        ns: Any = client.CoreV1Api(api).read_namespace(s.namespace)
        assert ns.metadata.labels[MARKER_LABEL] == "true"
    assert listed(api, s, "machines") == []
    # a second run in the marked, now empty namespace is accepted
    with Simulator(api, s) as sim:
        assert sim.machine("demo-cp-0") is not None
