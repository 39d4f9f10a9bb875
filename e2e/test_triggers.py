"""Issue 6 scenario 14: how Workflows start and queue — the per-cluster mutex and the Argo Events Sensor.

* The mutex test runs on every backend: the local executor implements ``synchronization.mutexes`` with real
  locks, kind runs Argo's own controller. Two submissions for one cluster (one that does not exist, so each run
  is short and touches nothing) must not overlap, pod for pod, the exit handler included.
* The Sensor tests need Argo Events (the controller, an EventBus, EventSource and Sensor pods): the node and kind
  backends, through ``install_argo_events()`` (the pinned ``ARGO_EVENTS_VERSION`` from its module's manifests, the
  JetStream EventBus ``default``, then ``overlay/management/capi-rollout`` unchanged). Every change is made through
  the API server as a user (or GitOps) would; what is asserted is what the cluster did: the Workflows created
  (counted by cluster, with their parameters), the rollouts that followed (simulated clusters, the real engine).
  The WorkflowTemplate's defaults are the scaled timings for this module (the Sensor passes only clusterName and
  clusterNamespace); the shipped template is installed again afterwards.
  A Workflow's creation and its first step running are timed from the change's commit (a watch on Workflows);
  the numbers go to ``results/e2e/trigger-latency.json`` and the README's trigger section.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from capi_rollout.waiting import wait_until
from e2e.argo_local import WorkflowRun
from e2e.argo_local.model import POD
from e2e.backends.base import Backend
from e2e.harness import LEDGER_CRD_PATH, RBAC_PATH, SCALED_PARAMETERS, TEMPLATE_PATH, Stage, scaled
from e2e.triggers import (
    ARGO,
    ARGO_EVENTS,
    EVENTS_BACKENDS,
    MD,
    NO_ARGO_EVENTS,
    POLL_SECONDS,
    SENSOR_SA,
    TCP,
    Events,
    documents,
    events_running,
    md_template_change,
    new_bare,
    sensor_ready,
    sentinel,
    tcp_bump,
    warm_up,
)

pytestmark = pytest.mark.e2e

EVENTS_OVERLAY = TEMPLATE_PATH.parent.parent / "capi-rollout"


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


# ----------------------------------------------------------------------------------------------- Sensor (node, kind)


@pytest.fixture(scope="module")
def events(request: pytest.FixtureRequest, e2e_backend_name: str, e2e_results_dir: Path) -> Iterator[Events]:
    if e2e_backend_name not in EVENTS_BACKENDS:
        pytest.skip(NO_ARGO_EVENTS.format(backend=e2e_backend_name))
    with events_running(cast(Stage, request.getfixturevalue("stage")), e2e_results_dir / "e2e") as running:
        yield running


# --- the scenarios ------------------------------------------------------------------------------------------


def test_14_the_sensor_may_create_workflows_and_nothing_else_the_runner_may_do(events: Events) -> None:
    from kubernetes import client

    def allowed(verb: str, group: str, resource: str, namespace: str) -> bool:
        review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
            user=SENSOR_SA, groups=["system:serviceaccounts", f"system:serviceaccounts:{ARGO_EVENTS}",
                                    "system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(verb=verb, group=group, resource=resource,
                                                            namespace=namespace)))
        answer: Any = client.AuthorizationV1Api(events.api).create_subject_access_review(review)
        return bool(answer.status.allowed)

    runner_rules = [(group, resource, verb) for doc in documents(RBAC_PATH) if doc["kind"] in ("Role", "ClusterRole")
                    for rule in doc.get("rules", []) for group in rule.get("apiGroups", [])
                    for resource in rule.get("resources", []) for verb in rule.get("verbs", [])]
    assert len(runner_rules) >= 10, runner_rules
    granted = {(g, r, v, ns) for g, r, v in runner_rules for ns in (ARGO, "default")
               if allowed(v, g, r, ns)}
    assert granted == set(), f"the Sensor's ServiceAccount may do what the runner does: {sorted(granted)}"
    assert allowed("create", "argoproj.io", "workflows", ARGO)
    for verb in ("get", "list", "update", "patch", "delete"):
        assert not allowed(verb, "argoproj.io", "workflows", ARGO), verb
    for group, resource in (("argoproj.io", "workflowtemplates"), ("argoproj.io", "cronworkflows"), ("", "pods"),
                            ("", "secrets")):
        assert not allowed("create", group, resource, ARGO), resource
    assert not allowed("create", "argoproj.io", "workflows", "default"), "only in argo"


def test_14_status_writes_scaling_and_deletion_create_no_workflow_and_a_spec_change_of_the_same_objects_does(
        events: Events) -> None:
    bare = new_bare(events, "quiet")
    # Writes that must start nothing: status only (both kinds), a scale of the MachineDeployment.
    events.patch(TCP, bare.namespace, bare.tcp, {"status": {"readyReplicas": 2, "version": "v1.33.0"}}, status=True)
    events.patch(MD, bare.namespace, bare.md, {"status": {"readyReplicas": 1, "replicas": 2}}, status=True)
    events.patch(MD, bare.namespace, bare.md, {"spec": {"replicas": 3}})
    # Then a spec change of the very same objects: one Workflow each, so the writes before them made none
    # (each informer delivers one object's updates in order).
    bare.bump(events, TCP, "v1.33.1")
    bare.bump(events, MD, "v1.33.1")
    found = events.workflows(bare.namespace, bare.cluster, 2, "a Workflow for each spec change")
    assert sorted(s.trigger for s in found) == ["machinedeployment", "taloscontrolplane"], found
    assert all(s.parameters == {"clusterName": bare.cluster, "clusterNamespace": bare.namespace} for s in found)
    events.delete_workflows(found)

    # Deleting the cluster's objects: with a finalizer the delete is an UPDATE (deletionTimestamp, a new
    # generation), then the finalizer's removal another UPDATE, then the DELETE itself.
    custom = events.custom()
    for kind, name in ((TCP, bare.tcp), (MD, bare.md)):
        custom.delete_namespaced_custom_object(*kind[:2], bare.namespace, kind[2], name)
    for kind, name in ((TCP, bare.tcp), (MD, bare.md)):
        events.patch(kind, bare.namespace, name, {"metadata": {"finalizers": None}})
    sentinel(events, "v1.33.9")
    assert len(events.watch.for_cluster(bare.namespace, bare.cluster)) == 2, \
        "a status write, a scale or a deletion started a Workflow"


def _rollout(events: Events, trigger: str) -> None:
    """A simulated cluster, one spec change through the API server, exactly one Workflow that rolls it out."""
    scenario = scaled("happy", trigger=trigger)
    sim = events.stage.start_simulator(scenario)
    try:
        if trigger == "tcp-version":
            committed = events.patch(TCP, scenario.namespace, f"{scenario.cluster}-cp", tcp_bump(scenario))
        else:
            (deployment,) = scenario.deployments
            committed = events.patch(MD, scenario.namespace, f"{scenario.cluster}-{deployment.name}",
                                     md_template_change(scenario, deployment.name))
        (seen,) = events.workflows(scenario.namespace, scenario.cluster, 1, f"a Workflow for the {trigger} change")
        assert seen.parameters == {"clusterName": scenario.cluster, "clusterNamespace": scenario.namespace}
        assert seen.trigger == {"tcp-version": "taloscontrolplane", "md-template": "machinedeployment"}[trigger]
        events.record_latency(trigger, committed, seen)
        run = events.run(seen)
        assert run.phase == "Succeeded", run.text()
        assert run.attempts("control-plane") and run.attempts("workers"), run.text()
        # The rollout's own writes (Machines replaced, statuses, the MachineSet scaled) started nothing more.
        sentinel(events, f"v1.33.{7 if trigger == 'tcp-version' else 8}")
        assert [s.name for s in events.watch.for_cluster(scenario.namespace, scenario.cluster)] == [seen.name]
    finally:
        sim.stop()


def test_14_a_control_plane_version_bump_starts_one_workflow_that_rolls_the_cluster_out(events: Events) -> None:
    _rollout(events, "tcp-version")


def test_14_a_machinedeployment_template_change_starts_one_workflow_that_rolls_the_cluster_out(
        events: Events) -> None:
    _rollout(events, "md-template")


def _phase_span(run: WorkflowRun, *steps: str) -> tuple[float, float]:
    pods = [n for step in steps for n in run.attempts(step)]
    assert pods and all(p.started is not None and p.finished is not None for p in pods), run.text()
    return min(cast(float, p.started) for p in pods), max(cast(float, p.finished) for p in pods)


def test_14_two_spec_changes_a_second_apart_start_two_workflows_that_roll_out_one_after_the_other(
        events: Events) -> None:
    scenario = scaled("happy", trigger="both")
    (deployment,) = scenario.deployments
    sim = events.stage.start_simulator(scenario)
    try:
        events.patch(TCP, scenario.namespace, f"{scenario.cluster}-cp", tcp_bump(scenario))
        time.sleep(1.0)  # the scenario: the second commit a second after the first
        events.patch(MD, scenario.namespace, f"{scenario.cluster}-{deployment.name}",
                     md_template_change(scenario, deployment.name))
        seen = events.workflows(scenario.namespace, scenario.cluster, 2, "a Workflow for each change")
        runs = [events.run(s) for s in seen]
        assert [r.phase for r in runs] == ["Succeeded", "Succeeded"], "\n".join(r.text() for r in runs)
        first, second = sorted(runs, key=lambda r: _phase_span(r, "preflight")[0])
        # One rollout at a time: the second's preflight starts after the first's last phase ended (Argo's
        # per-cluster mutex, or the runner's own per-cluster guard, holds the second back).
        first_end = _phase_span(first, "preflight", "control-plane", "workers")[1]
        second_start = _phase_span(second, "preflight")[0]
        assert first_end <= second_start, (f"the rollouts acted at the same time: {first.name} until {first_end}, "
                                           f"{second.name} from {second_start}")
        assert len(events.watch.for_cluster(scenario.namespace, scenario.cluster)) == 2
    finally:
        sim.stop()


def test_14_a_change_made_while_the_eventsource_pod_is_down_is_never_seen(events: Events) -> None:
    """docs/workflow.md: a spec change made while the EventSource is down is never seen (submit it by hand). The
    pod is deleted with the node cordoned, so its replacement cannot start before the change is committed."""
    from kubernetes import client

    core = client.CoreV1Api(events.api)
    bare = new_bare(events, "outage")
    nodes: list[Any] = core.list_node().items
    pods: list[Any] = core.list_namespaced_pod(ARGO_EVENTS, label_selector="eventsource-name=capi-rollout").items
    (node,) = [n.metadata.name for n in nodes]
    (pod,) = [p.metadata.name for p in pods if not p.metadata.deletion_timestamp]
    core.patch_node(node, {"spec": {"unschedulable": True}})
    try:
        core.delete_namespaced_pod(pod, ARGO_EVENTS)

        def gone() -> bool:
            left: list[Any] = core.list_namespaced_pod(ARGO_EVENTS).items
            return pod not in {p.metadata.name for p in left}  # a graceful delete ends once its containers stopped

        wait_until(gone, timeout=120, interval=POLL_SECONDS, what=f"the EventSource pod {pod} gone")
        bare.bump(events, TCP, "v1.33.1")  # the change made while no EventSource runs
        bare.bump(events, MD, "v1.33.1")
    finally:
        core.patch_node(node, {"spec": {"unschedulable": False}})
    wait_until(lambda: sensor_ready(events.api), timeout=180, interval=POLL_SECONDS,
               what="the EventSource pod back and ready")
    # Changes of fresh objects until both kinds start a Workflow: the new informers have listed (which is when a
    # change made meanwhile could have surfaced: their initial list arrives as UPDATEs with equal old and new
    # objects, which the EventSource drops) and deliver again.
    warm_up(events)
    assert events.watch.for_cluster(bare.namespace, bare.cluster) == [], \
        "the change made during the outage started a Workflow: docs/workflow.md says it is never seen"
    # The objects themselves are watched again: their next change starts a Workflow each.
    bare.bump(events, TCP, "v1.33.2")
    bare.bump(events, MD, "v1.33.2")
    events.delete_workflows(events.workflows(bare.namespace, bare.cluster, 2, "a Workflow for each later change"))
