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

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from e2e.argo_local import WorkflowRun
from e2e.argo_local.model import POD
from e2e.backends.base import Backend
from e2e.harness import LEDGER_CRD_PATH, RBAC_PATH, SCALED_PARAMETERS, TEMPLATE_PATH, Stage, scaled
from sim.scenario import Scenario

pytestmark = pytest.mark.e2e

EVENTS_OVERLAY = TEMPLATE_PATH.parent.parent / "capi-rollout"
EVENTS_BACKENDS = ("node", "kind")
NO_ARGO_EVENTS = ("the Sensor needs Argo Events (its controller, an EventBus, EventSource and Sensor pods), which "
                  "the node and kind backends run; the {backend} backend has no event machinery")


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

ARGO, ARGO_EVENTS = "argo", "argo-events"
WORKFLOW_LABEL = "app.kubernetes.io/name=capi-rollout"
TCP = ("controlplane.cluster.x-k8s.io", "v1alpha3", "taloscontrolplanes")
MD = ("cluster.x-k8s.io", "v1beta2", "machinedeployments")
SENSOR_SA = f"system:serviceaccount:{ARGO_EVENTS}:capi-rollout-sensor"
PIPELINE_TIMEOUT = 120.0  # change -> Workflow, on 2 shared cores; measured in seconds (see the README)
ROLLOUT_TIMEOUT = 300.0


@dataclass
class Seen:
    """One Workflow the Sensor created, as the watch saw it (wall clock of this process)."""

    name: str
    parameters: dict[str, str]
    trigger: str
    created: float  # the watch's ADDED
    first_step_running: float | None = None  # the first Pod node Argo reports Running (or past it)


class WorkflowWatch:
    """Every capi-rollout Workflow in ``argo``: when it appeared and when its first step ran (a watch thread)."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.seen: dict[str, Seen] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="workflow-watch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from kubernetes import client, watch

        custom = client.CustomObjectsApi(self.api)
        version: str | None = None
        while not self.stopping.is_set():
            try:
                stream = watch.Watch().stream(custom.list_namespaced_custom_object, "argoproj.io", "v1alpha1", ARGO,
                                              "workflows", label_selector=WORKFLOW_LABEL, timeout_seconds=5,
                                              resource_version=version, allow_watch_bookmarks=False)
                for event in stream:
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._note(obj, time.time())
                    if self.stopping.is_set():
                        break
            except Exception:  # a 410 Gone or a dropped connection: list again
                version = None
                self.stopping.wait(0.2)

    def _note(self, obj: Mapping[str, Any], now: float) -> None:
        meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        with self.lock:
            seen = self.seen.get(meta["name"])
            if seen is None:
                params = {p["name"]: p.get("value") for p in spec.get("arguments", {}).get("parameters", [])}
                seen = self.seen[meta["name"]] = Seen(meta["name"], params,
                                                      (meta.get("labels") or {}).get("capi-rollout/trigger", ""), now)
            if seen.first_step_running is None and any(
                    n.get("type") == POD and n.get("phase") in ("Running", "Succeeded", "Failed", "Error")
                    for n in (status.get("nodes") or {}).values()):
                seen.first_step_running = now

    def for_cluster(self, namespace: str, cluster: str) -> list[Seen]:
        with self.lock:
            return sorted((s for s in self.seen.values() if s.parameters.get("clusterNamespace") == namespace
                           and s.parameters.get("clusterName") == cluster), key=lambda s: s.created)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)


@dataclass
class Events:
    """Argo Events running with the overlay applied, on the stage's cluster."""

    stage: Stage
    watch: WorkflowWatch
    results: Path
    latencies: list[dict[str, Any]] = field(default_factory=list)

    @property
    def api(self) -> Any:
        return self.stage.api

    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    def patch(self, kind: tuple[str, str, str], namespace: str, name: str, body: Mapping[str, Any], *,
              status: bool = False) -> float:
        """A merge patch through the API server; returns the wall time it was committed by (its answer)."""
        patch = self.custom().patch_namespaced_custom_object_status if status \
            else self.custom().patch_namespaced_custom_object
        patch(*kind[:2], namespace, kind[2], name, body)
        return time.time()

    def workflows(self, namespace: str, cluster: str, count: int, what: str,
                  timeout: float = PIPELINE_TIMEOUT) -> list[Seen]:
        return cast(list[Seen], _await(lambda: (lambda found: found if len(found) >= count else None)(
            self.watch.for_cluster(namespace, cluster)), timeout, what))

    def run(self, seen: Seen, timeout: float = ROLLOUT_TIMEOUT) -> WorkflowRun:
        """Wait for the Workflow to complete (the stage's backend: progress lines, logs under results/)."""
        return self.stage.backend.wait(WorkflowRun(name=seen.name, namespace=ARGO, uid=""), timeout)

    def delete_workflows(self, seen: list[Seen]) -> None:
        """Throw away Workflows started only to be counted (their pods go with them)."""
        from kubernetes.client.exceptions import ApiException

        for s in seen:
            with contextlib.suppress(ApiException):
                self.custom().delete_namespaced_custom_object("argoproj.io", "v1alpha1", ARGO, "workflows", s.name)

    def record_latency(self, what: str, committed: float, seen: Seen) -> dict[str, Any]:
        running = _await(lambda: seen.first_step_running, PIPELINE_TIMEOUT, f"the first step of {seen.name} running")
        entry = {"change": what, "workflow_created_s": round(seen.created - committed, 2),
                 "first_step_running_s": round(cast(float, running) - committed, 2)}
        self.latencies.append(entry)
        print(f"[trigger latency] {what}: Workflow created {entry['workflow_created_s']} s and its first step "
              f"running {entry['first_step_running_s']} s after the change was committed", flush=True)
        return entry


def _scaled_template() -> dict[str, Any]:
    """The rendered WorkflowTemplate with the scaled timings as its defaults (the Sensor sets no others)."""
    (template,) = [d for d in _documents(TEMPLATE_PATH) if d.get("kind") == "WorkflowTemplate"]
    for parameter in template["spec"]["arguments"]["parameters"]:
        if parameter["name"] in SCALED_PARAMETERS:
            parameter["value"] = SCALED_PARAMETERS[parameter["name"]]
    return template


@pytest.fixture(scope="module")
def events(request: pytest.FixtureRequest, e2e_backend_name: str, e2e_results_dir: Path) -> Iterator[Events]:
    if e2e_backend_name not in EVENTS_BACKENDS:
        pytest.skip(NO_ARGO_EVENTS.format(backend=e2e_backend_name))
    stage = cast(Stage, request.getfixturevalue("stage"))
    backend: Any = stage.backend
    started = time.monotonic()
    backend.prepare_simulation("v1.14")  # the CAPI and Talos CRDs the EventSource watches exist first
    backend.install_argo_events()  # controller, EventBus `default`, then overlay/management/capi-rollout as is
    backend.install([_scaled_template()])
    watch = WorkflowWatch(stage.api)
    events = Events(stage, watch, e2e_results_dir / "e2e")
    try:
        _await(lambda: _sensor_ready(stage.api), 300, "the EventSource and Sensor pods are ready")
        _warm_up(events)
        print(f"[trigger] Argo Events installed and ready in {time.monotonic() - started:.0f}s", flush=True)
        yield events
    finally:
        watch.stop()
        backend.install([TEMPLATE_PATH])
        events.results.mkdir(parents=True, exist_ok=True)
        (events.results / "trigger-latency.json").write_text(json.dumps(events.latencies, indent=2) + "\n")
        _save_logs(stage.api, events.results / "argo-events")


def _save_logs(api: Any, directory: Path) -> None:
    """Every container log of the event machinery (argo-events, the cluster DNS) and the pods' states, so a
    failed trigger is readable after the node is gone."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api)
    directory.mkdir(parents=True, exist_ok=True)
    states = []
    for namespace in (ARGO_EVENTS, "kube-system"):
        pods: list[Any] = core.list_namespaced_pod(namespace).items
        for pod in pods:
            states.append(f"{namespace}/{pod.metadata.name}: {pod.status.phase} "
                          + " ".join(f"{c.name} ready={c.ready} restarts={c.restart_count}"
                                     for c in pod.status.container_statuses or []))
            for container in pod.spec.containers:
                with contextlib.suppress(ApiException):
                    text = core.read_namespaced_pod_log(pod.metadata.name, namespace, container=container.name,
                                                        tail_lines=400)
                    (directory / f"{pod.metadata.name}.{container.name}.log").write_text(text)
    (directory / "pods.txt").write_text("\n".join(states) + "\n")


def _sensor_ready(api: Any) -> bool:
    from kubernetes import client

    pods: list[Any] = client.CoreV1Api(api).list_namespaced_pod(ARGO_EVENTS).items
    ready = [p for p in pods if p.status and p.status.phase == "Running" and not p.metadata.deletion_timestamp
             and all(c.ready for c in p.status.container_statuses or [])]
    sources = {(p.metadata.labels or {}).get("eventsource-name") for p in ready}
    sensors = {(p.metadata.labels or {}).get("sensor-name") for p in ready}
    return "capi-rollout" in sources and "capi-rollout" in sensors


def _await(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        time.sleep(0.2)  # polling a remote controller's effect, bounded by the deadline


def _documents(path: Any) -> list[dict[str, Any]]:
    from e2e.backends.base import load_manifests

    return load_manifests([path])


# --- objects the tests change -------------------------------------------------------------------------------


def _tcp_bump(scenario: Scenario) -> dict[str, Any]:
    """A Kubernetes version bump of the control plane (what a GitOps commit changes)."""
    return {"spec": {"version": scenario.target_kubernetes_version}}


def _md_template_change(scenario: Scenario, deployment: str) -> dict[str, Any]:
    """A worker template change as the simulator's own trigger makes it: new version, new infrastructure template."""
    from sim.objects import infra_template_name

    return {"spec": {"template": {"spec": {
        "version": scenario.target_kubernetes_version,
        "infrastructureRef": {"name": infra_template_name(scenario.cluster, deployment, 2)}}}}}


@dataclass
class Bare:
    """A labelled TalosControlPlane and MachineDeployment with no simulator (no Machines): objects to change."""

    namespace: str
    cluster: str
    finalizer: str = "e2e.capi-rollout.io/hold"

    @property
    def tcp(self) -> str:
        return f"{self.cluster}-cp"

    @property
    def md(self) -> str:
        return f"{self.cluster}-workers"

    def create(self, events: Events) -> Bare:
        from sim.objects import machine_deployment, machine_template, talos_control_plane

        events.stage.venue.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}])
        tcp = talos_control_plane(name=self.tcp, namespace=self.namespace, cluster_name=self.cluster, replicas=3,
                                  version="v1.33.0", max_surge=0, talos_version="v1.12.0")
        md = machine_deployment("v1.14", name="workers", namespace=self.namespace, cluster_name=self.cluster,
                                replicas=2, max_surge=0, max_unavailable=1, strategy="RollingUpdate",
                                template=machine_template("v1.14", cluster_name=self.cluster, namespace=self.namespace,
                                                          version="v1.33.0", infra_template=f"{self.cluster}-workers-1",
                                                          bootstrap_template=f"{self.cluster}-workers"))
        md["metadata"]["name"] = self.md
        for obj, kind in ((tcp, TCP), (md, MD)):
            obj["metadata"]["finalizers"] = [self.finalizer]
            events.custom().create_namespaced_custom_object(*kind[:2], self.namespace, kind[2], obj)
        return self

    def bump(self, events: Events, kind: tuple[str, str, str], version: str) -> float:
        if kind == TCP:
            return events.patch(TCP, self.namespace, self.tcp, {"spec": {"version": version}})
        return events.patch(MD, self.namespace, self.md, {"spec": {"template": {"spec": {"version": version}}}})


def _bare(events: Events, prefix: str) -> Bare:
    return Bare(f"{prefix}-{uuid.uuid4().hex[:6]}", f"c{uuid.uuid4().hex[:6]}").create(events)


def _sentinel(events: Events, version: str) -> None:
    """A spec change of both kinds on fresh objects, and their two Workflows awaited: every event the EventSource
    had before it (for any object of those kinds) has reached the Sensor by then (one informer per kind, one
    ordered stream through the EventBus)."""
    bare = _bare(events, "sentinel")
    bare.bump(events, TCP, version)
    bare.bump(events, MD, version)
    events.delete_workflows(events.workflows(bare.namespace, bare.cluster, 2, "the sentinel's two Workflows"))


def _warm_up(events: Events, timeout: float = 180.0) -> None:
    """Until both informers and the Sensor's subscriptions are live, a change is lost without a trace (a pod is
    Running before its informer has listed): change one object of each kind until its Workflow appears."""
    bare = _bare(events, "warm-up")
    for kind, trigger in ((TCP, "taloscontrolplane"), (MD, "machinedeployment")):
        def started(trigger: str = trigger) -> bool:
            return any(s.trigger == trigger for s in events.watch.for_cluster(bare.namespace, bare.cluster))

        deadline, patch = time.monotonic() + timeout, 0
        while not started():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no Workflow for a {kind[2]} change within {timeout:g}s: see "
                                   f"{events.results / 'argo-events'}")
            patch += 1
            bare.bump(events, kind, f"v1.34.{patch}")
            _await_quietly(started, 5.0)
    events.delete_workflows(events.watch.for_cluster(bare.namespace, bare.cluster))


def _await_quietly(predicate: Any, timeout: float) -> bool:
    try:
        return bool(_await(predicate, timeout, ""))
    except TimeoutError:
        return False


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

    runner_rules = [(group, resource, verb) for doc in _documents(RBAC_PATH) if doc["kind"] in ("Role", "ClusterRole")
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
    bare = _bare(events, "quiet")
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
    _sentinel(events, "v1.33.9")
    assert len(events.watch.for_cluster(bare.namespace, bare.cluster)) == 2, \
        "a status write, a scale or a deletion started a Workflow"


def _rollout(events: Events, trigger: str) -> None:
    """A simulated cluster, one spec change through the API server, exactly one Workflow that rolls it out."""
    scenario = scaled("happy", trigger=trigger)
    sim = events.stage.start_simulator(scenario)
    try:
        if trigger == "tcp-version":
            committed = events.patch(TCP, scenario.namespace, f"{scenario.cluster}-cp", _tcp_bump(scenario))
        else:
            (deployment,) = scenario.deployments
            committed = events.patch(MD, scenario.namespace, f"{scenario.cluster}-{deployment.name}",
                                     _md_template_change(scenario, deployment.name))
        (seen,) = events.workflows(scenario.namespace, scenario.cluster, 1, f"a Workflow for the {trigger} change")
        assert seen.parameters == {"clusterName": scenario.cluster, "clusterNamespace": scenario.namespace}
        assert seen.trigger == {"tcp-version": "taloscontrolplane", "md-template": "machinedeployment"}[trigger]
        events.record_latency(trigger, committed, seen)
        run = events.run(seen)
        assert run.phase == "Succeeded", run.text()
        assert run.attempts("control-plane") and run.attempts("workers"), run.text()
        # The rollout's own writes (Machines replaced, statuses, the MachineSet scaled) started nothing more.
        _sentinel(events, f"v1.33.{7 if trigger == 'tcp-version' else 8}")
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
        events.patch(TCP, scenario.namespace, f"{scenario.cluster}-cp", _tcp_bump(scenario))
        time.sleep(1.0)  # the scenario: the second commit a second after the first
        events.patch(MD, scenario.namespace, f"{scenario.cluster}-{deployment.name}",
                     _md_template_change(scenario, deployment.name))
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
    bare = _bare(events, "outage")
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

        _await(gone, 120, f"the EventSource pod {pod} gone")
        bare.bump(events, TCP, "v1.33.1")  # the change made while no EventSource runs
        bare.bump(events, MD, "v1.33.1")
    finally:
        core.patch_node(node, {"spec": {"unschedulable": False}})
    _await(lambda: _sensor_ready(events.api), 180, "the EventSource pod back and ready")
    # Changes of fresh objects until both kinds start a Workflow: the new informers have listed (which is when a
    # change made meanwhile could have surfaced: their initial list arrives as UPDATEs with equal old and new
    # objects, which the EventSource drops) and deliver again.
    _warm_up(events)
    assert events.watch.for_cluster(bare.namespace, bare.cluster) == [], \
        "the change made during the outage started a Workflow: docs/workflow.md says it is never seen"
    # The objects themselves are watched again: their next change starts a Workflow each.
    bare.bump(events, TCP, "v1.33.2")
    bare.bump(events, MD, "v1.33.2")
    events.delete_workflows(events.workflows(bare.namespace, bare.cluster, 2, "a Workflow for each later change"))
