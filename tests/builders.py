"""Object builders for tests: CAPI objects as the API server returns them, in either shape.

Only the fields the rollout reads are filled in; the simulator (``sim/``) builds schema-complete objects.
"""

from __future__ import annotations

from typing import Any

NS = "default"
CLUSTER = "homelab"


def meta(name: str, *, labels: dict[str, str] | None = None, generation: int = 1, created: str = "2026-01-01T00:00:00Z",
         deleting: str | None = None, annotations: dict[str, str] | None = None,
         owner: tuple[str, str] | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {
        "name": name,
        "namespace": NS,
        "uid": f"uid-{name}",
        "generation": generation,
        "creationTimestamp": created,
        "labels": {"cluster.x-k8s.io/cluster-name": CLUSTER, **(labels or {})},
    }
    if deleting:
        md["deletionTimestamp"] = deleting
    if annotations:
        md["annotations"] = annotations
    if owner:
        md["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True, "apiVersion": "x/v1",
                                  "uid": f"uid-{owner[1]}"}]
    return md


def cluster(*, v: str = "v1beta2", paused: bool = False, cp_name: str = "homelab-cp") -> dict[str, Any]:
    ref: dict[str, Any] = {"kind": "TalosControlPlane", "name": cp_name}
    ref.update({"apiGroup": "controlplane.cluster.x-k8s.io"} if v == "v1beta2" else
               {"apiVersion": "controlplane.cluster.x-k8s.io/v1alpha3", "namespace": NS})
    return {"apiVersion": f"cluster.x-k8s.io/{v}", "kind": "Cluster", "metadata": meta(CLUSTER),
            "spec": {"paused": paused, "controlPlaneRef": ref}}


def tcp(name: str = "homelab-cp", *, replicas: int = 3, max_surge: Any = 0, strategy_type: str | None = "RollingUpdate",
        generation: int = 1, observed: int = 1, ready: int = 3, up_to_date: bool = True,
        annotations: dict[str, str] | None = None) -> dict[str, Any]:
    strategy: dict[str, Any] = {}
    if strategy_type:
        strategy["type"] = strategy_type
    if max_surge is not None:
        strategy["rollingUpdate"] = {"maxSurge": max_surge}
    cond = ({"type": "MachinesSpecUpToDate", "status": "True"} if up_to_date else
            {"type": "MachinesSpecUpToDate", "status": "False", "reason": "RollingUpdateInProgress",
             "severity": "Warning"})
    return {
        "apiVersion": "controlplane.cluster.x-k8s.io/v1alpha3", "kind": "TalosControlPlane",
        "metadata": meta(name, generation=generation, annotations=annotations),
        "spec": {"replicas": replicas, "version": "v1.34.1", "rolloutStrategy": strategy},
        "status": {"replicas": replicas, "readyReplicas": ready, "unavailableReplicas": replicas - ready,
                   "observedGeneration": observed, "conditions": [cond]},
    }


def md(name: str = "homelab-workers", *, v: str = "v1beta2", replicas: int = 2, max_surge: Any = 0,
       max_unavailable: Any = 1, strategy_type: str = "RollingUpdate", generation: int = 1, observed: int = 1,
       up_to_date: int | None = None, available: int | None = None, status_replicas: int | None = None,
       paused: bool = False) -> dict[str, Any]:
    rolling: dict[str, Any] = {}
    if max_surge is not None:
        rolling["maxSurge"] = max_surge
    if max_unavailable is not None:
        rolling["maxUnavailable"] = max_unavailable
    strategy = {"type": strategy_type, "rollingUpdate": rolling}
    up = replicas if up_to_date is None else up_to_date
    status: dict[str, Any] = {
        "replicas": replicas if status_replicas is None else status_replicas,
        "readyReplicas": replicas if available is None else available,
        "availableReplicas": replicas if available is None else available,
        "observedGeneration": observed,
    }
    spec: dict[str, Any] = {"replicas": replicas, "clusterName": CLUSTER, "paused": paused}
    if v == "v1beta1":
        spec["strategy"] = strategy
        status["updatedReplicas"] = up
    else:
        spec["rollout"] = {"strategy": strategy}
        status["upToDateReplicas"] = up
    return {"apiVersion": f"cluster.x-k8s.io/{v}", "kind": "MachineDeployment",
            "metadata": meta(name, generation=generation), "spec": spec, "status": status}


def machine(name: str, *, v: str = "v1beta2", cp: bool = False, deployment: str | None = "homelab-workers",
            phase: str = "Running", node: bool = True, ready: bool = True, address: str | None = "10.0.0.1",
            created: str = "2026-01-01T00:00:00Z", deleting: str | None = None,
            annotations: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {"cluster.x-k8s.io/control-plane": ""} if cp else {
        "cluster.x-k8s.io/deployment-name": deployment or "", "cluster.x-k8s.io/set-name": f"{deployment}-abc"}
    owner = ("TalosControlPlane", "homelab-cp") if cp else ("MachineSet", f"{deployment}-abc")
    status: dict[str, Any] = {"phase": phase}
    cond: dict[str, Any] = {"type": "Ready", "status": "True" if ready else "False"}
    if not ready:
        cond["reason"] = "NodeNotReady"
    if v == "v1beta1":
        cond["severity"] = "" if ready else "Warning"
    status["conditions"] = [cond]
    if node:
        status["nodeRef"] = {"name": f"node-{name}"} if v == "v1beta2" else {
            "kind": "Node", "name": f"node-{name}", "apiVersion": "v1", "uid": "x"}
        if address:
            status["addresses"] = [{"type": "InternalIP", "address": address},
                                   {"type": "Hostname", "address": f"node-{name}"}]
    return {"apiVersion": f"cluster.x-k8s.io/{v}", "kind": "Machine",
            "metadata": meta(name, labels=labels, created=created, deleting=deleting, annotations=annotations,
                             owner=owner),
            "spec": {"clusterName": CLUSTER}, "status": status}
