"""The machinery of the trigger scenarios (``e2e/test_triggers.py``): Argo Events running, the Workflows it
creates watched, and the CAPI objects the scenarios change.

Contract: :func:`events_running` installs Argo Events on a node or kind stage (:data:`EVENTS_BACKENDS`) with
``overlay/management/capi-rollout`` and yields an :class:`Events`: changes go through the API server as a user (or
GitOps) makes them (:meth:`Events.patch` returns when the change was committed), a :class:`WorkflowWatch` records
every capi-rollout Workflow in ``argo`` with when it appeared and when its first step ran (:class:`Seen`), and
:meth:`Events.workflows` / :meth:`Events.run` wait for them. :class:`Bare` is a labelled TalosControlPlane and
MachineDeployment with no simulator (objects to change); :func:`sentinel` and :func:`warm_up` are the two ways
to know the event path has delivered everything before (see each). Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capi_rollout.waiting import wait_until
from e2e.argo_local import WorkflowRun
from e2e.argo_local.model import POD
from e2e.harness import SCALED_PARAMETERS, TEMPLATE_PATH, Stage
from sim.scenario import Scenario

EVENTS_BACKENDS = ("node", "kind")
NO_ARGO_EVENTS = ("the Sensor needs Argo Events (its controller, an EventBus, EventSource and Sensor pods), which "
                  "the node and kind backends run; the {backend} backend has no event machinery")

ARGO, ARGO_EVENTS = "argo", "argo-events"
WORKFLOW_LABEL = "app.kubernetes.io/name=capi-rollout"
TCP = ("controlplane.cluster.x-k8s.io", "v1alpha3", "taloscontrolplanes")
MD = ("cluster.x-k8s.io", "v1beta2", "machinedeployments")
SENSOR_SA = f"system:serviceaccount:{ARGO_EVENTS}:capi-rollout-sensor"
POLL_SECONDS = 0.2  # polling a remote controller's effect
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
        return wait_until(lambda: (lambda found: found if len(found) >= count else None)(
            self.watch.for_cluster(namespace, cluster)), timeout=timeout, interval=POLL_SECONDS, what=what)

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
        running = wait_until(lambda: seen.first_step_running, timeout=PIPELINE_TIMEOUT, interval=POLL_SECONDS,
                             what=f"the first step of {seen.name} running")
        entry = {"change": what, "workflow_created_s": round(seen.created - committed, 2),
                 "first_step_running_s": round(running - committed, 2)}
        self.latencies.append(entry)
        print(f"[trigger latency] {what}: Workflow created {entry['workflow_created_s']} s and its first step "
              f"running {entry['first_step_running_s']} s after the change was committed", flush=True)
        return entry


def scaled_template() -> dict[str, Any]:
    """The rendered WorkflowTemplate with the scaled timings as its defaults (the Sensor sets no others)."""
    (template,) = [d for d in documents(TEMPLATE_PATH) if d.get("kind") == "WorkflowTemplate"]
    for parameter in template["spec"]["arguments"]["parameters"]:
        if parameter["name"] in SCALED_PARAMETERS:
            parameter["value"] = SCALED_PARAMETERS[parameter["name"]]
    return template


def save_logs(api: Any, directory: Path) -> None:
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


def sensor_ready(api: Any) -> bool:
    from kubernetes import client

    pods: list[Any] = client.CoreV1Api(api).list_namespaced_pod(ARGO_EVENTS).items
    ready = [p for p in pods if p.status and p.status.phase == "Running" and not p.metadata.deletion_timestamp
             and all(c.ready for c in p.status.container_statuses or [])]
    sources = {(p.metadata.labels or {}).get("eventsource-name") for p in ready}
    sensors = {(p.metadata.labels or {}).get("sensor-name") for p in ready}
    return "capi-rollout" in sources and "capi-rollout" in sensors


def documents(path: Any) -> list[dict[str, Any]]:
    from e2e.backends.base import load_manifests

    return load_manifests([path])


# --- objects the tests change -------------------------------------------------------------------------------


def tcp_bump(scenario: Scenario) -> dict[str, Any]:
    """A Kubernetes version bump of the control plane (what a GitOps commit changes)."""
    return {"spec": {"version": scenario.target_kubernetes_version}}


def md_template_change(scenario: Scenario, deployment: str) -> dict[str, Any]:
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


def new_bare(events: Events, prefix: str) -> Bare:
    return Bare(f"{prefix}-{uuid.uuid4().hex[:6]}", f"c{uuid.uuid4().hex[:6]}").create(events)


def sentinel(events: Events, version: str) -> None:
    """A spec change of both kinds on fresh objects, and their two Workflows awaited: every event the EventSource
    had before it (for any object of those kinds) has reached the Sensor by then (one informer per kind, one
    ordered stream through the EventBus)."""
    bare = new_bare(events, "sentinel")
    bare.bump(events, TCP, version)
    bare.bump(events, MD, version)
    events.delete_workflows(events.workflows(bare.namespace, bare.cluster, 2, "the sentinel's two Workflows"))


def warm_up(events: Events, timeout: float = 180.0) -> None:
    """Until both informers and the Sensor's subscriptions are live, a change is lost without a trace (a pod is
    Running before its informer has listed): change one object of each kind until its Workflow appears."""
    bare = new_bare(events, "warm-up")
    for kind, trigger in ((TCP, "taloscontrolplane"), (MD, "machinedeployment")):
        def started(trigger: str = trigger) -> bool:
            return any(s.trigger == trigger for s in events.watch.for_cluster(bare.namespace, bare.cluster))

        patches = [0]

        def bumped_until_started(kind: tuple[str, str, str] = kind, started: Callable[[], bool] = started,
                                 patches: list[int] = patches) -> bool:
            if started():
                return True
            patches[0] += 1
            bare.bump(events, kind, f"v1.34.{patches[0]}")
            with contextlib.suppress(TimeoutError):  # not yet: the next change
                wait_until(started, timeout=5.0, interval=POLL_SECONDS, what="")
            return started()

        try:
            wait_until(bumped_until_started, timeout=timeout, interval=POLL_SECONDS,
                       what=f"a Workflow for a {kind[2]} change")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}: see {events.results / 'argo-events'}") from None
    events.delete_workflows(events.watch.for_cluster(bare.namespace, bare.cluster))


@contextlib.contextmanager
def events_running(stage: Stage, results: Path) -> Iterator[Events]:
    """Argo Events installed on the stage's backend (node or kind) with the overlay, the WorkflowTemplate's defaults
    the scaled timings, a :class:`WorkflowWatch` running and both informers live; on leaving, the shipped
    template back, the latencies in ``<results>/trigger-latency.json`` and the event machinery's logs saved."""
    backend: Any = stage.backend
    started = time.monotonic()
    backend.prepare_simulation("v1.14")  # the CAPI and Talos CRDs the EventSource watches exist first
    backend.install_argo_events()  # controller, EventBus `default`, then overlay/management/capi-rollout as is
    backend.install([scaled_template()])
    watch = WorkflowWatch(stage.api)
    events = Events(stage, watch, results)
    try:
        wait_until(lambda: sensor_ready(stage.api), timeout=300, interval=POLL_SECONDS,
                   what="the EventSource and Sensor pods ready")
        warm_up(events)
        print(f"[trigger] Argo Events installed and ready in {time.monotonic() - started:.0f}s", flush=True)
        yield events
    finally:
        watch.stop()
        backend.install([TEMPLATE_PATH])
        events.results.mkdir(parents=True, exist_ok=True)
        (events.results / "trigger-latency.json").write_text(json.dumps(events.latencies, indent=2) + "\n")
        save_logs(stage.api, events.results / "argo-events")
