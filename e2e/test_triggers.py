"""Issue 6 scenario 14: how Workflows start and queue — the per-cluster mutex and the Argo Events Sensor.

* The mutex test runs on every backend: the local executor implements ``synchronization.mutexes`` with real
  locks, kind runs Argo's own controller. Two submissions for one cluster (one that does not exist, so each run
  is short and touches nothing) must not overlap, pod for pod, the exit handler included.
* The Sensor test needs Argo Events (EventSource and Sensor controllers, an EventBus): kind only; its setup calls
  ``KindBackend.install_argo_events()`` (the pinned ``ARGO_EVENTS_VERSION``). It applies the GitOps overlay
  ``overlay/management/capi-rollout`` and changes a labelled TalosControlPlane: a spec change creates a Workflow
  for its cluster, a status-only change does not.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, cast

import pytest

from e2e.argo_local import WorkflowRun
from e2e.argo_local.model import POD
from e2e.backends import Backend
from e2e.harness import LEDGER_CRD_PATH, RBAC_PATH, SCALED_PARAMETERS, TEMPLATE_PATH

pytestmark = pytest.mark.e2e

EVENTS_OVERLAY = TEMPLATE_PATH.parent.parent / "capi-rollout"
ARGO_EVENTS_ONLY_ON_KIND = ("the Sensor needs Argo Events (EventSource/Sensor controllers and an EventBus), which only "
                            "the kind backend can run; the {backend} backend has no event machinery")


@pytest.fixture
def template_backend(request: pytest.FixtureRequest, e2e_backend_name: str) -> Backend:
    """The selected backend with the runner RBAC and the rendered WorkflowTemplate installed."""
    if e2e_backend_name == "local":
        return cast(Backend, request.getfixturevalue("stage").backend)
    backend = cast(Backend, request.getfixturevalue("e2e_backend"))
    backend.install([LEDGER_CRD_PATH, RBAC_PATH, TEMPLATE_PATH])
    return backend


def _span(run: WorkflowRun) -> tuple[float, float]:
    pods = [n for n in run.nodes.values() if n.type == POD]
    assert pods and all(p.started is not None and p.finished is not None for p in pods), run.text()
    return min(cast(float, p.started) for p in pods), max(cast(float, p.finished) for p in pods)


def test_14_two_submissions_for_one_cluster_never_overlap(template_backend: Backend, e2e_backend_name: str) -> None:
    params = {"clusterName": f"mutex-{uuid.uuid4().hex[:6]}", "clusterNamespace": "default", **SCALED_PARAMETERS}
    first = template_backend.submit(params)
    second = template_backend.submit(params)
    first = template_backend.wait(first, 300)
    second = template_backend.wait(second, 300)

    for run in (first, second):
        assert run.phase == "Failed" and run.attempts("resolve"), run.text()
        assert run.attempts("summary"), "the exit handler runs inside the mutex too"
    (a_start, a_end), (b_start, b_end) = sorted([_span(first), _span(second)])
    assert a_end <= b_start, f"the runs overlapped: [{a_start}, {a_end}] and [{b_start}, {b_end}]"
    if e2e_backend_name == "local":
        assert any("waiting for argo/Mutex/capi-rollout-default-" in e for r in (first, second) for e in r.events)


# ----------------------------------------------------------------------------------------------- Sensor (kind)


def _workflows(api: Any, cluster: str) -> list[dict[str, Any]]:
    from kubernetes import client

    found: Any = client.CustomObjectsApi(api).list_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "argo", "workflows", label_selector="app.kubernetes.io/name=capi-rollout")
    return [w for w in found["items"]
            if {p["name"]: p.get("value") for p in w["spec"]["arguments"]["parameters"]}.get("clusterName") == cluster]


def _await(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        time.sleep(0.5)  # polling a remote controller's effect, bounded by the deadline


def test_14_a_spec_change_of_the_control_plane_starts_a_workflow_and_a_status_change_does_not(
        request: pytest.FixtureRequest, e2e_backend_name: str) -> None:
    if e2e_backend_name != "kind":
        pytest.skip(ARGO_EVENTS_ONLY_ON_KIND.format(backend=e2e_backend_name))
    from kubernetes import client

    from sim.envtest import assets
    from sim.objects import TCP_GROUP, TCP_VERSION, talos_control_plane

    backend = request.getfixturevalue("e2e_backend")
    api = backend.api
    backend.install_argo_events()  # controller, EventBus `default`, the capi-rollout overlay (once per cluster)
    crds: list[Any] = client.ApiextensionsV1Api(api).list_custom_resource_definition().items
    names = {c.metadata.name for c in crds}
    if not {"eventsources.argoproj.io", "sensors.argoproj.io", "eventbus.argoproj.io"} <= names:
        pytest.fail("Argo Events CRDs are missing after KindBackend.install_argo_events() (which installs the "
                    "controller from the pinned argo-events module zip and the EventBus `default` in argo-events)",
                    pytrace=False)
    backend.apply([d for p in assets.crd_paths("v1.14", ("talos",)) for d in _documents(p)])
    backend.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in ("argo", "argo-events")])
    backend.apply(_documents(LEDGER_CRD_PATH) + _documents(RBAC_PATH) + _documents(TEMPLATE_PATH))
    backend.apply([d for p in sorted(EVENTS_OVERLAY.glob("*.yaml")) if p.name != "kustomization.yaml"
                   for d in _documents(p)])
    namespace, cluster = f"sensor-{uuid.uuid4().hex[:6]}", f"c{uuid.uuid4().hex[:6]}"
    backend.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}])
    custom = client.CustomObjectsApi(api)
    tcp = talos_control_plane(name=f"{cluster}-cp", namespace=namespace, cluster_name=cluster, replicas=3,
                              version="v1.33.0", max_surge=0, talos_version="v1.12.0")
    custom.create_namespaced_custom_object(TCP_GROUP, TCP_VERSION, namespace, "taloscontrolplanes", tcp)
    _await(lambda: _sensor_ready(api), 300, "the EventSource and Sensor pods are ready")

    def spec_change(version: str) -> None:
        custom.patch_namespaced_custom_object(TCP_GROUP, TCP_VERSION, namespace, "taloscontrolplanes",
                                              f"{cluster}-cp", {"spec": {"version": version}})

    spec_change("v1.33.1")
    (wf,) = _await(lambda: _workflows(api, cluster), 120, "a Workflow for the spec change")
    params = {p["name"]: p.get("value") for p in wf["spec"]["arguments"]["parameters"]}
    assert params == {"clusterName": cluster, "clusterNamespace": namespace}
    assert wf["spec"]["workflowTemplateRef"]["name"] == "capi-rollout"

    # A status-only write, then another spec change: events arrive in order, so once the second spec change's
    # Workflow exists, a Workflow for the status write would exist too.
    custom.patch_namespaced_custom_object_status(TCP_GROUP, TCP_VERSION, namespace, "taloscontrolplanes",
                                                 f"{cluster}-cp", {"status": {"readyReplicas": 2}})
    spec_change("v1.33.2")
    _await(lambda: len(_workflows(api, cluster)) >= 2, 120, "a Workflow for the second spec change")
    assert len(_workflows(api, cluster)) == 2, "the status-only update started a Workflow"


def _sensor_ready(api: Any) -> bool:
    from kubernetes import client

    pods: list[Any] = client.CoreV1Api(api).list_namespaced_pod("argo-events").items
    running = [p for p in pods if p.status and p.status.phase == "Running"]
    sources = {(p.metadata.labels or {}).get("eventsource-name") for p in running}
    sensors = {(p.metadata.labels or {}).get("sensor-name") for p in running}
    return "capi-rollout" in sources and "capi-rollout" in sensors


def _documents(path: Any) -> list[dict[str, Any]]:
    from e2e.backends import load_manifests

    return load_manifests([path])
