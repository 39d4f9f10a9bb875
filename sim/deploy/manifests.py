"""The manifests that run the simulator inside a cluster (kind, or a drill namespace): pure builders, no I/O.

Contract: :func:`manifests` returns the documents, in apply order, for one simulator in its own namespace:

* the Namespace, labelled ``capi-rollout.dev/simulator=true`` (the simulator's safety rule 1 accepts it);
* a ServiceAccount, a namespaced Role and a ClusterRole with exactly what ``python -m sim run`` does (each rule
  says why), bound to it;
* a ConfigMap with the scenario (``sim.scenario_format.to_dict``), so any scenario — bundled or built by a test — runs;
* a one-replica Deployment (``Recreate``: two simulators must never write the same objects) of the sim image
  running ``python -m sim run --in-cluster --endpoints service``, with the pod's IP and namespace from the
  downward API, the pod labels that the per-node Services select (:data:`POD_LABELS`), and a readiness probe
  on the file the simulator writes once its cluster exists.

The rendered default (``sim/deploy/simulator.yaml``) is regenerated on purpose with ``python -m sim.deploy``
and checked for drift by the tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from capi_rollout import __version__
from sim.objects import TCP_GROUP
from sim.safety import MARKER_LABEL
from sim.scenario import Scenario
from sim.scenario_format import load, to_dict


class _Dumper(yaml.SafeDumper):
    """PyYAML's plain safe dumper, immune to global representers (Hera registers one for ``str`` on import)."""


_Dumper.add_representer(str, yaml.representer.SafeRepresenter.represent_str)


def _dump(data: Any, **kwargs: Any) -> str:
    return str(yaml.dump(data, Dumper=_Dumper, **kwargs))

NAME = "capi-rollout-sim"
SIM_IMAGE_REPOSITORY = "ghcr.io/capi-rollout/capi-rollout-sim"
SIM_IMAGE = f"{SIM_IMAGE_REPOSITORY}:{__version__}"
POD_LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "simulator"}
SCENARIO_DIR = "/etc/capi-rollout-sim"
SCENARIO_FILE = "scenario.yaml"
READY_FILE = "/tmp/sim-ready"
DEFAULT_NAMESPACE = "sim-demo"
DEFAULT_SCENARIO = "happy"
CAPI_GROUP = "cluster.x-k8s.io"
CAPI_PLURALS = ("clusters", "machines", "machinesets", "machinedeployments")


def sim_image(version: str = __version__, repository: str = SIM_IMAGE_REPOSITORY) -> str:
    """The simulator image, tagged with the package version like the step image."""
    return f"{repository}:{version}"


def labels_arg(labels: Mapping[str, str]) -> str:
    """``--pod-labels`` value: ``k=v,k2=v2`` in a stable order."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _rule(groups: Sequence[str], resources: Sequence[str], verbs: Sequence[str],
          names: Sequence[str] = ()) -> dict[str, Any]:
    rule: dict[str, Any] = {"apiGroups": list(groups), "resources": list(resources), "verbs": list(verbs)}
    if names:
        rule["resourceNames"] = list(names)
    return rule


def role_rules(cluster: str) -> list[tuple[str, dict[str, Any]]]:
    """(why, rule) for the namespaced Role: the simulator's own objects, nothing else."""
    objects = [*CAPI_PLURALS]
    return [
        ("the fake CAPI controllers create, list/watch, patch and delete the Cluster, Machines, MachineSets and "
         "MachineDeployments they own", _rule([CAPI_GROUP], objects, ["list", "watch", "create", "patch", "delete"])),
        ("they write those objects' status as the CAPI controllers do",
         _rule([CAPI_GROUP], [f"{p}/status" for p in objects], ["patch"])),
        ("safety rule 2: refuse a namespace with a MachineHealthCheck or other CAPI object it did not create",
         _rule([CAPI_GROUP], ["machinehealthchecks"], ["list"])),
        ("CACPPT's part: the TalosControlPlane and its status",
         _rule([TCP_GROUP], ["taloscontrolplanes"], ["list", "watch", "create", "patch", "delete"])),
        ("", _rule([TCP_GROUP], ["taloscontrolplanes/status"], ["patch"])),
        ("the bootstrap provider's part: create the <cluster>-talosconfig Secret (create cannot be narrowed by "
         "name)", _rule([""], ["secrets"], ["create"])),
        ("and delete only that Secret on cleanup", _rule([""], ["secrets"], ["delete"], [f"{cluster}-talosconfig"])),
        ("one Service per simulated node (Talos port 50000 -> that node's port on this pod), replaced and "
         "deleted on cleanup", _rule([""], ["services"], ["list", "create", "delete"])),
    ]


def cluster_rules(namespace: str) -> list[tuple[str, dict[str, Any]]]:
    """(why, rule) for the ClusterRole: the two cluster-wide reads of the safety checks."""
    return [
        ("safety rule 1: read its own namespace's marker label",
         _rule([""], ["namespaces"], ["get"], [namespace])),
        ("safety rule 3: refuse to run beside real CAPI/CACPPT controllers (Deployments, all namespaces)",
         _rule(["apps"], ["deployments"], ["list"])),
    ]


def manifests(*, namespace: str = DEFAULT_NAMESPACE, scenario: Scenario | str = DEFAULT_SCENARIO,
              image: str = SIM_IMAGE, trigger_after: float = -1.0, time_scale: float | None = None,
              extra_args: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every document to run one simulator in ``namespace`` (see the module docstring).

    ``trigger_after`` is passed to ``python -m sim run`` (negative: only on SIGUSR1, e.g.
    ``kubectl exec deploy/capi-rollout-sim -- kill -USR1 1``). The scenario's namespace is overridden by the
    pod's own (``--namespace $(POD_NAMESPACE)``).
    """
    s = load(scenario) if isinstance(scenario, str) else scenario
    meta = {"namespace": namespace, "labels": dict(POD_LABELS)}
    cluster_role = f"{NAME}-{namespace}"
    args = ["run", "--in-cluster", "--scenario", f"{SCENARIO_DIR}/{SCENARIO_FILE}", "--namespace",
            "$(POD_NAMESPACE)", "--endpoints", "service", "--pod-ip", "$(POD_IP)", "--pod-labels",
            labels_arg(POD_LABELS), "--trigger-after", f"{trigger_after:g}", "--ready-file", READY_FILE]
    if time_scale is not None:
        args += ["--time-scale", f"{time_scale:g}"]
    args += list(extra_args)
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": namespace, "labels": {MARKER_LABEL: "true"}}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, **meta}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": NAME, **meta},
         "rules": [rule for _, rule in role_rules(s.cluster)]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": NAME, **meta},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": cluster_role, "labels": dict(POD_LABELS)},
         "rules": [rule for _, rule in cluster_rules(namespace)]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": cluster_role, "labels": dict(POD_LABELS)},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{NAME}-scenario", **meta},
         "data": {SCENARIO_FILE: _dump(to_dict(s), sort_keys=False)}},
        deployment(namespace=namespace, image=image, args=args),
    ]


def deployment(*, namespace: str, image: str, args: Sequence[str]) -> dict[str, Any]:
    """The simulator's Deployment (one replica, Recreate, hardened pod, POD_IP/POD_NAMESPACE from the pod)."""
    container = {
        "name": "simulator",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": list(args),
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
        "readinessProbe": {"exec": {"command": ["cat", READY_FILE]}, "periodSeconds": 2, "failureThreshold": 1},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "scenario", "mountPath": SCENARIO_DIR, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": namespace, "labels": dict(POD_LABELS)},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": dict(POD_LABELS)},
            "template": {
                "metadata": {"labels": dict(POD_LABELS)},
                "spec": {
                    "serviceAccountName": NAME,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [{"name": "scenario", "configMap": {"name": f"{NAME}-scenario"}},
                                {"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def render(docs: Sequence[Mapping[str, Any]], *, namespace: str, cluster: str) -> str:
    """Multi-document YAML with a header and each RBAC rule's reason as a comment above it."""
    reasons = {_dump(rule, sort_keys=True): why
               for why, rule in [*role_rules(cluster), *cluster_rules(namespace)] if why}
    out = ["# Generated by `python -m sim.deploy` from sim/deploy/manifests.py; do not edit by hand.",
           "# The simulator in a cluster: apply server-side, e.g. `kubectl apply --server-side -f simulator.yaml`."]
    for doc in docs:
        out.append("---")
        text = _dump(dict(doc), sort_keys=False, width=120)
        if doc.get("kind") in ("Role", "ClusterRole"):
            text = _comment_rules(text, doc, reasons)
        out.append(text.rstrip("\n"))
    return "\n".join(out) + "\n"


def _comment_rules(text: str, doc: Mapping[str, Any], reasons: Mapping[str, str]) -> str:
    head, _, _ = text.partition("rules:\n")
    lines = [head + "rules:"]
    for rule in doc["rules"]:
        why = reasons.get(_dump(rule, sort_keys=True))
        if why:
            lines.append(f"# {why}")
        body = _dump([rule], sort_keys=False, width=120).rstrip("\n")
        lines.append(body)
    return "\n".join(lines) + "\n"
