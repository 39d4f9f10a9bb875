"""The Kubernetes adapter against a real kube-apiserver with the real CAPI CRDs (both lines)."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlparse

import pytest
from kubernetes import client

from capi_rollout.adapters.informer import cluster_cache
from capi_rollout.adapters.kube import Backoff, Kube, KubeError
from capi_rollout.domain.ledger import Ledger
from capi_rollout.domain.model import CLUSTER_NAME_LABEL
from capi_rollout.ledger_store import KubeLedgerStore
from envtest import assets, rest
from envtest.server import LocalAPIServer
from sim import objects as o

pytestmark = pytest.mark.apiserver


def seed(server: LocalAPIServer, line: str, namespace: str, cluster: str) -> dict[str, Any]:
    """One cluster's Cluster, TalosControlPlane, MachineDeployment and a control-plane Machine."""
    tcp = o.talos_control_plane(name=f"{cluster}-cp", namespace=namespace, cluster_name=cluster, replicas=1,
                                version="v1.34.1", max_surge=0, talos_version="v1.12")
    template = o.machine_template(line, cluster_name=cluster, namespace=namespace, version="v1.34.1",
                                  infra_template=o.infra_template_name(cluster, "worker", 1),
                                  bootstrap_template=f"{cluster}-worker-bootstrap")
    md = o.machine_deployment(line, name=f"{cluster}-workers", namespace=namespace, cluster_name=cluster, replicas=1,
                              max_surge=0, max_unavailable=1, strategy="RollingUpdate", template=template)
    server.apply_manifests([o.cluster(line, cluster, namespace), tcp, md], namespace=namespace)
    created = cast(dict[str, Any], client.CustomObjectsApi(server.admin).get_namespaced_custom_object(
        o.TCP_GROUP, o.TCP_VERSION, namespace, "taloscontrolplanes", f"{cluster}-cp"))
    machine = o.machine(line, name=f"{cluster}-cp-a", namespace=namespace, cluster_name=cluster, owner=created,
                        version="v1.34.1", infra_template="t", labels={o.CONTROL_PLANE_LABEL: ""})
    machine["metadata"].pop("finalizers")
    (live,) = server.apply_manifests([machine], namespace=namespace)
    return live


def test_discovery_reads_v1beta2_on_capi_1_14(apiserver: LocalAPIServer) -> None:
    assert Kube(apiserver.api_client()).capi_version() == "v1beta2"


def test_discovery_falls_back_to_v1beta1_on_capi_1_10(apiserver_v110: LocalAPIServer) -> None:
    assert Kube(apiserver_v110.api_client()).capi_version() == "v1beta1"


@pytest.mark.parametrize("line", ["v1.14", "v1.10"])
def test_objects_are_selected_by_the_cluster_name_label_only(line: str, request: pytest.FixtureRequest) -> None:
    server: LocalAPIServer = request.getfixturevalue("apiserver" if line == "v1.14" else "apiserver_v110")
    ns = f"sel-{line.replace('.', '')}-{int(time.time() * 1000) % 100000}"
    server.create_namespace(ns)
    seed(server, line, ns, "alpha")
    seed(server, line, ns, "beta")
    kube = Kube(server.api_client())
    sel = "cluster.x-k8s.io/cluster-name=alpha"
    assert [m["metadata"]["name"] for m in kube.list_machines(ns, sel)] == ["alpha-cp-a"]
    assert [t["metadata"]["name"] for t in kube.list_control_planes(ns, sel)] == ["alpha-cp"]
    mds = kube.list_machine_deployments(ns, sel)
    assert [m["metadata"]["name"] for m in mds] == ["alpha-workers"]
    assert mds[0]["apiVersion"] == f"cluster.x-k8s.io/{o.capi_version(line)}"
    assert kube.get_cluster(ns, "alpha") is not None and kube.get_cluster(ns, "gamma") is None


def test_a_machine_is_deleted_only_when_its_uid_still_matches(apiserver: LocalAPIServer, kube_namespace: str) -> None:
    live = seed(apiserver, "v1.14", kube_namespace, "gamma")
    kube = Kube(apiserver.api_client())
    with pytest.raises(KubeError, match=r"409|Precondition"):
        kube.delete_machine(kube_namespace, "gamma-cp-a", "not-the-uid")
    assert kube.delete_machine(kube_namespace, "gamma-cp-a", live["metadata"]["uid"]) is True
    assert kube.delete_machine(kube_namespace, "gamma-cp-a", live["metadata"]["uid"]) is False


def test_events_are_recorded_on_the_owner(apiserver: LocalAPIServer, kube_namespace: str) -> None:
    seed(apiserver, "v1.14", kube_namespace, "delta")
    kube = Kube(apiserver.api_client())
    (tcp,) = kube.list_control_planes(kube_namespace, "cluster.x-k8s.io/cluster-name=delta")
    kube.record_event(involved=tcp, reason="CapiRolloutRemediation", message="deleted Machine x", warning=True)
    events = client.CoreV1Api(apiserver.admin).list_namespaced_event(kube_namespace).items
    assert [(e.involved_object.name, e.reason, e.type) for e in events] == [
        ("delta-cp", "CapiRolloutRemediation", "Warning")]


def test_the_rollout_ledger_uses_optimistic_concurrency(apiserver: LocalAPIServer, kube_namespace: str) -> None:
    apiserver.install_crds([assets.REPO_ROOT / "overlay/management/argo-workflows/capi-rollout-ledger-crd.yaml"])
    kube = Kube(apiserver.api_client())
    store = KubeLedgerStore(kube, namespace=kube_namespace, run_id="wf-1")
    assert store.load() is None
    store.save(Ledger(cluster="c", namespace="n"))
    other = KubeLedgerStore(kube, namespace=kube_namespace, run_id="wf-1")
    assert other.load() == Ledger(cluster="c", namespace="n")
    other.save(Ledger(cluster="c", namespace="n", warnings=("w",)))
    with pytest.raises(KubeError, match="409"):
        store.save(Ledger(cluster="c", namespace="n", warnings=("stale",)))
    assert KubeLedgerStore(kube, namespace=kube_namespace, run_id="wf-1").load().warnings == ("w",)  # type: ignore[union-attr]
    (obj,) = rest.request_json(apiserver.admin, "GET",
                               f"/apis/capi-rollout.io/v1alpha1/namespaces/{kube_namespace}/rolloutledgers")["items"]
    assert (obj["spec"]["clusterName"], obj["spec"]["clusterNamespace"]) == ("c", "n")


def test_a_ledger_owned_by_a_workflow_carries_its_owner_reference(apiserver: LocalAPIServer,
                                                                  kube_namespace: str) -> None:
    apiserver.install_crds([assets.REPO_ROOT / "overlay/management/argo-workflows/capi-rollout-ledger-crd.yaml"])
    owner = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": "wf-2", "uid": "u-2"}
    KubeLedgerStore(Kube(apiserver.api_client()), namespace=kube_namespace, run_id="wf-2", owner=owner).save(
        Ledger(cluster="c", namespace="n"))
    ledgers = f"/apis/capi-rollout.io/v1alpha1/namespaces/{kube_namespace}/rolloutledgers"
    obj = rest.request_json(apiserver.admin, "GET", f"{ledgers}/capi-rollout-wf-2")
    (ref,) = obj["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["uid"]) == ("Workflow", "wf-2", "u-2")  # GC'd with the Workflow


def test_waiting_is_woken_by_a_watch_event_within_a_second(apiserver: LocalAPIServer, kube_namespace: str) -> None:
    live = seed(apiserver, "v1.14", kube_namespace, "eps")
    kube = Kube(apiserver.api_client())
    api = client.CustomObjectsApi(apiserver.admin)
    with cluster_cache(kube, kube_namespace, "eps", label=CLUSTER_NAME_LABEL) as watcher:
        while watcher.wait(0.5):  # drain the initial ADDED events until the watch is quiet
            pass

        def touch() -> None:
            time.sleep(0.5)
            api.patch_namespaced_custom_object_status(
                o.CAPI_GROUP, "v1beta2", kube_namespace, "machines", live["metadata"]["name"],
                {"status": {"phase": "Running"}})

        threading.Thread(target=touch, daemon=True).start()
        start = time.monotonic()
        assert watcher.wait(30.0) is True
        woke = time.monotonic() - start
    assert 0.4 < woke < 1.5, f"woke after {woke:.2f}s"


def wait_until_refused(url: str, timeout: float = 30.0) -> None:
    """Block until nothing listens on the server's port any more (it was killed)."""
    parsed = urlparse(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((parsed.hostname, parsed.port), timeout=0.5).close()
        except OSError:
            return
        time.sleep(0.01)
    raise AssertionError(f"{url} still accepts connections after {timeout}s")


def test_reads_survive_the_api_server_being_killed_and_restarted() -> None:
    # A private server: killing the session's shared one would break every test after this one.
    with LocalAPIServer(capi_line="v1.14", extra_crds=("talos",)) as server:
        server.create_namespace("restart")
        seed(server, "v1.14", "restart", "zeta")
        retries: list[float] = []

        def sleep(seconds: float) -> None:
            retries.append(seconds)
            time.sleep(seconds)

        kube = Kube(server.api_client(), backoff=Backoff(initial=0.1, cap=1.0, retry_for=120, sleep=sleep))
        kube.capi_version()
        restarter = threading.Thread(target=server.restart_apiserver, daemon=True)
        restarter.start()
        wait_until_refused(server.url)
        machines = kube.list_machines("restart", "cluster.x-k8s.io/cluster-name=zeta")
        restarter.join(120)
    assert [m["metadata"]["name"] for m in machines] == ["zeta-cp-a"]
    assert retries, "the list should have met the dead API server and retried"


def test_a_non_transient_error_is_not_retried(apiserver: LocalAPIServer) -> None:
    sleeps: list[float] = []
    kube = Kube(apiserver.api_client(), backoff=Backoff(sleep=sleeps.append))
    with pytest.raises(KubeError, match=r"404|not found"):
        kube._list(o.CAPI_GROUP, "v1beta2", "nosuchthings", "default", None)
    assert sleeps == []


def test_two_attempts_racing_on_one_ledger_remediate_exactly_once(apiserver: LocalAPIServer,
                                                                  kube_namespace: str) -> None:
    """A retried step while the old pod still runs: both read the ledger, both decide to remediate the same
    Machine at the same moment; only the attempt whose intent write lands deletes and reboots."""
    from capi_rollout.domain.decide import Action
    from capi_rollout.domain.ledger import PhaseRecord
    from capi_rollout.domain.model import Machine
    from capi_rollout.remediator import RemediationAborted, Remediator
    from tests.fakes import FakeTalos

    apiserver.install_crds([assets.REPO_ROOT / "overlay/management/argo-workflows/capi-rollout-ledger-crd.yaml"])
    live = seed(apiserver, "v1.14", kube_namespace, "race")
    live["status"] = {"addresses": [{"type": "InternalIP", "address": "10.9.0.1"}]}
    kube = Kube(apiserver.api_client())
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    record = PhaseRecord(name="control-plane", started=t0, last_progress=t0)
    KubeLedgerStore(kube, namespace=kube_namespace, run_id="wf-race").save(
        Ledger(cluster="race", namespace=kube_namespace).with_phase(record))
    machine = Machine.from_obj(live)
    action = Action("remediate", "stalled", "", record, machine=machine, delete=True, reboot=True)

    talos = FakeTalos()
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt(name: str) -> None:
        store = KubeLedgerStore(Kube(apiserver.api_client()), namespace=kube_namespace, run_id="wf-race")
        store.load()

        def save(rec: PhaseRecord) -> None:
            store.save(Ledger(cluster="race", namespace=kube_namespace).with_phase(rec))

        executor = Remediator(kube=Kube(apiserver.api_client()), talos=talos, dry_run=False, save=save)
        barrier.wait(timeout=10)
        try:
            executor.remediate(action, owner=None, reboot_mode="powercycle", now=t0)
            outcomes.append(f"{name}: remediated")
        except RemediationAborted:
            outcomes.append(f"{name}: aborted")

    threads = [threading.Thread(target=attempt, args=(n,)) for n in ("old pod", "retried pod")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(o.split(": ")[1] for o in outcomes) == ["aborted", "remediated"], outcomes
    assert talos.reboots == [("10.9.0.1", "powercycle")]
    assert cast(dict[str, Any], client.CustomObjectsApi(apiserver.admin).list_namespaced_custom_object(
        "cluster.x-k8s.io", "v1beta2", kube_namespace, "machines"))["items"] == [], "deleted, once"
    final = KubeLedgerStore(kube, namespace=kube_namespace, run_id="wf-race").load()
    assert final is not None and len(final.phase("control-plane").remediations) == 1  # type: ignore[union-attr]
