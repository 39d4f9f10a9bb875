"""The simulator as a pod in a cluster: its documents, its readiness, and the handle a scenario drives it by.

Contract: :func:`simulator_documents` are ``sim/deploy``'s manifests for a scenario in one namespace (the
simulator, its objects and one Service per fake Talos node, so workflow pods reach it), with the timeline printed
as JSON lines. A :class:`SimDeployment` (an :class:`e2e.simhandles.RemoteSim`) is one such simulator, reached
through a :class:`~e2e.backends.cluster.ClusterClient`: it waits until the pod is ready with the talosconfig Secret
and one Service per Machine (:func:`simulator_ready`), reads the timeline from the pod's log, triggers the rollout
with ``SIGUSR1`` through ``kubectl exec``, fails fast when its container exits (:func:`container_alive`), probes
the fake Talos API from a pod of its own (:func:`talos_probe_job`), and removes itself (the simulator deletes its
objects on SIGTERM; then its namespace and RBAC go).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from capi_rollout.waiting import wait_until
from capi_rollout.workflow.image import IMAGE as STEP_IMAGE
from e2e.backends.cluster import ClusterClient
from e2e.simhandles import NotYet, RemoteSim
from sim.deploy import NAME as SIM_NAME
from sim.deploy import SIM_IMAGE, manifests
from sim.scenario import Scenario
from sim.scenario_format import load
from sim.talos.exposure import SERVICE_LABEL

SIM_CONTAINER = "simulator"  # sim/deploy's container name
SIM_SELECTOR = f"app.kubernetes.io/name={SIM_NAME}"
POLL_SECONDS = 1.0


def simulator_documents(scenario: Scenario | str, namespace: str, *, image: str = SIM_IMAGE,
                        trigger_after: float = -1.0, allow_real_capi: bool = False) -> list[dict[str, Any]]:
    """``sim/deploy``'s documents for ``scenario`` in ``namespace`` (the scenario's own namespace is replaced:
    the simulator, its objects and its per-node Services all live in one namespace); the timeline is printed as
    JSON lines, for :class:`SimDeployment` to read back. ``allow_real_capi``: the simulator's ``--allow-real-capi``
    (a drill cluster whose real CAPI controllers are confined by ``--watch-filter`` or ``--namespace``)."""
    s = load(scenario) if isinstance(scenario, str) else scenario
    extra = ("--output", "json", *(("--allow-real-capi",) if allow_real_capi else ()))
    return manifests(namespace=namespace, scenario=replace(s, namespace=namespace), image=image,
                     trigger_after=trigger_after, extra_args=extra)


def simulator_ready(*, deployment: Mapping[str, Any] | None, talosconfig: bool, services: int,
                    machines: int) -> tuple[bool, str]:
    """Is the simulator up (its pod ready: the cluster exists) with the talosconfig Secret and one Service per
    Machine? With the reason when not."""
    status = (deployment or {}).get("status") or {}
    if not status.get("readyReplicas"):
        return False, "the simulator pod is not ready yet (its readiness probe waits for the simulated cluster)"
    if not talosconfig:
        return False, "no talosconfig Secret yet"
    if machines == 0 or services != machines:
        return False, f"{services} per-node Services for {machines} Machines"
    return True, f"ready: {machines} Machines, each behind its Service"


def container_alive(pod: Mapping[str, Any], container: str = SIM_CONTAINER) -> tuple[bool, str]:
    """Has ``container`` of ``pod`` (a dict) never exited? With what happened when it did."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") != container:
            continue
        for where in ("state", "lastState"):
            ended = (status.get(where) or {}).get("terminated")
            if ended:
                return False, (f"container {container} exited with code {ended.get('exitCode')} "
                               f"({ended.get('reason') or 'no reason'}); restarts: {status.get('restartCount', 0)}")
        return True, "running"
    return True, f"container {container} not started yet"


PROBE_SCRIPT = """\
import json, pathlib, sys
from capi_rollout.adapters.talos.sync import SyncTalosClient
from capi_rollout.adapters.talos.config import parse_talosconfig
path = sys.argv[1] if len(sys.argv) > 1 else "/etc/talos/talosconfig"
config = parse_talosconfig(pathlib.Path(path).read_text())
with SyncTalosClient(config, timeout=10.0) as talos:
    print(json.dumps({e: talos.probe(e).state.value for e in config.endpoints}))
"""


def talos_probe_job(namespace: str, cluster: str, *, image: str = STEP_IMAGE,
                    name: str = "talos-probe") -> dict[str, Any]:
    """A Job that probes every talosconfig endpoint (the Services' ClusterIPs, port 50000) from its own pod with
    the engine's Talos client, as the workflow's steps do, and prints ``{endpoint: state}`` as JSON."""
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 120, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "probe", "image": image, "imagePullPolicy": "IfNotPresent",
                            "command": ["python", "-c", PROBE_SCRIPT],
                            "volumeMounts": [{"name": "talosconfig", "mountPath": "/etc/talos", "readOnly": True}]}],
            "volumes": [{"name": "talosconfig", "secret": {"secretName": f"{cluster}-talosconfig"}}],
        }}},
    }


class SimDeployment(RemoteSim):
    """One simulator running in a cluster (see :meth:`e2e.backends.existing.ClusterBackend.deploy_simulator`): an
    e2e :class:`~e2e.simhandles.SimHandle` whose timeline is its pod's log (JSON lines) and whose trigger is SIGUSR1
    sent with ``kubectl exec``."""

    def __init__(self, client: ClusterClient, namespace: str, scenario: Scenario) -> None:
        self.client = client
        self.namespace = namespace
        self.scenario = scenario
        self.api_client = client.api
        self._removed = False

    # -- SimHandle (through RemoteSim) ------------------------------------------------------------------------

    def output(self) -> str:
        return self.logs()

    def signal_trigger(self) -> None:
        self.trigger()

    poll_interval = 0.5  # each look is an API call

    def alive(self) -> tuple[bool, str]:
        """Deployed and its container never exited (a simulator that refuses its target exits 1 and would
        otherwise crash-loop until a timeout)."""
        if self._removed:
            return False, "removed"
        pod = self._pod()
        return (True, "no pod yet") if pod is None else container_alive(pod)

    def _pod(self) -> dict[str, Any] | None:
        """The simulator's newest pod that is not being deleted, as a dict."""
        pods = self.client.list("v1", "Pod", self.namespace, labels=SIM_SELECTOR)
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        return max(live, key=lambda p: p["metadata"].get("creationTimestamp", "")) if live else None

    def shutdown(self) -> None:
        self._final = self.timeline()  # the pod's log goes with the pod
        self.remove()

    def wait_settled(self, timeout: float) -> None:
        self.wait_ready(timeout)
        super().wait_settled(timeout)

    def wait_ready(self, timeout: float) -> None:
        from kubernetes.client.exceptions import ApiException

        from sim.objects import api_version

        machines_api = api_version(self.scenario.capi_line)

        def ready() -> bool:
            try:
                dep = self.client.get("apps/v1", "Deployment", SIM_NAME, self.namespace)
                secrets = self.client.list("v1", "Secret", self.namespace,
                                           fields=f"metadata.name={self.scenario.cluster}-talosconfig")
                services = self.client.list("v1", "Service", self.namespace, labels=f"{SERVICE_LABEL}=true")
                machines = self.client.list(machines_api, "Machine", self.namespace)
                ok, why = simulator_ready(deployment=dep, talosconfig=bool(secrets), services=len(services),
                                          machines=len(machines))
            except ApiException as exc:
                ok, why = False, f"API: {exc.status} {exc.reason}"
            if ok:
                return True
            up, died = self.alive()
            if not up:
                raise RuntimeError(f"the simulator in {self.namespace} stopped: {died}\n{self.logs(tail=40)}")
            raise NotYet(why)

        try:  # each look is a few API calls
            wait_until(ready, timeout=timeout, interval=POLL_SECONDS, what=f"the simulator in {self.namespace} ready",
                       retry_on=(NotYet,))
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.logs(tail=40)}") from None

    def trigger(self) -> None:
        """The GitOps change: SIGUSR1 to the simulator (PID 1 of its container)."""
        self.client.kubectl("-n", self.namespace, "exec", f"deploy/{SIM_NAME}", "--", "python", "-c",
                            "import os, signal; os.kill(1, signal.SIGUSR1)", timeout=60)

    def probe_from_a_pod(self, timeout: float = 180.0) -> dict[str, str]:
        """Run :func:`talos_probe_job` in the simulator's namespace; ``{endpoint: probe state}``."""
        job = talos_probe_job(self.namespace, self.scenario.cluster, name=f"talos-probe-{uuid.uuid4().hex[:6]}")
        self.client.apply([job])
        name = job["metadata"]["name"]
        self.client.kubectl("-n", self.namespace, "wait", "--for=condition=Complete", f"job/{name}",
                            f"--timeout={int(timeout)}s", timeout=timeout + 30)
        (pod,) = self.client.list("v1", "Pod", self.namespace, labels=f"job-name={name}")  # backoffLimit 0
        out = self.client.log(self.namespace, pod["metadata"]["name"], container="probe")
        states: dict[str, str] = json.loads(out.strip().splitlines()[-1])
        return states

    def logs(self, tail: int | None = None) -> str:
        """The simulator's output (its timeline, one JSON event per line) from its pod's log."""
        from kubernetes.client.exceptions import ApiException

        try:
            pod = self._pod()
            if pod is None:
                return "# logs unavailable: no simulator pod\n"
            return self.client.log(self.namespace, pod["metadata"]["name"], container=SIM_CONTAINER, tail=tail)
        except ApiException as exc:
            return f"# logs unavailable: {exc.status} {exc.reason}\n"

    def remove(self, timeout: float = 120.0) -> None:
        """Stop the simulator (SIGTERM: it deletes its objects and Services), then its namespace and RBAC."""
        self._removed = True
        self.client.delete(("apps/v1", "Deployment", self.namespace, SIM_NAME))
        self.client.kubectl("-n", self.namespace, "wait", "--for=delete", "pod", "-l", SIM_SELECTOR,
                            f"--timeout={int(timeout)}s", timeout=timeout + 30)
        name = f"{SIM_NAME}-{self.namespace}"
        for ref in (("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", None, name),
                    ("rbac.authorization.k8s.io/v1", "ClusterRole", None, name),
                    ("v1", "Namespace", None, self.namespace)):
            self.client.delete(ref)
