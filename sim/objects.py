"""Builders of the CAPI objects a Talos cluster has, in the exact shape of the selected CAPI line.

Contract: pure functions returning plain dicts ready for the Kubernetes API; no I/O, no clock (times
come in as RFC 3339 strings). ``line`` is ``"v1.14"`` (``cluster.x-k8s.io/v1beta2``: metav1 conditions,
``nodeRef {name}``, ``spec.rollout.strategy``, ``upToDateReplicas``) or ``"v1.10"``
(``cluster.x-k8s.io/v1beta1``: conditions with severity, full ``nodeRef``, ``spec.strategy``,
``updatedReplicas``/``unavailableReplicas``). TalosControlPlane is ``controlplane.cluster.x-k8s.io/v1alpha3``
on both lines. Every object carries the label ``capi-rollout.dev/simulated=true`` so the simulator only
ever touches what it created.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

CAPI_GROUP = "cluster.x-k8s.io"
TCP_GROUP = "controlplane.cluster.x-k8s.io"
TCP_VERSION = "v1alpha3"
BOOTSTRAP_GROUP = "bootstrap.cluster.x-k8s.io"
BOOTSTRAP_VERSION = "v1alpha3"
INFRA_GROUP = "infrastructure.sim.capi-rollout.dev"
INFRA_VERSION = "v1alpha1"

# CAPI's cluster-name label, the simulator's own copy (not capi_rollout.domain.model.CLUSTER_NAME_LABEL): the sim
# shares no CAPI constant with the product, so a wrong label on one side fails the other's tests.
CAPI_CLUSTER_LABEL = "cluster.x-k8s.io/cluster-name"
CONTROL_PLANE_LABEL = "cluster.x-k8s.io/control-plane"
DEPLOYMENT_NAME_LABEL = "cluster.x-k8s.io/deployment-name"
SET_NAME_LABEL = "cluster.x-k8s.io/set-name"
TEMPLATE_HASH_LABEL = "machine-template-hash"
SIMULATED_LABEL = "capi-rollout.dev/simulated"
SPEC_HASH_ANNOTATION = "sim.capi-rollout.dev/spec-hash"
MACHINE_FINALIZER = "machine.cluster.x-k8s.io"
SIM_FINALIZER = "sim.capi-rollout.dev/drain"


def capi_version(line: str) -> str:
    """The cluster.x-k8s.io API version the simulator writes for a CAPI line."""
    return {"v1.14": "v1beta2", "v1.10": "v1beta1"}[line]


def api_version(line: str) -> str:
    return f"{CAPI_GROUP}/{capi_version(line)}"


def spec_hash(spec: Any) -> str:
    """A short stable hash of a spec fragment (what decides 'up to date')."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]


def _meta(name: str, namespace: str, cluster: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": {CAPI_CLUSTER_LABEL: cluster, SIMULATED_LABEL: "true", **(labels or {})},
    }


def owner_ref(obj: Mapping[str, Any], *, controller: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def _ref(line: str, group: str, version: str, kind: str, name: str, namespace: str) -> dict[str, Any]:
    """A typed reference: v1beta2 ``{apiGroup, kind, name}``; v1beta1 a full ObjectReference."""
    if capi_version(line) == "v1beta2":
        return {"apiGroup": group, "kind": kind, "name": name}
    return {"apiVersion": f"{group}/{version}", "kind": kind, "name": name, "namespace": namespace}


def cluster(line: str, name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": api_version(line),
        "kind": "Cluster",
        "metadata": _meta(name, namespace, name),
        "spec": {
            "paused": False,
            "controlPlaneRef": _ref(line, TCP_GROUP, TCP_VERSION, "TalosControlPlane", f"{name}-cp", namespace),
            "infrastructureRef": _ref(line, INFRA_GROUP, INFRA_VERSION, "SimCluster", name, namespace),
        },
    }


def infra_template_name(cluster_name: str, role: str, revision: int) -> str:
    return f"{cluster_name}-{role}-v{revision}"


def talos_control_plane(
    *, name: str, namespace: str, cluster_name: str, replicas: int, version: str, max_surge: int,
    talos_version: str, template_revision: int = 1,
) -> dict[str, Any]:
    return {
        "apiVersion": f"{TCP_GROUP}/{TCP_VERSION}",
        "kind": "TalosControlPlane",
        "metadata": _meta(name, namespace, cluster_name),
        "spec": {
            "replicas": replicas,
            "version": version,
            "infrastructureTemplate": {
                "apiVersion": f"{INFRA_GROUP}/{INFRA_VERSION}",
                "kind": "SimMachineTemplate",
                "name": infra_template_name(cluster_name, "cp", template_revision),
                "namespace": namespace,
            },
            "controlPlaneConfig": {
                "controlplane": {"generateType": "controlplane", "talosVersion": talos_version},
            },
            "rolloutStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": max_surge}},
        },
    }


def tcp_spec_hash(tcp: Mapping[str, Any]) -> str:
    spec = tcp["spec"]
    return spec_hash([spec.get("version"), spec.get("infrastructureTemplate", {}).get("name"),
                      spec.get("controlPlaneConfig")])


def machine_template(
    line: str, *, cluster_name: str, namespace: str, version: str, infra_template: str, bootstrap_template: str
) -> dict[str, Any]:
    """``spec.template`` of a MachineDeployment / MachineSet."""
    return {
        "metadata": {"labels": {CAPI_CLUSTER_LABEL: cluster_name}},
        "spec": {
            "clusterName": cluster_name,
            "version": version,
            "bootstrap": {
                "configRef": _ref(
                    line, BOOTSTRAP_GROUP, BOOTSTRAP_VERSION, "TalosConfigTemplate", bootstrap_template, namespace
                )
            },
            "infrastructureRef": _ref(
                line, INFRA_GROUP, INFRA_VERSION, "SimMachineTemplate", infra_template, namespace
            ),
        },
    }


def machine_deployment(
    line: str, *, name: str, namespace: str, cluster_name: str, replicas: int, max_surge: int | str,
    max_unavailable: int | str, strategy: str, template: Mapping[str, Any],
) -> dict[str, Any]:
    strat: dict[str, Any] = {"type": strategy}
    if strategy == "RollingUpdate":
        strat["rollingUpdate"] = {"maxSurge": max_surge, "maxUnavailable": max_unavailable}
    spec: dict[str, Any] = {
        "clusterName": cluster_name,
        "replicas": replicas,
        "selector": {"matchLabels": {CAPI_CLUSTER_LABEL: cluster_name, DEPLOYMENT_NAME_LABEL: name}},
        "template": _with_labels(template, {DEPLOYMENT_NAME_LABEL: name}),
    }
    if capi_version(line) == "v1beta2":
        spec["rollout"] = {"strategy": strat}
    else:
        spec["strategy"] = strat
    return {
        "apiVersion": api_version(line),
        "kind": "MachineDeployment",
        "metadata": _meta(name, namespace, cluster_name),
        "spec": spec,
    }


def md_strategy(md: Mapping[str, Any]) -> dict[str, Any]:
    """The strategy block of a MachineDeployment of either API version (defaults as upstream)."""
    spec = md.get("spec", {})
    strat = (spec.get("rollout") or {}).get("strategy") or spec.get("strategy") or {}
    rolling = strat.get("rollingUpdate") or {}
    return {
        "type": strat.get("type", "RollingUpdate"),
        "maxSurge": rolling.get("maxSurge", 1),
        "maxUnavailable": rolling.get("maxUnavailable", 0),
    }


def template_hash(template: Mapping[str, Any]) -> str:
    spec = template.get("spec", {})
    return spec_hash([spec.get("version"), spec.get("infrastructureRef"), spec.get("bootstrap")])


def _with_labels(template: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(template))
    out.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
    return out


def machine_set(
    line: str, *, name: str, namespace: str, md: Mapping[str, Any], replicas: int, hash_: str
) -> dict[str, Any]:
    md_name = md["metadata"]["name"]
    cluster_name = md["spec"]["clusterName"]
    labels = {DEPLOYMENT_NAME_LABEL: md_name, TEMPLATE_HASH_LABEL: hash_}
    template = _with_labels(md["spec"]["template"], {**labels, SET_NAME_LABEL: name})
    obj = {
        "apiVersion": api_version(line),
        "kind": "MachineSet",
        "metadata": {**_meta(name, namespace, cluster_name, labels), "ownerReferences": [owner_ref(md)]},
        "spec": {
            "clusterName": cluster_name,
            "replicas": replicas,
            "selector": {"matchLabels": {CAPI_CLUSTER_LABEL: cluster_name, **labels}},
            "template": template,
        },
    }
    return obj


def machine(
    line: str, *, name: str, namespace: str, cluster_name: str, owner: Mapping[str, Any], version: str,
    infra_template: str, labels: Mapping[str, str], annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta = _meta(name, namespace, cluster_name, labels)
    meta["ownerReferences"] = [owner_ref(owner)]
    meta["finalizers"] = [MACHINE_FINALIZER, SIM_FINALIZER]
    if annotations:
        meta["annotations"] = dict(annotations)
    return {
        "apiVersion": api_version(line),
        "kind": "Machine",
        "metadata": meta,
        "spec": {
            "clusterName": cluster_name,
            "version": version,
            "bootstrap": {"dataSecretName": f"{name}-bootstrap-data"},
            "infrastructureRef": _ref(line, INFRA_GROUP, INFRA_VERSION, "SimMachine", name, namespace),
            "providerID": f"sim://{cluster_name}/{name}",
        },
    }


# ------------------------------------------------------------------------------------------- status


def condition(
    line: str, type_: str, ok: bool, reason: str, message: str, now: str, *, generation: int = 0,
    severity: str = "Warning",
) -> dict[str, Any]:
    """One condition in the style of ``line``: v1beta1 carries severity (only when False), v1beta2 is metav1."""
    if capi_version(line) == "v1beta2":
        return {
            "type": type_, "status": "True" if ok else "False", "reason": reason, "message": message,
            "lastTransitionTime": now, "observedGeneration": generation,
        }
    cond = {"type": type_, "status": "True" if ok else "False", "lastTransitionTime": now}
    if not ok:
        cond |= {"severity": severity, "reason": reason, "message": message}
    elif reason:
        cond["reason"] = reason
    return cond


def v1beta1_condition(
    type_: str, ok: bool, reason: str, message: str, now: str, severity: str = "Warning"
) -> dict[str, Any]:
    return condition("v1.10", type_, ok, reason, message, now, severity=severity)


def keep_transition_times(old: Sequence[Mapping[str, Any]] | None, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep ``lastTransitionTime`` of conditions whose status did not change (so writes are idempotent)."""
    before = {c.get("type"): c for c in old or []}
    for c in new:
        prev = before.get(c["type"])
        if prev is not None and prev.get("status") == c["status"] and prev.get("lastTransitionTime"):
            c["lastTransitionTime"] = prev["lastTransitionTime"]
    return new


def machine_status(
    line: str, *, phase: str, address: str | None, hostname: str, node_ref: bool, ready: bool, reason: str,
    now: str, generation: int = 1, deleting: bool = False, node_uid: str = "",
) -> dict[str, Any]:
    infra = phase not in ("Pending",)
    status: dict[str, Any] = {"phase": phase}
    if address is not None:
        status["addresses"] = [
            {"type": "InternalIP", "address": address},
            {"type": "Hostname", "address": hostname},
        ]
    healthy_reason = "NodeReady" if ready else ("NodeNotReady" if node_ref else "NodeProvisioning")
    if capi_version(line) == "v1beta2":
        if node_ref:
            status["nodeRef"] = {"name": hostname}
        status["initialization"] = {"infrastructureProvisioned": infra, "bootstrapDataSecretCreated": True}
        conds = [
            condition(line, "Ready", ready and not deleting, "Ready" if ready else "NotReady", reason, now,
                      generation=generation),
            condition(line, "NodeReady", ready, healthy_reason, reason, now, generation=generation),
            condition(line, "NodeHealthy", ready, healthy_reason, reason, now, generation=generation),
            condition(line, "InfrastructureReady", infra, "Ready" if infra else "NotReady", reason, now,
                      generation=generation),
            condition(line, "BootstrapConfigReady", True, "Ready", "", now, generation=generation),
        ]
        if deleting:
            conds.append(condition(line, "Deleting", True, "DrainingNode", reason, now, generation=generation))
        status["conditions"] = conds
        status["deprecated"] = {"v1beta1": {"conditions": [
            v1beta1_condition("Ready", ready, healthy_reason, reason, now),
            v1beta1_condition("NodeHealthy", ready, healthy_reason, reason, now),
        ]}}
        return status
    if node_ref:
        status["nodeRef"] = {"apiVersion": "v1", "kind": "Node", "name": hostname, "uid": node_uid or hostname}
    status["bootstrapReady"] = True
    status["infrastructureReady"] = infra
    status["conditions"] = [
        v1beta1_condition("Ready", ready, healthy_reason, reason, now),
        v1beta1_condition("BootstrapReady", True, "", "", now),
        v1beta1_condition("InfrastructureReady", infra, "WaitingForInfrastructure", reason, now, "Info"),
        v1beta1_condition("NodeHealthy", ready, healthy_reason, reason, now),
    ]
    status["v1beta2"] = {"conditions": [
        condition("v1.14", "Ready", ready, "Ready" if ready else "NotReady", reason, now, generation=generation),
        condition("v1.14", "NodeHealthy", ready, healthy_reason, reason, now, generation=generation),
    ]}
    return status


def tcp_status(
    *, replicas: int, ready_replicas: int, unavailable: int, up_to_date: bool, generation: int, version: str,
    selector: str, now: str, initialized: bool = True,
) -> dict[str, Any]:
    """TalosControlPlane status (CAPI v1beta1-style conditions, as CACPPT writes them)."""
    rolling = v1beta1_condition(
        "MachinesSpecUpToDate", up_to_date, "RollingUpdateInProgress",
        "Rolling machines to the new spec", now,
    )
    ready = ready_replicas > 0
    return {
        "replicas": replicas,
        "readyReplicas": ready_replicas,
        "unavailableReplicas": unavailable,
        "ready": ready,
        "initialized": initialized,
        "bootstrapped": True,
        "observedGeneration": generation,
        "version": version,
        "selector": selector,
        "conditions": [
            v1beta1_condition("Ready", ready, "NoReadyMachines", "no control plane machine is ready", now),
            v1beta1_condition("Available", ready, "WaitingForEtcd", "waiting for etcd", now),
            rolling,
            v1beta1_condition("MachinesReady", unavailable == 0, "NodeNotReady", "a machine is not ready", now),
        ],
    }


def md_status(
    line: str, *, replicas: int, up_to_date: int, ready: int, available: int, desired: int, generation: int,
    selector: str, now: str, rolling: bool,
) -> dict[str, Any]:
    unavailable = max(0, desired - available)
    phase = "ScalingUp" if replicas < desired else ("ScalingDown" if replicas > desired else "Running")
    if capi_version(line) == "v1beta2":
        conds = [
            condition(line, "Available", available >= desired, "Available" if available >= desired else
                      "NotAvailable", f"{available} of {desired} available", now, generation=generation),
            condition(line, "MachinesUpToDate", up_to_date >= desired, "UpToDate" if up_to_date >= desired else
                      "NotUpToDate", f"{up_to_date} of {desired} up to date", now, generation=generation),
            condition(line, "RollingOut", rolling, "RollingOut" if rolling else "NotRollingOut",
                      "rolling out" if rolling else "", now, generation=generation),
            condition(line, "MachinesReady", ready >= replicas, "Ready" if ready >= replicas else "NotReady",
                      f"{ready} of {replicas} ready", now, generation=generation),
        ]
        return {
            "replicas": replicas, "readyReplicas": ready, "availableReplicas": available,
            "upToDateReplicas": up_to_date, "observedGeneration": generation, "selector": selector,
            "phase": phase, "conditions": conds,
            "deprecated": {"v1beta1": {
                "updatedReplicas": up_to_date, "readyReplicas": ready, "availableReplicas": available,
                "unavailableReplicas": unavailable,
            }},
        }
    return {
        "replicas": replicas, "updatedReplicas": up_to_date, "readyReplicas": ready,
        "availableReplicas": available, "unavailableReplicas": unavailable, "observedGeneration": generation,
        "selector": selector, "phase": phase,
        "conditions": [
            v1beta1_condition("Ready", available >= desired, "WaitingForAvailableMachines", "", now),
            v1beta1_condition("Available", available >= desired, "WaitingForAvailableMachines", "", now),
        ],
        "v1beta2": {"upToDateReplicas": up_to_date, "readyReplicas": ready, "availableReplicas": available},
    }


def ms_status(
    line: str, *, replicas: int, ready: int, available: int, up_to_date: int, generation: int, selector: str
) -> dict[str, Any]:
    if capi_version(line) == "v1beta2":
        return {
            "replicas": replicas, "readyReplicas": ready, "availableReplicas": available,
            "upToDateReplicas": up_to_date, "observedGeneration": generation, "selector": selector,
        }
    return {
        "replicas": replicas, "fullyLabeledReplicas": replicas, "readyReplicas": ready,
        "availableReplicas": available, "observedGeneration": generation, "selector": selector,
    }


def cluster_status(line: str, now: str) -> dict[str, Any]:
    if capi_version(line) == "v1beta2":
        return {
            "phase": "Provisioned",
            "initialization": {"infrastructureProvisioned": True, "controlPlaneInitialized": True},
            "conditions": [condition(line, "Available", True, "Available", "", now)],
        }
    return {
        "phase": "Provisioned", "infrastructureReady": True, "controlPlaneReady": True,
        "conditions": [v1beta1_condition("Ready", True, "", "", now)],
    }


def selector_string(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
